"""The configuration spine (hf_taskgroup/config.py): one default per knob everywhere, --config files, validation."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import yaml

from hf_taskgroup import config as spine
from hf_taskgroup.cli import build_parser, parse
from hf_taskgroup.commands import COMMAND_MODULES
from hf_taskgroup.config import (
    MODE_DEFAULTS,
    ConfigError,
    GroupCommandConfig,
    LLMCommandConfig,
    PipelineConfig,
    PVICommandConfig,
    TrainCommandConfig,
    make_parser,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"run": PipelineConfig, "train": TrainCommandConfig, "pvi": PVICommandConfig, "group": GroupCommandConfig,
           "llm": LLMCommandConfig}
#: the smallest valid command line of each subcommand (group needs a method and an output)
MINIMAL = {"run": [], "train": [], "pvi": [], "group": ["--method", "all_in_one", "--output", "g.json"],
           "llm": ["--model", "my-org/my-llm"]}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_subcommand_is_built_from_its_config():
    from hf_taskgroup.config import ExportCommandConfig

    assert set(COMMAND_MODULES) == {*CONFIGS, "export"}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, cls in {**CONFIGS, "export": ExportCommandConfig}.items():
        dests = {a.dest for a in sub.choices[name]._actions}
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in dests]
        assert not missing, f"{name}: fields without a flag: {missing}"


@pytest.mark.parametrize("command", list(CONFIGS))
def test_cli_defaults_equal_the_library_defaults(command):
    parser = build_parser()
    namespace = parser.parse_args([command])
    for f in dataclasses.fields(CONFIGS[command]):  # every field, so a new one is covered automatically
        assert getattr(namespace, f.name) == _default(f), f"{command} --{f.name}"
    _, config = parse([command, *MINIMAL[command]])
    library = CONFIGS[command](**{k.lstrip("-"): v for k, v in zip(MINIMAL[command][::2], MINIMAL[command][1::2])})
    assert dataclasses.asdict(config) == dataclasses.asdict(library)


@pytest.mark.parametrize("command", ["run", "train", "pvi", "group"])
def test_every_training_subcommand_takes_the_executor_flags_with_the_library_defaults(command):
    """run, train, pvi and group read the one declaration of the executor knobs (ExecutorArguments)."""
    from hf_taskgroup.executor import RayExecutor, Resources, SerialExecutor

    assert issubclass(CONFIGS[command], spine.ExecutorArguments)
    library = spine.ExecutorArguments()
    _, config = parse([command, *MINIMAL[command]])
    for f in dataclasses.fields(spine.ExecutorArguments):
        assert getattr(config, f.name) == getattr(library, f.name), f"{command} --{f.name}"
    assert isinstance(config.make_executor(), SerialExecutor)
    _, config = parse([command, *MINIMAL[command], "--executor", "ray", "--ray_address", "auto",
                       "--num_gpus_per_training", "0.5", "--max_retries", "4"])
    ex = config.make_executor()
    assert isinstance(ex, RayExecutor) and (ex.address, ex.resources, ex.max_retries) == ("auto", Resources(1.0, 0.5), 4)
    with pytest.raises(ConfigError, match="needs --executor ray"):
        parse([command, *MINIMAL[command], "--ray_address", "auto"])


def test_no_arguments_runs_the_demo_with_library_defaults():
    command, config = parse([])
    assert command == "run" and config == PipelineConfig()


@pytest.mark.parametrize("script, cls", [("run_pipeline", PipelineConfig), ("compute_pvi", PVICommandConfig),
                                         ("train_mtl", TrainCommandConfig)])
def test_scripts_parse_the_same_config_with_the_same_defaults(script, cls):
    module = _script(script)
    source = inspect.getsource(module)
    assert "make_parser(" in source and cls.__name__ in source
    parser = make_parser(cls)
    assert dataclasses.asdict(parse_config(parser, [])) == dataclasses.asdict(cls())


def test_library_functions_read_the_spine_defaults():
    from hf_taskgroup.pvi.estimate import compute_pvi
    from hf_taskgroup.training.train import TrainSettings

    settings, cfg = TrainSettings(), PipelineConfig()
    assert (settings.finetune, settings.pooling, settings.trunk_hidden_sizes, settings.max_length,
            settings.per_device_train_batch_size) == (cfg.finetune, cfg.pooling, cfg.trunk_hidden_sizes,
                                                       cfg.max_length, cfg.batch_size)
    for mode in spine.FINETUNE_MODES:
        s = TrainSettings(finetune=mode)
        assert (s.num_train_epochs, s.learning_rate) == (MODE_DEFAULTS["num_train_epochs"][mode],
                                                         MODE_DEFAULTS["learning_rate"][mode])
    params = inspect.signature(compute_pvi).parameters
    pvi = spine.PVIArguments()
    assert (params["null"].default, params["heldout"].default, params["folds"].default,
            list(params["splits"].default), params["smoothing"].default) == (
        pvi.pvi_null, pvi.pvi_heldout, pvi.pvi_folds, pvi.pvi_splits, pvi.pvi_smoothing)


@pytest.mark.parametrize("mode", spine.FINETUNE_MODES)
def test_mode_defaults_are_resolved_in_one_place(mode):
    for cls in (PipelineConfig, TrainCommandConfig, PVICommandConfig):
        cfg = cls(finetune=mode)
        resolved = cfg.to_dict()
        for name, table in MODE_DEFAULTS.items():
            if name in resolved:
                assert getattr(cfg, name) is None and resolved[name] == table[mode]
    pipe = PipelineConfig(finetune=mode)
    assert pipe.train_settings(0).num_train_epochs == MODE_DEFAULTS["num_train_epochs"][mode]
    assert pipe.pvi_settings().learning_rate == MODE_DEFAULTS["pvi_learning_rate"][mode]
    # the pvi command trains its models exactly as `run` trains the PVI models
    assert PVICommandConfig(finetune=mode).pvi_settings(0) == pipe.pvi_settings(0)
    # an explicit value wins over the table
    assert PipelineConfig(finetune=mode, learning_rate=0.5).train_settings(0).learning_rate == 0.5


@pytest.mark.parametrize("command", list(CONFIGS))
def test_config_file_fills_the_fields_and_flags_override_it(command, tmp_path):
    path = tmp_path / "settings.yaml"
    values = {"batch_size": 4, "max_length": 50, "tasks": ["a", "b"], "trunk_hidden_sizes": [32, 16]}
    if command == "group":
        values.update(method="all_in_one", output=str(tmp_path / "g.json"))
    if command == "llm":  # a causal LM has no encoder settings
        values = {"batch_size": 4, "max_new_tokens": 50, "tasks": ["a", "b"], "model": "my-org/my-llm"}
    path.write_text(yaml.safe_dump(values))
    _, config = parse([command, "--config", str(path), "--batch_size", "8"])
    assert config.batch_size == 8  # the flag wins
    for key, value in values.items():
        if key != "batch_size":
            assert getattr(config, key) == value, key


def test_config_file_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: 4\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['epoch'\]"):
        parse(["run", "--config", str(path)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["train", "--config", str(tmp_path / "missing.yaml")])


def test_config_file_values_are_validated_like_flags(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rate: 0\n")
    with pytest.raises(ConfigError, match="--learning_rate must be > 0"):
        parse(["run", "--config", str(path)])


def test_run_sets_pooling_folds_and_splits():
    _, cfg = parse(["run", "--pooling", "cls", "--pvi_folds", "3", "--pvi_split", "validation", "--eval_split", "test",
                    "--pvi_heldout", "kfold"])
    assert (cfg.pooling, cfg.pvi_folds, cfg.pvi_split, cfg.eval_split, cfg.pvi_heldout) == (
        "cls", 3, "validation", "test", "kfold")


def test_renamed_flags_are_accepted_with_a_warning(capsys):
    _, cfg = parse(["run", "--epochs", "3", "--pvi_epochs", "2", "--pvi_group_collapsed"])
    assert (cfg.num_train_epochs, cfg.pvi_num_train_epochs, cfg.pvi_keep_collapsed_single) == (3.0, 2.0, False)
    err = capsys.readouterr().err
    assert "--epochs is deprecated; use --num_train_epochs" in err
    assert "--pvi_group_collapsed is deprecated; use --no_pvi_keep_collapsed_single" in err
    _, cfg = parse(["run", "--no_pvi_keep_collapsed_single"])
    assert cfg.pvi_keep_collapsed_single is False
    with pytest.warns(FutureWarning, match="num_train_epochs"):
        assert PipelineConfig(epochs=4).num_train_epochs == 4.0


def test_lists_accept_commas_and_spaces():
    _, cfg = parse(["run", "--seeds", "0,1", "2", "--methods", "pvi,all_in_one", "--trunk_hidden_sizes"])
    assert cfg.seeds == [0, 1, 2] and cfg.methods == ["pvi", "all_in_one"] and cfg.trunk_hidden_sizes == []


@pytest.mark.parametrize("kwargs, flag", [
    ({"learning_rate": 0}, "--learning_rate"),
    ({"num_train_epochs": -1}, "--num_train_epochs"),
    ({"pvi_num_train_epochs": 0}, "--pvi_num_train_epochs"),
    ({"pvi_learning_rate": -1e-3}, "--pvi_learning_rate"),
    ({"batch_size": 0}, "--batch_size"),
    ({"trunk_hidden_sizes": [0]}, "--trunk_hidden_sizes"),
    ({"max_length": 0}, "--max_length"),
    ({"seeds": [0, 0]}, "--seeds"),
    ({"seeds": []}, "--seeds"),
    ({"methods": ["pvi", "telepathy"]}, "--methods"),
    ({"method_options": {"pvi": {"bogus": 1}}}, "--method_options"),
    ({"method_options": {"tag": {"every_k_steps": 5}}}, "--method_options"),  # tag is not among the methods
    ({"tasks": ["a", "b"], "num_groups": 3}, "--num_groups"),
    ({"finetune": "partial-ish"}, "--finetune"),
    ({"pooling": "max"}, "--pooling"),
    ({"pvi_null": "zero"}, "--pvi_null"),
    ({"pvi_heldout": "loo"}, "--pvi_heldout"),
    ({"pvi_folds": 1}, "--pvi_folds"),
    ({"pvi_split": "test", "eval_split": "validation"}, "--pvi_split"),
    ({"eval_split": "validation"}, "--pvi_split"),
    ({"evaluator_objective": "speed"}, "--evaluator_objective"),
    ({"num_train_epochs": float("inf")}, "--num_train_epochs"),
])
def test_pipeline_config_refuses_bad_values_naming_the_field(kwargs, flag):
    with pytest.raises(ConfigError) as info:
        PipelineConfig(**kwargs)
    assert flag in str(info.value)


def test_method_options_are_checked_against_the_method():
    cfg = PipelineConfig(methods=["pvi", "tag"], method_options={"pvi": {"test": "tost"}, "tag": {"every_k_steps": 5}})
    assert cfg.method_options["tag"] == {"every_k_steps": 5}  # collection options are options of tag
    with pytest.raises(ConfigError, match="does not take 'affinity'"):  # an input is not an option
        PipelineConfig(methods=["tag"], method_options={"tag": {"affinity": [[0]]}})


def test_num_groups_is_checked_once_the_tasks_are_known():
    cfg = PipelineConfig(num_groups=4)
    cfg.check_tasks(["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="--num_groups 4 is larger than the number of tasks"):
        cfg.check_tasks(["a", "b", "c"])
    with pytest.raises(ConfigError, match="exhaustive"):
        PipelineConfig(methods=["exhaustive"]).check_tasks([f"t{i}" for i in range(9)])


def test_group_command_config_checks_method_and_options():
    with pytest.raises(ConfigError, match="unknown grouping method 'telepathy'"):
        GroupCommandConfig(method="telepathy", output="g.json")
    with pytest.raises(ConfigError, match="does not take 'num_groups'"):
        GroupCommandConfig(method="all_in_one", output="g.json", num_groups=2)
    with pytest.raises(ConfigError, match="does not take 'bogus'"):
        GroupCommandConfig(method="pvi", output="g.json", option=["bogus=1"])
    with pytest.raises(ConfigError, match="--output is required"):
        GroupCommandConfig(method="pvi")
    with pytest.raises(ConfigError, match="never see the test split"):
        GroupCommandConfig(method="pvi", output="g.json", pvi_split="test")
    assert GroupCommandConfig(list_methods=True).list_methods


def test_pvi_command_config_checks():
    with pytest.raises(ConfigError, match="--hub_dataset_id"):
        PVICommandConfig(push_to_hub=True)
    with pytest.raises(ConfigError, match="--pvi_learning_rate must be > 0"):
        PVICommandConfig(pvi_learning_rate=0)


def test_check_model_refuses_a_missing_folder_and_a_too_long_max_length(tmp_path):
    from transformers import BertModel
    from utils import tiny_bert_config

    with pytest.raises(ConfigError, match="--model: folder .*does not exist"):
        spine.ModelArguments(model=str(tmp_path / "nope")).check_model()
    folder = tmp_path / "enc"
    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(folder)  # 64 positions
    spine.ModelArguments(model=str(folder), max_length=64).check_model()
    with pytest.raises(ConfigError, match="--max_length 65 is above the model's max_position_embeddings"):
        spine.ModelArguments(model=str(folder), max_length=65).check_model()


def test_resolved_config_round_trips():
    cfg = PipelineConfig(finetune="full", seeds=[1, 2], method_options={"pvi": {"test": "tost"}})
    data = cfg.to_dict()
    assert data["num_train_epochs"] == 3.0 and data["pvi_learning_rate"] == 5e-5
    again = PipelineConfig(**data)
    assert again.to_dict() == data


@pytest.mark.parametrize("kwargs, named", [({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
                                           ({"trunk_hidden_sizes": [8, 0]}, "trunk_hidden_sizes"),
                                           ({"max_length": 0}, "max_length"),
                                           ({"finetune": "half"}, "finetune")])
def test_train_settings_enforce_the_spine_ranges(kwargs, named):
    from hf_taskgroup.training.train import TrainSettings

    with pytest.raises(ConfigError, match=named):
        TrainSettings(**kwargs)
