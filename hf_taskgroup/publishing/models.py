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
import hashlib
import json
import logging
import os
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
    "check_group_model_push",
    "share_encoder_weights",
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
ENCODER_SHARD = "model-00001-of-00002.safetensors"
HEADS_SHARD = "model-00002-of-00002.safetensors"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", ENCODER_SHARD, HEADS_SHARD)


def _unlink_weights(folder: Path) -> None:
    """Remove weight files before writing new ones: they may be hard links shared with other folders, and
    writing into a link would change every folder that shares it."""
    for name in _WEIGHT_FILES:
        (folder / name).unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported: a plain copy
        shutil.copy2(source, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def share_encoder_weights(folder: str | Path, store: str | Path) -> bool:
    """Store the encoder of a saved model once per run: split ``model.safetensors`` into an encoder shard and a
    trunk+heads shard (a standard sharded checkpoint with ``model.safetensors.index.json``, which
    ``from_pretrained`` loads as usual) and make the encoder shard a hard link to a content-addressed copy in
    ``store``. Folders whose encoders are byte-identical (``frozen`` runs) then share one file on disk; every
    folder stays a complete checkpoint. Returns whether an existing copy was reused.

    Example::

        >>> share_encoder_weights("runs/hoc/model", "runs/_shared")  # doctest: +SKIP
        True
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, store = Path(folder), Path(store)
    single = folder / "model.safetensors"
    if not single.is_file():
        return False
    with safe_open(str(single), framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    encoder = {k: v for k, v in tensors.items() if k.startswith("encoder.")}
    rest = {k: v for k, v in tensors.items() if not k.startswith("encoder.")}
    if not encoder or not rest:
        return False
    save_file(dict(sorted(encoder.items())), str(folder / ENCODER_SHARD), metadata=metadata)
    save_file(dict(sorted(rest.items())), str(folder / HEADS_SHARD), metadata=metadata)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in tensors.values())},
             "weight_map": {**{k: ENCODER_SHARD for k in sorted(encoder)}, **{k: HEADS_SHARD for k in sorted(rest)}}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    single.unlink()
    store.mkdir(parents=True, exist_ok=True)
    shared = store / f"encoder-{_sha256(folder / ENCODER_SHARD)[:32]}.safetensors"
    if shared.is_file():
        _link_or_copy(shared, folder / ENCODER_SHARD)
        return True
    _link_or_copy(folder / ENCODER_SHARD, shared)
    return False


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
    model: Any, tokenizer: Any, output_dir: str | Path, card_data: MultiTaskModelCardData | None = None,
    *, shared_encoder_dir: str | Path | None = None,
) -> Path:
    """Save a group model to ``output_dir``: weights (safetensors) and config, the tokenizer, ``README.md``
    and the card's plots (copied into ``plots/``). Return the folder.

    A PEFT (LoRA) model is merged into a copy first (the caller's model is unchanged), so the folder is a
    standalone ``MultiTaskModel``. With ``shared_encoder_dir`` the encoder weights go to their own shard, stored
    once in that folder for every model with the same encoder (see :func:`share_encoder_weights`). Card fields missing from ``card_data`` are filled from the model config; a
    card that cannot be rendered is replaced by a minimal one with a warning: the card never breaks saving.

    Example::

        >>> save_group_model(trainer.model, tokenizer, "models/group0",
        ...                  MultiTaskModelCardData(model_name="demo-group0", plots=["run/plots/gains.png"]))  # doctest: +SKIP
    """
    output_dir = Path(output_dir)
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    _unlink_weights(output_dir)
    model.save_pretrained(str(output_dir))
    if shared_encoder_dir is not None:
        share_encoder_weights(output_dir, shared_encoder_dir)
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
    from hf_taskgroup.training.modeling import MultiTaskConfig, is_lora_checkpoint

    source, target = Path(source), Path(target)
    if is_lora_checkpoint(source):
        raise FileNotFoundError(f"{source} holds a LoRA adapter, not a standalone model: save the model with "
                                "save_group_model (merges it), or load it with AutoModel.from_pretrained and save that")
    if not (source / "config.json").is_file():
        hint = " It holds a LoRA adapter: save the model with save_group_model (merges it)." if (
            source / "adapter_config.json").is_file() else ""
        raise FileNotFoundError(f"{source} has no config.json: not a saved MultiTaskModel folder.{hint}")
    target.mkdir(parents=True, exist_ok=True)
    _unlink_weights(target)
    for item in source.iterdir():
        if item.name in _SKIP or item.name.startswith(("checkpoint-", ".")):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        elif item.suffix == ".safetensors":
            _link_or_copy(item, target / item.name)  # weights are never written in place: share, don't copy
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
    pvi_dataset_repo: str | None = None,
) -> MultiTaskModelCardData:
    """Card data of group ``group_index`` of ``grouping`` (a ``Grouping`` or its dict).

    ``evaluation`` (a ``MethodEvaluation`` or its dict) gives per-task STL/MTL scores and gains (and the tasks not
    learned: correlation <= 0.05 or F1 = 0); ``suite`` (a ``TaskSuite``) the task types, labels, inputs, licences and
    Hub dataset ids; ``training`` the settings actually used; ``pvi_dataset_repo`` the Hub dataset repo of the
    PVI-annotated data (one config per task), which the card links for tasks whose data are local.
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
                data.task_datasets[task] = {"type": spec.dataset, "hub": "1",
                                            **({"config": spec.config} if spec.config else {})}
            elif pvi_dataset_repo:
                data.task_datasets[task] = {"type": pvi_dataset_repo, "config": task, "hub": "1"}
            elif spec.data_files:
                data.task_datasets[task] = {"type": _builder(spec.data_files)}
            if spec.license:
                data.task_licenses[task] = str(spec.license)
        if pvi_dataset_repo:
            data.datasets.append(pvi_dataset_repo)
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
            why = _not_learned(str(row["metric"]), float(row["mtl_mean"]))
            if why:
                data.not_learned[task] = why
    scores = g.get("scores") or {}
    for task in scores.get("collapsed_tasks") or []:
        if task in tasks:
            data.not_learned.setdefault(str(task), "its PVI probe predicted one label for every example")
    mean_pvi = {t: float(v) for t, v in (scores.get("mean_pvi") or {}).items() if t in tasks}
    if mean_pvi or pvi_dataset_repo:
        data.pvi = {"mean_pvi_bits": mean_pvi, **({"dataset": pvi_dataset_repo} if pvi_dataset_repo else {})}
        if g.get("method") == "pvi":
            data.pvi["grouping_test"] = {k: v for k, v in (g.get("params") or {}).items()
                                         if isinstance(v, (str, int, float, bool))}
    for task, verdict in (verdicts or {}).items():
        if task in data.results:
            data.results[task]["verdict"] = str(verdict)
    return data


def _builder(data_files: Mapping[str, Any]) -> str:
    """The ``datasets`` builder of local files (``json``, ``csv``, ``parquet``), as the Trainer's cards record it."""
    first = next(iter(data_files.values()))
    name = str(first[0] if isinstance(first, (list, tuple)) else first)
    suffix = name.rsplit(".", 1)[-1].lower()
    return {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}.get(suffix, "custom")


def _not_learned(metric: str, value: float) -> str | None:
    """Why a task's multi-task score counts as not learned (correlation <= 0.05, F1 or accuracy of 0), else None."""
    from hf_taskgroup.publishing.model_card import _CORRELATION_METRICS

    name = metric.lower()
    if any(name.startswith(m) for m in _CORRELATION_METRICS) and value <= 0.05:
        return f"{metric} {value:.3f}"
    if name.startswith(("f1", "accuracy")) and value <= 0.0:
        return f"{metric} {value:.3f}"
    return None


# ---------------------------------------------------------------------------------------- pushing
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _remote_conflicts(api: Any, repo_id: str, uploads: Mapping[str, bytes | Path],
                      identical: list[str] | None = None) -> list[str]:
    """Files of the existing repo ``repo_id`` that a push of ``uploads`` (path -> bytes or local file) would change
    or leave behind (the repo would then mix two models). Empty for a new repo or an identical re-push. The paths
    of ``uploads`` the repo already holds byte for byte are appended to ``identical`` when it is given."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        remote = [e for e in api.list_repo_tree(repo_id, recursive=True) if hasattr(e, "blob_id")]
    except RepositoryNotFoundError:
        return []
    conflicts = []
    for entry in remote:
        if entry.path == ".gitattributes":
            continue
        local = uploads.get(entry.path)
        if local is None:
            conflicts.append(f"{entry.path} (not part of this model)")
            continue
        content = local if isinstance(local, bytes) else Path(local).read_bytes()
        lfs = getattr(entry, "lfs", None)
        same = (hashlib.sha256(content).hexdigest() == lfs.sha256) if lfs else _git_blob_oid(content) == entry.blob_id
        if not same:
            conflicts.append(entry.path)
        elif identical is not None:
            identical.append(entry.path)
    return conflicts


def check_group_model_push(model_dir: str | Path, repo_id: str, *, overwrite: bool = False, token: str | None = None,
                           api: Any = None, identical: list[str] | None = None
                           ) -> tuple[dict[str, bytes | Path], list[str]]:
    """Everything :func:`push_group_model` checks before uploading: the folder is a model, its card is valid, and
    the repo is new, identical, or ``overwrite`` is set. Returns the files to upload (path -> bytes or local file)
    and the remote files that would be replaced or deleted (the files the repo already holds byte for byte are
    appended to ``identical`` when given). Raises one :class:`GroupModelPushError` line otherwise.

    Example::

        >>> check_group_model_push("outputs/run/models/pvi/hoc", "me/demo-group0")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi, ModelCard
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
    uploads: dict[str, bytes | Path] = {
        f: str(card).encode("utf-8") if f == "README.md" and card is not None else folder / f for f in files
    }
    rerun = f"push_group_model({str(folder)!r}, {repo_id!r}{', overwrite=True' if overwrite else ''})"
    try:
        if card is not None:
            card.validate()
        conflicts = _remote_conflicts(api or HfApi(token=token), repo_id, uploads, identical)
    except Exception as err:  # card validation, HTTP, network: one line naming the repo
        raise GroupModelPushError(
            f"Pushing {folder} to the Hub model repo {repo_id!r} failed before uploading anything: "
            f"{type(err).__name__}: {_one_line(err)}; fix the cause and re-run {rerun}.", repo_id, folder,
        ) from err
    if conflicts and not overwrite:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise GroupModelPushError(
            f"Refusing to push {folder} to the Hub model repo {repo_id!r}: it already holds other files ({shown}); "
            f"nothing was uploaded. Push to a new repo id, or pass overwrite=True (--overwrite) to replace its content.",
            repo_id, folder,
        )
    return uploads, conflicts


def push_group_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
) -> str:
    """Upload a group model folder to the model repo ``repo_id`` (created if needed) in one commit; return its sha.

    The card (``README.md``) is validated first; its repo-id placeholder in "How to use" is replaced by
    ``repo_id`` in the uploaded copy. Checkpoints, hidden files and trainer pickles are not uploaded. A repo that
    already holds different files (another model, or another version of this one) is left alone unless
    ``overwrite=True``, which replaces it (files of the old model that this one lacks are deleted, so the repo never
    mixes two models); pushing the identical folder again makes no commit and returns the repo's head. Every failure is one
    :class:`GroupModelPushError` line naming the repo and the fix; the local folder is never modified.

    Example::

        >>> sha = push_group_model("outputs/run/models/pvi/hoc+ncbi", "me/demo-group0", private=True)  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(model_dir)
    api = HfApi(token=token)
    identical: list[str] = []
    uploads, conflicts = check_group_model_push(folder, repo_id, overwrite=overwrite, api=api, identical=identical)
    if not conflicts and uploads and set(identical) == set(uploads):  # the repo holds this model already
        try:
            sha = api.model_info(repo_id).sha
        except Exception as err:  # HTTP, network: one line naming the repo
            raise GroupModelPushError(
                f"Reading the Hub model repo {repo_id!r} failed: {type(err).__name__}: {_one_line(err)}; the local "
                f"folder is untouched.", repo_id, folder,
            ) from err
        logger.info("%s is already on the Hub, unchanged: %s@%s", folder, repo_id, sha)
        return sha
    rerun = f"push_group_model({str(folder)!r}, {repo_id!r}{', overwrite=True' if overwrite else ''})"
    operations: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=v if isinstance(v, bytes) else str(v))
                             for f, v in uploads.items()]
    operations += [CommitOperationDelete(path_in_repo=c.split(" (")[0]) for c in conflicts
                   if c.split(" (")[0] not in uploads]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations,
                                 commit_message=commit_message or f"Upload hf-taskgroup model from {folder.name}")
    except Exception as err:  # any failure (HTTP, network): re-raised as one line naming the repo
        raise GroupModelPushError(
            f"Pushing {folder} to the Hub model repo {repo_id!r} failed: {type(err).__name__}: {_one_line(err)}; "
            f"the local folder is untouched: re-run {rerun}.", repo_id, folder,
        ) from err
    logger.info("Pushed %s to %s@%s", folder, repo_id, info.oid)
    return info.oid
