"""Quiet, helpful output: the library leaves the root logger alone, says each warning once, and set_verbosity
sets the package's, transformers' and datasets' levels together."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import datasets
import pytest
import transformers
from utils import tiny_bert_config, tiny_suite, tiny_tokenizer

import hf_taskgroup
from hf_taskgroup.log import progress_bar, quiet_hf_loading, set_verbosity

TESTS = Path(__file__).parent


def test_importing_and_training_add_no_root_logger_handlers():
    # a fresh interpreter: pytest itself installs handlers on the root logger
    script = textwrap.dedent(
        """
        import logging, sys
        sys.path.insert(0, %r)
        root = logging.getLogger()
        before = (list(root.handlers), root.level)
        import hf_taskgroup, hf_taskgroup.pipeline, hf_taskgroup.pvi, hf_taskgroup.grouping, hf_taskgroup.report
        from utils import tiny_model, tiny_suite, tiny_tokenizer
        from hf_taskgroup import MultiTaskTrainer, MultiTaskTrainingArguments
        suite = tiny_suite(("classification",))
        data = suite.tokenize(tiny_tokenizer(), max_length=16)["sent"]
        trainer = MultiTaskTrainer(model=tiny_model(suite), processing_class=tiny_tokenizer(),
            args=MultiTaskTrainingArguments(output_dir=%r, num_train_epochs=1, report_to="none",
                                            save_strategy="no", use_cpu=True),
            train_dataset={"sent": data["train"]}, eval_dataset={"sent": data["validation"]})
        trainer.train()
        trainer.evaluate()
        assert (list(root.handlers), root.level) == before, (root.handlers, root.level)
        print("root untouched")
        """
    )
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", script % (str(TESTS), out)], capture_output=True, text=True,
                              timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "root untouched" in done.stdout


def test_no_library_module_calls_basic_config():
    package = TESTS.parent / "hf_taskgroup"
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if "basicConfig(" in p.read_text() and p.name != "cli.py"]
    assert offenders == []


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def hf_records():
    """The warnings transformers, datasets and the package log (transformers and datasets at their default
    WARNING level during the test; both have their own handlers and do not propagate to the root logger)."""
    old = transformers.logging.get_verbosity(), datasets.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    datasets.logging.set_verbosity_warning()
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("transformers", "datasets", "hf_taskgroup")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.messages
    for lg in loggers:
        lg.removeHandler(handler)
    transformers.logging.set_verbosity(old[0])
    datasets.logging.set_verbosity(old[1])


def _encoder_dir(tmp_path: Path) -> Path:
    """A tiny BERT saved with its pooler (as BERT / sentence-transformers checkpoints are), plus a tokenizer."""
    path = tmp_path / "encoder"
    transformers.BertModel(tiny_bert_config()).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_quiet_hf_loading_drops_only_the_load_report(tmp_path, capfd, hf_records):
    path = _encoder_dir(tmp_path)
    with quiet_hf_loading():
        transformers.BertModel.from_pretrained(path, add_pooling_layer=False)
        logging.getLogger("transformers.modeling_utils").warning("another warning")
    assert not any("LOAD REPORT" in m for m in hf_records)
    assert "Loading weights" not in capfd.readouterr().err
    assert "transformers.modeling_utils: another warning" in hf_records
    transformers.BertModel.from_pretrained(path, add_pooling_layer=False)  # outside: transformers reports as usual
    assert any("LOAD REPORT" in m for m in hf_records)


def test_tiny_pipeline_run_says_each_warning_at_most_once(tmp_path, hf_records, recwarn):
    from hf_taskgroup.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(output_dir=str(tmp_path / "run"), model=str(_encoder_dir(tmp_path)),
                            methods=["all_in_one"], epochs=1, pvi_epochs=1, pvi_null="analytic", batch_size=8,
                            trunk_hidden_sizes=[8], max_length=32)
    pipe = Pipeline(config, suite=tiny_suite(("classification", "regression")), tokenizer=tiny_tokenizer(),
                    progress=False)
    pipe.run(stop_after="train")  # PVI models and every group model load the encoder from disk
    # tokenizing with more workers than rows: datasets would warn "num_proc must be <= ..." per split
    pipe.suite.tokenize(tiny_tokenizer(), max_length=32, num_proc=64)
    assert not [m for m in hf_records if "LOAD REPORT" in m or "num_proc" in m]
    said = [re.sub(r"\d+(\.\d+)?", "N", m) for m in hf_records] + [str(w.message) for w in recwarn]
    assert {m: n for m, n in Counter(said).items() if n > 1} == {}


def test_set_verbosity_sets_package_and_hf_levels_together():
    old = (logging.getLogger("hf_taskgroup").level, transformers.logging.get_verbosity(),
           datasets.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled(),
           datasets.is_progress_bar_enabled())
    root_handlers = list(logging.getLogger().handlers)
    try:
        set_verbosity("warning")
        assert logging.getLogger("hf_taskgroup").level == logging.WARNING
        assert transformers.logging.get_verbosity() == logging.ERROR == datasets.logging.get_verbosity()
        assert not transformers.utils.logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        set_verbosity(logging.DEBUG)
        assert logging.getLogger("hf_taskgroup.pipeline").getEffectiveLevel() == logging.DEBUG
        assert transformers.logging.get_verbosity() == logging.INFO
        assert transformers.utils.logging.is_progress_bar_enabled()  # (datasets': HF_DATASETS_DISABLE_PROGRESS_BARS wins)
        with pytest.raises(ValueError, match="unknown log level 'loud'"):
            set_verbosity("loud")
        assert logging.getLogger().handlers == root_handlers
    finally:
        logging.getLogger("hf_taskgroup").setLevel(old[0])
        transformers.logging.set_verbosity(old[1])
        datasets.logging.set_verbosity(old[2])
        (transformers.utils.logging.enable_progress_bar if old[3] else transformers.utils.logging.disable_progress_bar)()
        (datasets.enable_progress_bars if old[4] else datasets.disable_progress_bars)()


def test_nested_bars_leave_nothing_behind_and_stay_off_outside_a_terminal(capfd):
    for _ in progress_bar(range(3), desc="outer stage", progress=True):
        for _ in progress_bar(range(2), desc="inner step", nested=True, progress=True):
            pass
    err = capfd.readouterr().err
    assert "outer stage" in err  # the stage bar is drawn
    assert "inner step" not in err  # stderr is no terminal here: a nested bar would only print escape codes
    assert progress_bar(range(2), nested=True, progress=True).leave is False


def test_quiet_switches_off_the_stage_bars_of_the_pipeline_and_executors(capfd, monkeypatch):
    from hf_taskgroup.executor import SerialExecutor

    logger = logging.getLogger("hf_taskgroup")
    old = logger.level
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    try:
        logger.setLevel(logging.WARNING)  # the CLI default: stage bars drawn
        SerialExecutor().map(str, [1, 2], desc="executor stage", progress=True)
        assert "executor stage" in capfd.readouterr().err
        logger.setLevel(logging.ERROR)  # --quiet / set_verbosity("ERROR")
        SerialExecutor().map(str, [1, 2], desc="executor stage", progress=True)
        for _ in progress_bar(range(2), desc="a stage", progress=True):
            pass
        assert capfd.readouterr().err == ""
        logger.setLevel(logging.WARNING)
        monkeypatch.setenv("TQDM_DISABLE", "1")
        assert progress_bar(range(2), desc="a stage", progress=True).disable
    finally:
        logger.setLevel(old)


def test_no_module_draws_a_tqdm_bar_of_its_own():
    """Every bar goes through hf_taskgroup.log.progress_bar, so --quiet and nesting apply to all of them."""
    offenders = [str(path) for path in Path(hf_taskgroup.__file__).parent.rglob("*.py")
                 if path.name != "log.py" and re.search(r"^\s*from tqdm|^\s*import tqdm", path.read_text(), re.M)]
    assert offenders == []
