"""Publish PVI-annotated datasets to the Hugging Face Hub.

``compute_pvi`` writes, per task, ``<pvi_dir>/<task>/dataset/`` (a ``DatasetDict.save_to_disk`` with the
original columns plus ``pvi``, ``pvi_h_yx``, ``pvi_h_yb``, ``pvi_correct``) and
``<pvi_dir>/<task>/summary.json`` (settings, V-information, accuracy, collapse flags per split).
:func:`push_pvi_datasets` pushes them as one dataset repo with one config per task (or one repo per
task) and writes a dataset card, rendered from ``model_cards/pvi_dataset_card.md``, that records how
the scores were made.

Safety rules:

- Nothing already on the Hub is dropped: other configs of the repo are kept (``datasets`` only rewrites
  the config it pushes), and a config that already holds PVI values is replaced only with
  ``overwrite=True``; the check runs for every task before anything is uploaded.
- Remote splits of a replaced config that the local data lacks are kept: they are downloaded (at the
  commit checked before the push), cast to the local features, with missing PVI columns filled with
  nulls, and pushed again together with the local splits.
- Local artifacts are only read. A failed push raises :class:`PVIPushError`, which lists the tasks that
  were pushed, those that were not, and the call that pushes the rest.
- The token is passed to the client only; it never appears in logs, errors or cards.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from hf_taskgroup.artifacts import dataset_content_hash, stable_hash

logger = logging.getLogger(__name__)

PVI_COLUMNS = ("pvi", "pvi_h_yx", "pvi_h_yb", "pvi_correct")
CARD_TEMPLATE = "pvi_dataset_card.md"
_SUMMARY_KEYS = ("task", "task_type", "settings", "v_information", "accuracy", "collapsed", "num_examples")
_SECRET_KEY = re.compile(r"token|secret|password|api_?key|credential", re.I)

__all__ = [
    "PVI_BIBTEX",
    "PVIConfigExistsError",
    "PVIPushError",
    "content_fingerprint",
    "load_pvi_artifacts",
    "push_pvi_datasets",
    "render_pvi_dataset_card",
    "task_sources",
]


class PVIConfigExistsError(RuntimeError):
    """Raised before any upload when a target config already holds PVI values and ``overwrite`` is False.

    Example:
        >>> try:  # doctest: +SKIP
        ...     push_pvi_datasets("outputs/pvi", "me/pvi")
        ... except PVIConfigExistsError:
        ...     push_pvi_datasets("outputs/pvi", "me/pvi", overwrite=True)  # replace on purpose
    """


class PVIPushError(RuntimeError):
    """A push failed part-way. ``pushed`` maps task -> ``repo@sha``; ``not_pushed`` lists the rest.

    Example:
        >>> try:  # doctest: +SKIP
        ...     push_pvi_datasets("outputs/pvi", "me/pvi")
        ... except PVIPushError as err:
        ...     print(err.not_pushed, err.rerun)
    """

    def __init__(self, message: str, pushed: dict[str, str], not_pushed: list[str], rerun: str):
        super().__init__(message)
        self.pushed, self.not_pushed, self.rerun = pushed, not_pushed, rerun


# --------------------------------------------------------------------------------------- artifacts
def load_pvi_artifacts(
    pvi_dir: str | Path, tasks: Sequence[str] | None = None
) -> dict[str, tuple[DatasetDict, dict]]:
    """Read ``<pvi_dir>/<task>/{dataset,summary.json}`` for ``tasks`` (default: every task folder, sorted).

    Checks that the summary has the expected keys and names the same task, and that every split has
    the PVI columns. Datasets are memory-mapped; nothing is written to ``pvi_dir``.
    """
    root = Path(pvi_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"PVI directory {root} does not exist")
    if tasks is None:
        tasks = sorted(p.name for p in root.iterdir() if (p / "summary.json").is_file())
        if not tasks:
            raise FileNotFoundError(f"No PVI artifacts (<task>/summary.json) found under {root}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"Duplicate task names in {list(tasks)}")
    artifacts: dict[str, tuple[DatasetDict, dict]] = {}
    for task in tasks:
        task_dir = root / task
        summary_path, dataset_path = task_dir / "summary.json", task_dir / "dataset"
        for path in (summary_path, dataset_path):
            if not path.exists():
                raise FileNotFoundError(f"Task {task!r}: missing PVI artifact {path}")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        missing = [key for key in _SUMMARY_KEYS if key not in summary]
        if missing:
            raise ValueError(f"Task {task!r}: {summary_path} lacks keys {missing}")
        if summary["task"] != task:
            raise ValueError(f"Task {task!r}: {summary_path} is for task {summary['task']!r}")
        dataset = DatasetDict.load_from_disk(str(dataset_path))
        for split, ds in dataset.items():
            absent = [c for c in PVI_COLUMNS if c not in ds.column_names]
            if absent:
                raise ValueError(f"Task {task!r}, split {split!r}: {dataset_path} lacks PVI columns {absent}")
        artifacts[task] = (dataset, summary)
    return artifacts


# --------------------------------------------------------------------------------------- card
def _template_path(name: str) -> Path:
    """Find a card template shipped as package data (``hf_taskgroup/model_cards/``) or in the repo's ``model_cards/``."""
    candidates = [Path(str(resources.files("hf_taskgroup") / "model_cards" / name))]
    candidates.append(Path(__file__).resolve().parents[2] / "model_cards" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Card template {name!r} not found; looked in: {', '.join(map(str, candidates))}")


def public_value(value: Any) -> Any:
    """``value`` with every local path replaced (recursively) by what may be published: the Hub id of a known
    local model folder, else ``"<basename> (local)"``. Strings that are not existing absolute paths are kept.

    Example::

        >>> public_value({"model": "/home/me/models/tiny-bert", "epochs": 3})  # doctest: +SKIP
        {'model': 'tiny-bert (local)', 'epochs': 3}
    """
    if isinstance(value, str):
        if len(value) > 1 and (value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value)):
            if os.path.exists(os.path.expanduser(value)) or value.startswith(("/tmp", "/home", "/root", "/Users")):
                from hf_taskgroup.training.modeling import public_model_reference

                return public_model_reference(value) or f"{Path(value).name} (local)"
        return value
    if isinstance(value, Mapping):
        return {k: public_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(v) for v in value]
    return value


def _card_record(summary: Mapping[str, Any], config_name: str) -> dict[str, Any]:
    """The YAML record of one task: its summary (secret-looking settings removed, local paths replaced by
    :func:`public_value`) and its config name."""
    record = {k: public_value(copy.deepcopy(v)) for k, v in summary.items() if not _SECRET_KEY.search(k)}
    record["settings"] = {
        k: public_value(v) for k, v in dict(summary.get("settings") or {}).items() if not _SECRET_KEY.search(k)
    }
    record["config_name"] = config_name
    return record


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


PVI_BIBTEX = (
    "@inproceedings{ethayarajh2022understanding,\n  title = {Understanding Dataset Difficulty with "
    "{$\\mathcal{V}$}-Usable Information},\n  author = {Ethayarajh, Kawin and Choi, Yejin and Swayamdipta, Swabha},\n"
    "  booktitle = {Proceedings of the 39th International Conference on Machine Learning},\n  series = {PMLR},\n"
    "  volume = {162},\n  pages = {5988--6008},\n  year = {2022}\n}"
)
_TASK_CATEGORIES = {"classification": "text-classification", "single_label_classification": "text-classification",
                    "multilabel": "text-classification", "multi_label_classification": "text-classification",
                    "regression": "text-classification", "token_classification": "token-classification"}
_TASK_IDS = {"multilabel": "multi-label-classification", "multi_label_classification": "multi-label-classification",
             "classification": "multi-class-classification", "single_label_classification": "multi-class-classification",
             "regression": "text-scoring"}


def task_sources(suite: Any, tasks: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """``{task: {"license": ..., "source_dataset": ...}}`` from a ``TaskSuite``: the data licence and where the data
    came from (``extended|<hub id>`` for Hub datasets, ``extended|other-<task>`` for local files), as dataset cards
    record them.

    Example::

        >>> task_sources(TaskSuite.from_yaml(DEMO_SUITE_PATH))["pubmedqa"]  # doctest: +SKIP
        {'license': 'mit', 'source_dataset': 'extended|other-pubmedqa'}
    """
    out: dict[str, dict[str, str]] = {}
    for task in tasks or suite.task_names:
        spec = suite[task]
        info = {"source_dataset": f"extended|{spec.dataset}" if spec.dataset else f"extended|other-{task}"}
        if getattr(spec, "license", None):
            info["license"] = str(spec.license)
        out[task] = info
    return out


def render_pvi_dataset_card(
    summaries: Mapping[str, dict],
    repo_id: str,
    *,
    pretty_name: str | None = None,
    config_names: Mapping[str, str] | None = None,
    sources: Mapping[str, Mapping[str, str]] | None = None,
) -> DatasetCard:
    """Render the dataset card for ``summaries`` (task -> ``summary.json`` content).

    The YAML header gets ``pretty_name``, ``tags``, ``license`` (the tasks' licences), ``source_datasets``,
    ``task_categories`` / ``task_ids`` (from the task types) and a ``pvi_annotations`` block (task -> summary +
    ``config_name`` + licence and source; ``sources`` is :func:`task_sources`' result); the body records, per task, model, fine-tuning mode, epochs, null model, held-out
    scheme, V-information / accuracy / collapse / size per split, and how to load it
    (``load_dataset(repo_id, config)``). ``config_names`` (task -> config) defaults to the task names.

    Example:
        >>> summary = {"task": "sst2", "task_type": "classification", "settings": {}, "v_information":
        ...            {"validation": 0.41}, "accuracy": {"validation": 0.9}, "collapsed": {"validation": False},
        ...            "num_examples": {"validation": 872}}
        >>> card = render_pvi_dataset_card({"sst2": summary}, "me/glue-pvi")
        >>> card.data.pvi_annotations["sst2"]["v_information"]
        {'validation': 0.41}
    """
    config_names = dict(config_names or {})
    rows, records = [], {}
    for task in sorted(summaries):
        summary = summaries[task]
        settings = summary.get("settings") or {}
        config = config_names.get(task, task)
        records[task] = _card_record(summary, config)
        for key, value in dict((sources or {}).get(task) or {}).items():
            records[task][key] = value
        folds = settings.get("folds")
        heldout = settings.get("heldout", "–")
        splits = [
            {
                "name": split,
                "num_examples": summary.get("num_examples", {}).get(split, "–"),
                "v_information": _fmt(value),
                "accuracy": _fmt(summary.get("accuracy", {}).get(split)),
                "collapsed": bool(summary.get("collapsed", {}).get(split, False)),
            }
            for split, value in summary["v_information"].items()
        ]
        rows.append(
            {
                "task": task,
                "config_name": config,
                "task_type": summary.get("task_type", "–"),
                "model": public_value(settings.get("model", "–")),
                "finetune": settings.get("finetune", "–"),
                "epochs": settings.get("epochs", "–"),
                "null": settings.get("null", "–"),
                "seed": settings.get("seed", "–"),
                "heldout_text": f"{heldout} ({folds} folds)" if folds else heldout,
                "library_version": summary.get("library_version", "–"),
                "splits": splits,
            }
        )
    pretty_name = pretty_name or f"PVI annotations: {repo_id.split('/')[-1]}"
    licences = sorted({str(r["license"]) for r in records.values() if r.get("license")})
    types = [str(r.get("task_type")) for r in records.values()]
    extra: dict[str, Any] = {
        "task_categories": sorted({_TASK_CATEGORIES[t] for t in types if t in _TASK_CATEGORIES}) or None,
        "task_ids": sorted({_TASK_IDS[t] for t in types if t in _TASK_IDS}) or None,
        "source_datasets": sorted({str(r["source_dataset"]) for r in records.values() if r.get("source_dataset")})
        or None,
        "license": (licences[0] if len(licences) == 1 else licences) or None,
    }
    card_data = DatasetCardData(
        pretty_name=pretty_name, tags=["pvi", "v-information", "hf-taskgroup"], pvi_annotations=records,
        **{k: v for k, v in extra.items() if v is not None},
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(_template_path(CARD_TEMPLATE)),
        tasks=rows,
        repo_id=repo_id,
        pretty_name=pretty_name,
        licenses=[(t, records[t].get("license") or "not recorded") for t in sorted(records)],
        bibtex=PVI_BIBTEX,
    )


# --------------------------------------------------------------------------------------- remote state
@dataclass
class _RemoteRepo:
    """What a dataset repo holds before the push: head sha, card, and per config its splits and columns."""

    repo_id: str
    sha: str | None = None  # None: the repo does not exist
    card: DatasetCard | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, list[str] | None] = field(default_factory=dict)  # None: unknown (no dataset_info)


def _config_splits(config: Mapping[str, Any]) -> list[str]:
    data_files = config.get("data_files")
    if isinstance(data_files, list) and data_files and all(isinstance(d, dict) for d in data_files):
        return [d["split"] for d in data_files]
    return ["train"]  # a plain pattern or list of patterns is the train split


def _remote_state(api: HfApi, repo_id: str, token: str | None) -> _RemoteRepo:
    state = _RemoteRepo(repo_id)
    try:
        state.sha = api.dataset_info(repo_id).sha
    except RepositoryNotFoundError:
        return state
    try:
        readme = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=state.sha, token=token)
    except EntryNotFoundError:
        return state
    state.card = DatasetCard.load(readme, repo_type="dataset")
    infos = state.card.data.get("dataset_info") or []
    infos = [infos] if isinstance(infos, dict) else infos
    features = {info.get("config_name", "default"): info.get("features") for info in infos}
    for config in state.card.data.get("configs") or []:
        name = config.get("config_name", "default")
        state.splits[name] = _config_splits(config)
        feats = features.get(name)
        state.columns[name] = [f["name"] for f in feats] if isinstance(feats, list) else None
    return state


def _with_remote_splits(
    local: DatasetDict, state: _RemoteRepo, config: str, token: str | None
) -> DatasetDict:
    """``local`` plus the remote splits of ``config`` it lacks, cast to the local features (PVI columns may be null)."""
    missing = [s for s in state.splits.get(config, []) if s not in local]
    if not missing:
        return local
    merged = dict(local)
    features = next(iter(local.values())).features
    for split in missing:
        remote: Dataset = load_dataset(state.repo_id, config, split=split, revision=state.sha, token=token)
        extra = [c for c in remote.column_names if c not in features]
        if extra:
            raise ValueError(
                f"Remote split {split!r} of config {config!r} in {state.repo_id} has columns {extra} that the local "
                "PVI data lacks; pushing would drop them. Add the split locally or remove the columns first."
            )
        for column in features:
            if column not in remote.column_names:
                remote = remote.add_column(column, [None] * len(remote))
        merged[split] = remote.select_columns(list(features)).cast(features)
        logger.info("Keeping remote split %r of %s/%s (absent locally)", split, state.repo_id, config)
    return DatasetDict(merged)


# --------------------------------------------------------------------------------------- push
def _preflight(
    artifacts: Mapping[str, tuple[DatasetDict, dict]],
    targets: Mapping[str, tuple[str, str]],
    states: Mapping[str, _RemoteRepo],
    overwrite: bool,
    unchanged: Sequence[str] = (),
) -> None:
    """Refuse, before any upload, pushes that would replace PVI values (unless ``overwrite``) or drop columns.

    A config whose columns the card does not list is assumed to hold PVI values. Tasks in ``unchanged`` (the
    repo already holds exactly their local data) are no conflict: they are not pushed again.
    """
    conflicts, dropped = [], []
    for task, (repo, config) in targets.items():
        state = states[repo]
        if config not in state.splits or task in unchanged:
            continue
        columns = state.columns.get(config)
        if columns is None or "pvi" in columns:
            conflicts.append(f"task {task!r} -> config {config!r} of dataset repo {repo!r}")
        local = artifacts[task][0]
        local_columns = next(iter(local.values())).column_names
        kept = [s for s in state.splits[config] if s not in local]
        extra = [c for c in columns or [] if c not in local_columns]
        if kept and extra:
            dropped.append(
                f"config {config!r} of {repo!r} keeps remote splits {kept} whose columns {extra} "
                f"the local data of task {task!r} lacks"
            )
    if conflicts and not overwrite:
        raise PVIConfigExistsError(
            f"Refusing to push: these configs already have a 'pvi' column: {'; '.join(conflicts)}. Nothing was "
            "uploaded. Pass overwrite=True (--overwrite) to replace their PVI values (remote splits missing locally "
            "are kept), or push to another repo id."
        )
    if dropped:
        raise PVIConfigExistsError(
            f"Refusing to push, columns would be dropped: {'; '.join(dropped)}. Nothing was uploaded. Add those "
            "splits to the local PVI data or push to another repo id."
        )


def content_fingerprint(dataset: DatasetDict) -> str:
    """A fingerprint of a task's local PVI data: the rows of every split (recorded in the card, so that pushing
    the same data again is recognised and skipped)."""
    return stable_hash({split: dataset_content_hash(ds) for split, ds in sorted(dataset.items())})


def _unchanged_tasks(
    artifacts: Mapping[str, tuple[DatasetDict, dict]],
    targets: Mapping[str, tuple[str, str]],
    states: Mapping[str, _RemoteRepo],
    fingerprints: Mapping[str, str],
) -> list[str]:
    """Tasks whose config in the target repo was pushed from exactly this local data (the card's recorded
    ``content_fingerprint`` matches, and the config still exists with every local split)."""
    same = []
    for task, (repo, config) in targets.items():
        state = states[repo]
        if state.card is None or config not in state.splits:
            continue
        record = (state.card.data.to_dict().get("pvi_annotations") or {}).get(task) or {}
        if (record.get("config_name") == config and record.get("content_fingerprint") == fingerprints[task]
                and set(artifacts[task][0]) <= set(state.splits[config])):
            same.append(task)
    return same


def _rerun_call(
    pvi_dir: Path,
    repo_id: str,
    tasks: list[str],
    one_repo_per_task: bool,
    overwrite: bool,
    private: bool | None,
    commit_message: str | None,
) -> str:
    args = [repr(str(pvi_dir)), repr(repo_id), f"tasks={tasks!r}"]
    if one_repo_per_task:
        args.append("one_repo_per_task=True")
    if overwrite:
        args.append("overwrite=True")
    if private is not None:
        args.append(f"private={private!r}")
    if commit_message is not None:
        args.append(f"commit_message={commit_message!r}")
    return f"from hf_taskgroup.publishing.pvi_dataset import push_pvi_datasets; push_pvi_datasets({', '.join(args)})"


def push_pvi_datasets(
    pvi_dir: str | Path,
    repo_id: str,
    *,
    tasks: Sequence[str] | None = None,
    one_repo_per_task: bool = False,
    overwrite: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    suite: Any = None,
) -> dict[str, str]:
    """Push PVI-annotated datasets and their dataset card; return task -> ``"repo_id@commit_sha"``.

    ``suite`` (the ``TaskSuite`` the PVI was computed on) gives the card each task's licence and source dataset.

    Layout: one dataset repo ``repo_id`` with one config per task (config name = task name), or with
    ``one_repo_per_task=True`` one repo ``f"{repo_id}-{task}"`` per task (config ``default``). Each task
    is two commits: the data (``DatasetDict.push_to_hub``), then the card (which keeps the
    ``configs``/``dataset_info`` YAML written by ``datasets`` and records every task in the repo).
    The returned sha is the card commit: ``load_dataset(repo, task, revision=sha)`` reproduces it.

    Pushing is idempotent: a task whose config already holds exactly its local data (the card records a
    ``content_fingerprint`` of the rows) is not pushed again, and its ref is the repo's current head. Raises
    :class:`PVIConfigExistsError` (before uploading anything) when a target config already has *other*
    ``pvi`` values and ``overwrite`` is False, and :class:`PVIPushError` when a push fails part-way.

    Example:
        >>> push_pvi_datasets("outputs/pvi", "me/glue-pvi", tasks=["sst2", "rte"])  # doctest: +SKIP
        {'rte': 'me/glue-pvi@3f1c...', 'sst2': 'me/glue-pvi@9ab2...'}
    """
    pvi_dir = Path(pvi_dir)
    artifacts = load_pvi_artifacts(pvi_dir, tasks)
    order = list(artifacts)
    targets = {t: (f"{repo_id}-{t}", "default") if one_repo_per_task else (repo_id, t) for t in order}
    api = HfApi(token=token)
    pushed: dict[str, str] = {}
    current, data_landed = None, False
    try:
        states = {
            repo: _remote_state(api, repo, token) for repo in dict.fromkeys(r for r, _ in targets.values())
        }
        fingerprints = {task: content_fingerprint(artifacts[task][0]) for task in order}
        unchanged = _unchanged_tasks(artifacts, targets, states, fingerprints)
        _preflight(artifacts, targets, states, overwrite, unchanged)
        heads = {repo: state.sha for repo, state in states.items()}  # the unchanged tasks' refs: before this push
        for task in order:
            current, data_landed = task, False
            repo, config = targets[task]
            state = states[repo]
            if task in unchanged:  # the repo holds exactly this data already: nothing to push
                pushed[task] = f"{repo}@{heads[repo]}"
                logger.info("PVI data of task %r is already on the Hub, unchanged: %s", task, pushed[task])
                continue
            dataset, summary = artifacts[task]
            summary = {**summary, "content_fingerprint": fingerprints[task]}
            api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
            dataset = _with_remote_splits(dataset, state, config, token)
            dataset.push_to_hub(
                repo,
                config_name=config,
                token=token,
                private=private,
                commit_message=commit_message or f"Add PVI annotations for task {task}",
            )
            data_landed = True
            source = task_sources(suite, [task]) if suite is not None and task in suite.task_names else {}
            sha = _push_card(api, repo, {task: (summary, config)}, token, sources=source)
            state.sha = sha
            pushed[task] = f"{repo}@{sha}"
            logger.info("Pushed PVI data of task %r to %s", task, pushed[task])
    except PVIConfigExistsError:
        raise
    except Exception as err:  # any failure (HTTP, network, disk): report progress, re-raise with the cause
        not_pushed = [t for t in order if t not in pushed]
        rerun = _rerun_call(
            pvi_dir, repo_id, not_pushed, one_repo_per_task, overwrite or data_landed, private, commit_message
        )
        done = ", ".join(f"{t} -> {ref}" for t, ref in pushed.items()) or "none"
        where = f"on task {current!r}" if current else "while reading the remote repos (nothing was uploaded)"
        partial = " (its data landed but its card was not updated)" if data_landed else ""
        cause = " ".join(str(err).split())
        raise PVIPushError(
            f"Pushing PVI datasets to the Hub dataset repo {repo_id!r} failed {where}{partial}: "
            f"{type(err).__name__}: {cause}. Pushed: {done}. Not pushed: {', '.join(not_pushed)}. Local artifacts in "
            f"{pvi_dir} are untouched. Re-run for the rest with (add token=... if you passed one): {rerun}",
            pushed,
            not_pushed,
            rerun,
        ) from err
    return pushed


def _push_card(api: HfApi, repo_id: str, new: Mapping[str, tuple[dict, str]], token: str | None,
               sources: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Re-render the repo's card with the tasks already recorded there plus ``new`` (task -> (summary, config))."""
    state = _remote_state(api, repo_id, token)  # fresh: datasets just rewrote configs/dataset_info
    remote = state.card.data.to_dict() if state.card is not None else {}
    summaries: dict[str, dict] = {}
    configs: dict[str, str] = {}
    known: dict[str, dict[str, str]] = {}
    for task, record in (remote.get("pvi_annotations") or {}).items():
        if record.get("config_name") in state.splits:  # only tasks whose config still exists
            summaries[task], configs[task] = record, record["config_name"]
            known[task] = {k: record[k] for k in ("license", "source_dataset") if record.get(k)}
    for task, (summary, config) in new.items():
        summaries[task], configs[task] = summary, config
    card = render_pvi_dataset_card(
        summaries, repo_id, pretty_name=remote.get("pretty_name"), config_names=configs,
        sources={**known, **dict(sources or {})},
    )
    ours = ("pretty_name", "tags", "pvi_annotations", "license", "source_datasets", "task_categories", "task_ids")
    for key, value in remote.items():  # keep configs, dataset_info, ... written by others
        if key not in ours or (key in ("license", "source_datasets", "task_categories", "task_ids")
                               and card.data.get(key) is None):
            card.data[key] = value
    card.data["tags"] = list(dict.fromkeys([*(remote.get("tags") or []), *card.data["tags"]]))
    info = api.upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"Update PVI dataset card ({', '.join(new)})",
    )
    return info.oid
