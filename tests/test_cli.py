"""The CLI contract: the same bad value refused by every entry point with one line and exit 2, before any
work; internal errors behind --debug; Ctrl-C exits 130; every run records its resolved config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from utils import write_cli_suite

from hf_taskgroup.cli import INTERRUPTED_MESSAGE, main
from hf_taskgroup.config import ConfigError, PipelineConfig

TASKS = ("cli_a", "cli_b", "cli_c")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 3-task suite on jsonl files and a tiny BERT + tokenizer folder (64 positions) to pass as --model."""
    root = tmp_path_factory.mktemp("cli_contract")
    suite, model_dir = write_cli_suite(root, "cli-contract")
    return {"suite": suite, "model": model_dir, "root": root}


def _common(tiny, out: Path, command: str) -> list[str]:
    argv = [command, "--suite", str(tiny["suite"]), "--model", str(tiny["model"]), "--max_length", "32"]
    if command == "group":
        return [*argv, "--method", "transfer_gain", "--output", str(out / "g.json"), "--cache_dir", str(out)]
    return [*argv, "--output_dir", str(out)]


#: (bad flags, the flag the error must name, subcommands that take it)
BAD_VALUES = [
    (["--learning_rate", "0"], "learning_rate", ("run", "train", "pvi", "group")),
    (["--num_train_epochs", "-1"], "num_train_epochs", ("run", "train", "pvi", "group")),
    (["--epochs", "-1"], "num_train_epochs", ("run", "train", "pvi", "group")),  # the old name too
    (["--batch_size", "0"], "--batch_size", ("run", "train", "pvi", "group")),
    (["--trunk_hidden_sizes", "0"], "--trunk_hidden_sizes", ("run", "train", "pvi", "group")),
    (["--max_length", "0"], "--max_length", ("run", "train", "pvi", "group")),
    (["--max_length", "65"], "--max_length", ("run", "train", "pvi", "group")),  # above the model's 64 positions
    (["--finetune", "nope"], "--finetune", ("run", "train", "pvi", "group")),
    (["--seeds", "0,0"], "--seeds", ("run",)),
    (["--seed", "-1"], "--seed", ("train", "pvi", "group")),
    (["--pvi_num_train_epochs", "-1"], "--pvi_num_train_epochs", ("run", "pvi")),
    (["--pvi_folds", "1"], "--pvi_folds", ("run", "pvi")),
    (["--methods", "pvi,telepathy"], "--methods", ("run",)),
    (["--method", "telepathy"], "--method", ("group",)),
    (["--method_options", '{"pvi": {"bogus": 1}}'], "--method_options", ("run",)),
    (["--option", "bogus=1"], "--option", ("group",)),
    (["--num_groups", "4"], "--num_groups", ("run", "group")),  # 3 tasks
    (["--model", "/nonexistent/model/folder"], "--model", ("run", "train", "pvi", "group")),
]
CASES = [(command, flags, named) for flags, named, commands in BAD_VALUES for command in commands]


@pytest.mark.parametrize("command, flags, named", CASES, ids=[f"{c}{' '.join(f)}" for c, f, _ in CASES])
def test_bad_value_is_one_line_exit_2_before_any_work(tiny, tmp_path, capsys, command, flags, named):
    out = tmp_path / "out"
    argv = _common(tiny, out, command) + flags
    if command == "run" and flags[0] == "--num_groups":
        argv += ["--methods", "pvi,transfer_gain"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("hf-taskgroup: warning")]
    assert len(err) == 2 and err[0].startswith("hf-taskgroup: error: ") and err[1].startswith("hint: "), err
    assert named in err[0], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists() or not any(out.iterdir())  # nothing was started


@pytest.mark.parametrize("kwargs", [
    {"learning_rate": 0}, {"num_train_epochs": -1}, {"batch_size": 0}, {"trunk_hidden_sizes": [0]}, {"max_length": 0},
    {"seeds": [0, 0]}, {"methods": ["telepathy"]}, {"method_options": {"pvi": {"bogus": 1}}},
    {"tasks": list(TASKS), "num_groups": 4},
])
def test_the_same_bad_values_are_refused_by_the_python_api(kwargs):
    with pytest.raises(ConfigError):
        PipelineConfig(**kwargs)


def test_num_groups_above_the_suite_is_refused_before_pvi(tiny, tmp_path):
    from hf_taskgroup.pipeline import Pipeline

    with pytest.raises(ConfigError, match="--num_groups 4 is larger than the number of tasks"):
        Pipeline(PipelineConfig(suite=str(tiny["suite"]), model=str(tiny["model"]), max_length=32,
                                methods=["pvi", "transfer_gain"], num_groups=4, output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_a_bad_value_in_a_subprocess_fails_fast_with_exit_2(tiny, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "hf_taskgroup.cli", *_common(tiny, out, "run"), "--learning_rate", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "hf-taskgroup: error: --learning_rate must be > 0, got 0.0"
    assert not out.exists()


def test_missing_suite_file_is_a_user_error(tmp_path, capsys):
    assert main(["train", "--suite", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("hf-taskgroup: error: ") and "nope.yaml" in err[0]


def test_argparse_errors_are_one_line_too(capsys):
    assert main(["run", "--batch_size", "many"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("hf-taskgroup: error: argument --batch_size") and len(err) == 2
    assert main(["run", "--no_such_flag"]) == 2
    assert "unrecognized arguments: --no_such_flag" in capsys.readouterr().err


def test_internal_error_is_one_line_and_its_traceback_needs_debug(monkeypatch, capsys):
    from hf_taskgroup.commands import train

    def broken(config, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(train, "run", broken)
    assert main(["train"]) == 1
    err = capsys.readouterr().err
    assert "hf-taskgroup: internal error: RuntimeError: boom" in err
    assert "re-run with --debug for the traceback" in err and "Traceback" not in err
    assert main(["--debug", "train"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["train", "--debug"]) == 1  # global flags are accepted anywhere
    assert "Traceback" in capsys.readouterr().err


def test_a_refused_publish_is_a_user_error_naming_the_folder(tiny, tmp_path, monkeypatch, capsys):
    """ArtifactError (a folder modified after it was sealed) reaches the CLI as one line, exit 2, no traceback;
    library callers can still catch it as a RuntimeError."""
    from hf_taskgroup.artifacts import ArtifactError, ArtifactStore, verify_all
    from hf_taskgroup.pipeline import Pipeline

    out = tmp_path / "run"
    folder = out / "models" / "pvi" / "group0"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 64)
    ArtifactStore(out / "models" / "pvi").seal(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 10)  # truncated after sealing

    def publishes(self, stop_after=None):  # the check stage_publish runs before any push
        verify_all([folder])

    monkeypatch.setattr(Pipeline, "run", publishes)
    assert main(_common(tiny, out, "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("hf-taskgroup: error: refusing to publish ") and str(folder) in err[0]
    assert "model.safetensors has 10 bytes" in err[0]
    assert err[1].startswith("hint: ") and "Traceback" not in "\n".join(err) and len(err) == 2
    assert issubclass(ArtifactError, RuntimeError)


def test_a_swallowed_ctrl_c_still_exits_130(monkeypatch, capsys):
    from hf_taskgroup.commands import train

    def swallows(config, ctx):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass  # what a careless library might do
        return 0

    monkeypatch.setattr(train, "run", swallows)
    assert main(["train"]) == 130
    assert INTERRUPTED_MESSAGE in capsys.readouterr().err


def test_global_flags(monkeypatch):
    from hf_taskgroup.cli import _split_globals

    argv, flags = _split_globals(["run", "-q", "--debug", "--batch_size", "4"])
    assert argv == ["run", "--batch_size", "4"] and flags.quiet and flags.debug and not flags.verbose
    with pytest.raises(ConfigError, match="contradict"):
        _split_globals(["-v", "-q"])


@pytest.mark.slow
def test_ctrl_c_stops_a_run_with_exit_130_and_resumes(tiny, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "hf_taskgroup.cli", *_common(tiny, out, "run"), "--trunk_hidden_sizes", "8",
            "--batch_size", "2", "--pvi_num_train_epochs", "500", "--pvi_null", "analytic"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "config.json").exists(), proc.communicate(timeout=5)
        time.sleep(2.0)  # inside the PVI training now
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert INTERRUPTED_MESSAGE in stderr and "Traceback" not in stderr
    assert not list(out.rglob("*.tmp*"))  # nothing half-written is left behind


@pytest.mark.slow
def test_every_run_writes_its_resolved_config(tiny, tmp_path, capsys):
    from hf_taskgroup.config import MODE_DEFAULTS, TrainCommandConfig

    out = tmp_path / "train"
    assert main(_common(tiny, out, "train") + ["--mode", "mtl", "--trunk_hidden_sizes", "8",
                                               "--num_train_epochs", "1"]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert set(recorded) >= {f for f in TrainCommandConfig.__dataclass_fields__}
    assert recorded["learning_rate"] == MODE_DEFAULTS["learning_rate"]["frozen"]  # resolved, not None
    assert recorded["num_train_epochs"] == 1.0 and recorded["tasks"] == list(TASKS)

    from hf_taskgroup.pipeline import Pipeline

    run_out = tmp_path / "run"
    cfg = PipelineConfig(suite=str(tiny["suite"]), model=str(tiny["model"]), max_length=32, trunk_hidden_sizes=[8],
                         pvi_null="analytic", pvi_num_train_epochs=1, output_dir=str(run_out))
    Pipeline(cfg, progress=False).run(stop_after="pvi")
    recorded = json.loads((run_out / "config.json").read_text())
    assert recorded == {**cfg.to_dict(), "tasks": list(TASKS)}  # every field; tasks resolved to the suite's
    assert recorded["num_train_epochs"] == MODE_DEFAULTS["num_train_epochs"]["frozen"]
    assert recorded["pvi_learning_rate"] == MODE_DEFAULTS["pvi_learning_rate"]["frozen"]
