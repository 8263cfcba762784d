"""Save and publish grouped multi-task models: a model folder with weights, tokenizer, card and plots, and
its upload to the Hugging Face Hub.

- :func:`save_group_model`: ``save_pretrained`` (safetensors; a LoRA model is merged first, so the folder
  reloads with ``AutoModel.from_pretrained``), the tokenizer, ``README.md`` (the card) and ``plots/``.
- :func:`build_group_card_data`: the card data of one group from a grouping, its evaluation and the suite.
- :func:`write_group_model_folder`: copy a saved model folder and add the card (what the pipeline does).
- :func:`push_group_model`: upload a folder to a model repo; returns the commit sha. The local folder is only
  read; the token goes to the client only and never into logs, errors or cards.

Example::

    >>> folder = save_group_model(model, tokenizer, "models/group0", card_data)   # doctest: +SKIP
    >>> push_group_model(folder, "me/demo-group0")                                 # doctest: +SKIP
    '3f1c...'
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_taskgroup.publishing.model_card import (
    REPO_PLACEHOLDER,
    MultiTaskModelCardData,
    card_data_from_config,
    merge_card_data,
    save_model_card,
)

logger = logging.getLogger(__name__)

# Never copied into a published folder: trainer state, pickled arguments, checkpoints, PEFT's own card.
_SKIP = ("README.md", "training_args.bin", "trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
_IGNORE_ON_PUSH = ["checkpoint-*", "_*", ".*", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth"]

__all__ = [
    "GroupModelPushError",
    "build_group_card_data",
    "push_group_model",
    "save_group_model",
    "write_group_model_folder",
]


class GroupModelPushError(RuntimeError):
    """Uploading a group model failed; the message names the repo and the local folder (left untouched).

    Example:
        >>> try:
        ...     push_group_model("models/group0", "me/demo-group0")
        ... except GroupModelPushError as err:
        ...     print(err.repo_id, err.folder)  # doctest: +SKIP
    """

    def __init__(self, message: str, repo_id: str, folder: Path):
        super().__init__(message)
        self.repo_id, self.folder = repo_id, folder


# ---------------------------------------------------------------------------------------- saving
def _copy_plots(card_data: MultiTaskModelCardData, output_dir: Path) -> list[str]:
    """Copy the card's plots into ``output_dir/plots/``; return their paths relative to ``output_dir``."""
    kept = []
    for plot in card_data.plots:
        source = Path(plot)
        if not source.is_absolute() and (output_dir / source).is_file():
            kept.append(source.as_posix())  # already inside the folder
            continue
        if not source.is_file():
            logger.warning("Model card: plot %s not found; it is left out of the card", plot)
            continue
        target = output_dir / "plots" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            shutil.copy2(source, target)
        kept.append(f"plots/{source.name}")
    return kept


def _write_card(card_data: MultiTaskModelCardData | None, config: Any, output_dir: Path) -> None:
    defaults = card_data_from_config(config)
    data = merge_card_data(card_data, defaults)
    if card_data is not None and card_data.tasks and sorted(card_data.tasks) != sorted(defaults.tasks):
        logger.warning("Model card: card tasks %s differ from the model's heads %s; using the heads",
                       card_data.tasks, defaults.tasks)
        data.tasks = defaults.tasks
    data.training.update(pooling=config.pooling, trunk_hidden_sizes=list(config.trunk_hidden_sizes or []))
    data.plots = _copy_plots(data, output_dir)
    save_model_card(data, output_dir)


def save_group_model(
    model: Any, tokenizer: Any, output_dir: str | Path, card_data: MultiTaskModelCardData | None = None
) -> Path:
    """Save a group model to ``output_dir``: weights (safetensors) and config, the tokenizer, ``README.md``
    and the card's plots (copied into ``plots/``). Return the folder.

    A PEFT (LoRA) model is merged into a copy first (the caller's model is unchanged), so the folder is a
    standalone ``MultiTaskModel``. Card fields missing from ``card_data`` are filled from the model config; a
    card that cannot be rendered is replaced by a minimal one with a warning: the card never breaks saving.

    Example::

        >>> save_group_model(trainer.model, tokenizer, "models/group0",
        ...                  MultiTaskModelCardData(model_name="demo-group0", plots=["run/plots/gains.png"]))  # doctest: +SKIP
    """
    output_dir = Path(output_dir)
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(output_dir))
    else:
        logger.warning("save_group_model: no tokenizer saved in %s; model.predict will need tokenizer=...", output_dir)
    _write_card(card_data, model.config, output_dir)
    return output_dir


def write_group_model_folder(source: str | Path, target: str | Path,
                             card_data: MultiTaskModelCardData | None = None) -> Path:
    """Copy a saved model folder (``save_pretrained`` + tokenizer) to ``target`` without trainer state, pickles
    or an old card, then write the card and copy its plots. ``source`` is only read.

    Raises ``FileNotFoundError`` when ``source`` has no ``config.json`` (a LoRA adapter folder is refused: save
    the model with :func:`save_group_model`, which merges the adapter).
    """
    from hf_taskgroup.training.modeling import MultiTaskConfig

    source, target = Path(source), Path(target)
    if not (source / "config.json").is_file():
        hint = " It holds a LoRA adapter: save the model with save_group_model (merges it)." if (
            source / "adapter_config.json").is_file() else ""
        raise FileNotFoundError(f"{source} has no config.json: not a saved MultiTaskModel folder.{hint}")
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in _SKIP or item.name.startswith(("checkpoint-", ".")):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target / item.name)
    _write_card(card_data, MultiTaskConfig.from_pretrained(str(target)), target)
    return target


def build_group_card_data(
    *,
    grouping: Any,
    group_index: int,
    evaluation: Any = None,
    suite: Any = None,
    encoder: str | None = None,
    training: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    plots: Sequence[str | Path] = (),
    model_name: str | None = None,
    model_id: str | None = None,
    verdicts: Mapping[str, str] | None = None,
) -> MultiTaskModelCardData:
    """Card data of group ``group_index`` of ``grouping`` (a ``Grouping`` or its dict).

    ``evaluation`` (a ``MethodEvaluation`` or its dict) gives per-task STL/MTL scores and gains; ``suite`` (a
    ``TaskSuite``) the task types, labels, inputs and Hub dataset ids; ``training`` the settings.
    ``verdicts`` (task -> text) adds the recommendation's verdict or sanity flag to each task's result row.

    Example::

        >>> data = build_group_card_data(grouping=grouping, group_index=0, evaluation=evaluations["pvi"],
        ...                              suite=suite, encoder="sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    """
    g = grouping.to_dict() if hasattr(grouping, "to_dict") else dict(grouping)
    groups = g.get("groups") or []
    if not 0 <= group_index < len(groups):
        raise IndexError(f"group_index {group_index} out of range: the {g.get('method')!r} grouping has {len(groups)} groups")
    tasks = [str(t) for t in groups[group_index]]
    data = MultiTaskModelCardData(
        model_name=model_name or f"{g.get('method', 'group')}-group{group_index}",
        model_id=model_id, encoder_name_or_path=encoder, tasks=tasks, grouping=g, group_index=group_index,
        training={**dict(training or {}), **({"seeds": list(seeds)} if seeds is not None else {})},
        plots=[str(p) for p in plots],
    )
    if suite is not None:
        for task in tasks:
            spec = suite[task]
            data.task_types[task] = spec.type
            data.task_inputs[task] = "words" if spec.type == "token_classification" else "pair" if spec.is_pair else "text"
            if spec.dataset:
                data.datasets.append(spec.dataset)
        infos = suite.subset(tasks).task_infos()
        data.label_names = {t: infos[t].get("id2label") for t in tasks}
    if evaluation is not None:
        rows = evaluation.to_dict()["rows"] if hasattr(evaluation, "to_dict") else dict(evaluation.get("rows", {}))
        split = (training or {}).get("eval_split", "test")
        for task in tasks:
            row = rows.get(task)
            if row is None:
                continue
            data.results[task] = {
                "metric": row["metric"], "split": split, "value": float(row["mtl_mean"]),
                "stl_value": float(row["stl_mean"]), "gain": float(row["gain"]), "seeds": int(row.get("seeds", 1)),
            }
    for task, verdict in (verdicts or {}).items():
        if task in data.results:
            data.results[task]["verdict"] = str(verdict)
    return data


# ---------------------------------------------------------------------------------------- pushing
def push_group_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a group model folder to the model repo ``repo_id`` (created if needed) in one commit; return its sha.

    The card (``README.md``) is validated by the Hub first; its repo-id placeholder in "How to use" is replaced by
    ``repo_id`` in the uploaded copy. Checkpoints, hidden files and trainer pickles are not uploaded. On failure,
    :class:`GroupModelPushError` names the repo; the local folder is never modified.

    Example::

        >>> sha = push_group_model("outputs/run/models/pvi/hoc+ncbi", "me/demo-group0", private=True)  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model folder (nothing pushed to {repo_id})")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = list(filter_repo_objects(files, ignore_patterns=_IGNORE_ON_PUSH))
    card = None
    if "README.md" in files:
        card = ModelCard((folder / "README.md").read_text(encoding="utf-8").replace(REPO_PLACEHOLDER, repo_id))
    else:
        logger.warning("push_group_model: %s has no README.md; %s will have no model card", folder, repo_id)
    operations = [
        CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(card).encode("utf-8") if f == "README.md" and card
                           else str(folder / f))
        for f in files
    ]
    api = HfApi(token=token)
    try:
        if card is not None:
            card.validate()
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations,
                                 commit_message=commit_message or f"Upload hf-taskgroup model from {folder.name}")
    except Exception as err:  # any failure (card validation, HTTP, network): re-raised naming the repo
        raise GroupModelPushError(
            f"Pushing {folder} to the Hub model repo {repo_id!r} failed: {type(err).__name__}: {err}. "
            f"The local folder {folder} is untouched; re-run push_group_model({str(folder)!r}, {repo_id!r}).",
            repo_id, folder,
        ) from err
    logger.info("Pushed %s to %s@%s", folder, repo_id, info.oid)
    return info.oid
