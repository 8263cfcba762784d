"""Model cards for grouped multi-task models: card data, YAML header, rendering, and the trainer's card.

:class:`MultiTaskModelCardData` holds what a card says; :func:`generate_model_card` renders it with the
Jinja template ``model_cards/model_card.md`` (shipped as package data) into a ``huggingface_hub.ModelCard``
whose YAML header has ``library_name``, ``tags``, ``base_model`` (only a real Hub repo id), ``datasets``,
``model-index`` (one result per task) and a ``task_groups`` block (every group, the method, its parameters).

Card generation never breaks saving: a field that cannot be filled is left out and logged as a warning
naming it; :func:`save_model_card` falls back to a minimal card if rendering itself fails.

Example::

    >>> card = generate_model_card(MultiTaskModelCardData(model_name="demo-group0", tasks=["hoc", "biosses"],
    ...     task_types={"hoc": "multilabel", "biosses": "regression"},
    ...     results={"hoc": {"metric": "f1_micro", "value": 0.71, "stl_value": 0.69}}))  # doctest: +SKIP
    >>> card.data.task_groups  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_taskgroup.publishing.pvi_dataset import _template_path, public_value
from hf_taskgroup.utils import atomic_write_text

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = "model_card.md"
BASE_TAGS = ("hf-taskgroup", "multi-task")
REPO_PLACEHOLDER = "<your-user>/<model-name>"
_REPO_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?$")
_SECRET_KEY = re.compile(r"token|secret|password|api_?key|credential", re.I)
_HUB_TASK_TYPES = {
    "classification": "text-classification",
    "multilabel": "text-classification",
    "regression": "text-classification",
    "token_classification": "token-classification",
}
_INPUT_KINDS = ("text", "pair", "words")
#: What the card says of a search's cost: counts only. Measured seconds change from run to run (load, machine), and a
#: card must be a pure function of the results and settings, so that re-publishing the same result is no change;
#: the seconds stay in the run's ``groupings/<method>.json`` and report.
CARD_COST_FIELDS = ("trainings", "examples")

METHOD_DESCRIPTIONS = {
    "pvi": "Every example of every task was scored with pointwise V-usable information (PVI; Ethayarajh, Choi & "
    "Swayamdipta, ICML 2022): how much a fine-tuned model's log-probability of the gold label beats that of a model "
    "that sees no input. Tasks whose per-example PVI distributions are not statistically different (pairwise "
    "two-sample tests with multiple-testing correction) share a group (Li, Miller, Bethard & Savova, JBI 2025).",
    "transfer_gain": "Pairwise transfer gains were measured during one multi-task run (Wang, Pan & Yu, 2024): every "
    "few steps, one optimizer step on a task alone and on each pair of tasks, then the change in each task's loss. "
    "Groups maximise the average within-group gain, solved exactly as a mixed-integer program (HiGHS).",
    "tag": "Task Affinity Grouping (Fifty et al., NeurIPS 2021): lookahead affinities (how a step on one task changes "
    "another task's loss) were averaged over training, and the groups maximising each task's best affinity were chosen "
    "by a mixed-integer program.",
    "affinity_search": "Randomized search over groupings with a learned predictor of group gain (Ayman, Mukhopadhyay "
    "& Laszka, 2023): candidate groups were trained when the predictor expected an improvement, accepted by a "
    "Metropolis rule, and the predictor was retrained as results came in, within a training budget.",
    "task_embedding": "Each task was embedded by the Fisher information of a fine-tuned model (Vu et al., EMNLP 2020); "
    "tasks with similar embeddings (cosine similarity) were clustered together.",
    "surrogate": "Random subsets of tasks were trained and a linear surrogate of each task's score as a function of "
    "the tasks it is trained with was fitted (Li, Nguyen & Zhang, TMLR 2023); its coefficients served as affinities.",
    "clustering": "The tasks were clustered (hierarchical or spectral clustering) on a task-affinity matrix.",
    "exhaustive": "Every partition of the tasks was evaluated (each group trained once, results cached) and the best "
    "one kept: exact, and affordable only for a handful of tasks.",
    "all_in_one": "Baseline: all tasks are trained together in one model.",
    "single_task": "Baseline: every task is trained alone.",
    "random": "Baseline: a random partition of the tasks.",
}

#: BibTeX of the papers behind each grouping method (the card cites the method that made this model's group).
METHOD_BIBTEX = {
    "pvi": [
        "@article{li2025pvigrouping,\n  title = {Identifying Task Groupings for Multi-Task Learning Using Pointwise "
        "V-Usable Information},\n  author = {Li, Yingya and Miller, Timothy and Bethard, Steven and Savova, Guergana},\n"
        "  journal = {Journal of Biomedical Informatics},\n  pages = {104881},\n  year = {2025},\n"
        "  doi = {10.1016/j.jbi.2025.104881},\n  eprint = {2410.12774},\n  archivePrefix = {arXiv}\n}",
        "@inproceedings{ethayarajh2022understanding,\n  title = {Understanding Dataset Difficulty with "
        "{$\\mathcal{V}$}-Usable Information},\n  author = {Ethayarajh, Kawin and Choi, Yejin and Swayamdipta, Swabha},\n"
        "  booktitle = {Proceedings of the 39th International Conference on Machine Learning},\n  series = {PMLR},\n"
        "  volume = {162},\n  pages = {5988--6008},\n  year = {2022}\n}",
    ],
    "tag": [
        "@inproceedings{fifty2021efficiently,\n  title = {Efficiently Identifying Task Groupings for Multi-Task "
        "Learning},\n  author = {Fifty, Christopher and Amid, Ehsan and Zhao, Zhe and Yu, Tianhe and Anil, Rohan and "
        "Finn, Chelsea},\n  booktitle = {Advances in Neural Information Processing Systems},\n  volume = {34},\n"
        "  year = {2021}\n}",
    ],
    "transfer_gain": [
        "@misc{wang2024principled,\n  title = {Towards Principled Task Grouping for Multi-Task Learning},\n"
        "  author = {Wang, Chenguang and Pan, Xuanhao and Yu, Tianshu},\n  year = {2024},\n  eprint = {2402.15328},\n"
        "  archivePrefix = {arXiv}\n}",
    ],
    "affinity_search": [
        "@misc{ayman2023taskgrouping,\n  title = {Task Grouping for Automated Multi-Task Machine Learning via Task "
        "Affinity Prediction},\n  author = {Ayman, Afiya and Mukhopadhyay, Ayan and Laszka, Aron},\n  year = {2023},\n"
        "  eprint = {2310.16241},\n  archivePrefix = {arXiv}\n}",
    ],
    "task_embedding": [
        "@inproceedings{vu2020exploring,\n  title = {Exploring and Predicting Transferability across {NLP} Tasks},\n"
        "  author = {Vu, Tu and Wang, Tong and Munkhdalai, Tsendsuren and Sordoni, Alessandro and Trischler, Adam and "
        "Mattarella-Micke, Andrew and Maji, Subhransu and Iyyer, Mohit},\n  booktitle = {Proceedings of the 2020 "
        "Conference on Empirical Methods in Natural Language Processing (EMNLP)},\n  pages = {7882--7926},\n"
        "  year = {2020}\n}",
    ],
    "surrogate": [
        "@article{li2023identification,\n  title = {Identification of Negative Transfers in Multitask Learning Using "
        "Surrogate Models},\n  author = {Li, Dongyue and Nguyen, Huy L. and Zhang, Hongyang R.},\n"
        "  journal = {Transactions on Machine Learning Research},\n  year = {2023}\n}",
    ],
    "grad_estimate": [
        "@misc{li2024scalable,\n  title = {Scalable Multitask Learning Using Gradient-based Estimation of Task "
        "Affinity},\n  author = {Li, Dongyue and Sharma, Aneesh and Zhang, Hongyang R.},\n  year = {2024},\n"
        "  eprint = {2409.06091},\n  archivePrefix = {arXiv}\n}",
    ],
}
#: Hub task ids of the task types; regression has no Hub task of its own and is filed under text-classification
#: (with a one-output head), which the card states.
_TASK_TYPE_WORDS = {"classification": "single-label classification", "multilabel": "multi-label classification",
                    "regression": "regression, one real-valued output", "token_classification": "token classification"}
_CORRELATION_METRICS = ("pearson", "spearman", "spearmanr", "pearsonr", "mcc", "matthews_correlation")

T = TypeVar("T")


@dataclass
class MultiTaskModelCardData:
    """What the card of one grouped multi-task model says (every field optional).

    ``grouping`` is a ``Grouping.to_dict()`` (plain dict); ``results`` maps task -> ``{"metric", "split",
    "value", "stl_value", "gain", "seeds"}``; ``training`` holds finetune mode, epochs, learning rate, seeds,
    pooling and trunk; ``plots`` are paths relative to the model folder; ``task_inputs`` maps task ->
    ``"text"`` | ``"pair"`` | ``"words"`` (for the usage examples).

    Example:
        >>> data = MultiTaskModelCardData(model_name="demo-group0", tasks=["hoc"], task_types={"hoc": "multilabel"},
        ...                               encoder_name_or_path="sentence-transformers/all-MiniLM-L6-v2")
        >>> data.resolved_base_model()
        'sentence-transformers/all-MiniLM-L6-v2'
        >>> sorted(data.to_yaml_dict())
        ['base_model', 'library_name', 'tags', 'task_groups']
    """

    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    encoder_name_or_path: str | None = None
    tasks: list[str] = field(default_factory=list)
    task_types: dict[str, str] = field(default_factory=dict)
    label_names: dict[str, list[str] | None] = field(default_factory=dict)
    task_inputs: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    grouping: dict[str, Any] | None = None
    group_index: int | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    library_version: str | None = None
    generated_from_trainer: bool = False
    task_licenses: dict[str, str] = field(default_factory=dict)
    task_datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    not_learned: dict[str, str] = field(default_factory=dict)
    pvi: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ licence, datasets, limitations
    def resolved_license(self) -> tuple[str | None, str | None]:
        """``(license, license_name)``: ``license`` if set; else the tasks' common licence; several different
        licences give ``("other", "mixed")`` (the card body lists each task's)."""
        if self.license:
            return self.license, None
        licences = sorted({str(self.task_licenses[t]) for t in self.tasks if self.task_licenses.get(t)})
        if not licences:
            return None, None
        if len(licences) == 1:
            return licences[0], None
        return "other", "mixed"

    def dataset_reference(self, task: str) -> dict[str, str]:
        """``{"type": ..., "config"?: ...}`` of a task's data in ``model-index``: its Hub dataset id, else the
        published PVI dataset repo (config = task), else the builder of its local files (``json``, ``csv``, ...;
        ``custom`` for in-memory data) with the task name as config: never a bare task name as ``type``."""
        ref = dict(self.task_datasets.get(task) or {})
        if not ref.get("type"):
            ref = {"type": "custom"}
        if not ref.get("hub"):
            ref["config"] = task  # local data: the builder names the format, the config names the task
        return {k: v for k, v in ref.items() if k in ("type", "config")}

    def negative_transfer(self) -> list[str]:
        return [t for t in self.tasks if (g := _gain(self.results.get(t) or {})) is not None and g < 0]


    # ------------------------------------------------------------------ derived values
    def resolved_base_model(self) -> str | None:
        """``base_model`` (or else the encoder) when it looks like a Hub repo id and is not a local path."""
        return hub_repo_id_or_none(self.base_model or self.encoder_name_or_path)

    def all_tags(self) -> list[str]:
        """The card's tags: the user's, the library's, ``generated_from_trainer`` and one per task."""
        tags = [*self.tags, *BASE_TAGS]
        if self.generated_from_trainer:
            tags.append("generated_from_trainer")
        tags += [str(t) for t in self.tasks]
        return [str(t) for t in dict.fromkeys(tags)]

    def this_group(self) -> list[str]:
        """The tasks of this model: the grouping's ``group_index``-th group, or ``tasks``."""
        groups = (self.grouping or {}).get("groups")
        if self.group_index is not None and groups:
            return [str(t) for t in groups[self.group_index]]
        return [str(t) for t in self.tasks]

    def eval_results(self) -> list[EvalResult]:
        """One ``EvalResult`` per task with a numeric value (a malformed result is skipped with a warning)."""
        out = [_safe(f"results[{task!r}]", lambda task=task: self._eval_result(task), None)
               for task in self.tasks or list(self.results) if task in self.results]
        return [r for r in out if r is not None]

    def _eval_result(self, task: str) -> EvalResult:
        result = self.results[task]
        value = result.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"'value' must be a number, got {value!r}")
        metric = str(result.get("metric") or "score")
        ttype = self.task_types.get(task, "")
        ref = {"type": str(result["dataset"])} if result.get("dataset") else self.dataset_reference(task)
        return EvalResult(
            task_type=_HUB_TASK_TYPES.get(ttype, "text-classification"),
            task_name=f"{task} ({_TASK_TYPE_WORDS[ttype]})" if ttype in _TASK_TYPE_WORDS else task,
            dataset_type=ref["type"], dataset_name=task, dataset_config=ref.get("config"),
            dataset_split=str(result.get("split") or "test"), metric_type=metric, metric_name=metric,
            metric_value=float(value),
        )

    def task_groups_block(self) -> dict[str, Any]:
        """The ``task_groups`` YAML block: method, parameters (local paths replaced by :func:`public_value`), every
        group, this model's group, cost (:data:`CARD_COST_FIELDS`: counts, never measured seconds)."""
        grouping = self.grouping or {}
        if grouping and not isinstance(grouping.get("groups"), list):
            raise ValueError(f"grouping['groups'] must be a list of task lists, got {grouping.get('groups')!r}")
        block: dict[str, Any] = {
            "method": grouping.get("method"),
            "parameters": public_value(_public(grouping.get("params") or {})),
            "groups": [[str(t) for t in g] for g in grouping.get("groups") or [self.this_group()]],
            "this_group": self.this_group(),
        }
        if self.group_index is not None:
            block["group_index"] = int(self.group_index)
        cost = {k: grouping["cost"][k] for k in CARD_COST_FIELDS if k in (grouping.get("cost") or {})}
        if cost:
            block["cost"] = cost
        return _plain(block)

    # ------------------------------------------------------------------ YAML
    def to_card_data(self) -> ModelCardData:
        """The ``huggingface_hub.ModelCardData`` of the YAML header (a failing field is skipped with a warning)."""
        kwargs: dict[str, Any] = {"library_name": "hf-taskgroup", "tags": _safe("tags", self.all_tags, list(BASE_TAGS))}
        base = _safe("base_model", self.resolved_base_model, None)
        if base:
            kwargs["base_model"] = base
        datasets = _safe("datasets", lambda: _dataset_ids(self.datasets), [])
        if datasets:
            kwargs["datasets"] = datasets
        if self.language:
            kwargs["language"] = self.language
        license_id, license_name = _safe("license", self.resolved_license, (None, None))
        if license_id:
            kwargs["license"] = license_id
        if license_name:
            kwargs["license_name"] = license_name
        if any(self.task_types.get(t) == "regression" for t in self.tasks):
            kwargs["tags"] = [*kwargs["tags"], "text-regression"]
        pvi = _safe("pvi", lambda: _plain(self.pvi), {})
        if pvi:
            kwargs["pvi"] = pvi
        eval_results = _safe("results", self.eval_results, [])
        if eval_results:
            kwargs["eval_results"] = eval_results
            kwargs["model_name"] = self.model_name or self.model_id or "hf-taskgroup-model"
        groups = _safe("grouping", self.task_groups_block, None)
        if groups is not None:
            kwargs["task_groups"] = groups
        return ModelCardData(**kwargs)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The YAML header as a dict (keys ``library_name``, ``tags``, ``base_model``, ``datasets``,
        ``model-index``, ``task_groups``; empty ones left out)."""
        return self.to_card_data().to_dict()


# ---------------------------------------------------------------------------------------- helpers
def hub_repo_id_or_none(value: Any) -> str | None:
    """``value`` when it looks like a Hub repo id ``owner/name`` and is not an existing local path, else None.

    >>> hub_repo_id_or_none("sentence-transformers/all-MiniLM-L6-v2"), hub_repo_id_or_none("/models/minilm")
    ('sentence-transformers/all-MiniLM-L6-v2', None)
    """
    if not isinstance(value, str) or not _REPO_ID.match(value) or ".." in value or "--" in value:
        return None
    return None if os.path.exists(value) else value


def _dataset_ids(values: Sequence[str]) -> list[str]:
    ids = []
    for value in values:
        if isinstance(value, str) and _DATASET_ID.match(value) and not os.path.exists(value):
            ids.append(value)
        else:
            logger.warning("Model card: dataset %r is not a Hub dataset id; left out of the YAML 'datasets'", value)
    return list(dict.fromkeys(ids))


def _public(params: Mapping[str, Any]) -> dict[str, Any]:
    """Method parameters without secret-looking keys (tokens never go into cards)."""
    return {str(k): v for k, v in params.items() if not _SECRET_KEY.search(str(k))}


def _plain(value: Any) -> Any:
    """Plain YAML types (numpy values converted, tuples as lists); raises on anything else."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"{type(value).__name__} cannot go into a model card")


def _safe(what: str, fn: Callable[[], T], default: T) -> T:
    """``fn()``, or ``default`` with a warning naming the card field ``what`` when it fails."""
    try:
        return fn()
    except Exception as err:  # a card field must never break saving; the warning names it
        logger.warning("Model card: could not fill %s (%s: %s); it is left out", what, type(err).__name__, err)
        return default


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def _gain(result: Mapping[str, Any]) -> float | None:
    gain = result.get("gain")
    if gain is not None:
        return float(gain)
    value, stl = result.get("value"), result.get("stl_value")
    if value is None or stl is None:
        return None
    from hf_taskgroup.training.metrics import greater_is_better

    metric = str(result.get("metric") or "")
    try:
        sign = 1.0 if greater_is_better(metric) else -1.0
    except ValueError:
        sign = 1.0
    return sign * (float(value) - float(stl))


def framework_versions(library_version: str | None = None) -> dict[str, str]:
    """Versions of hf-taskgroup (``library_version`` or the installed one) and of the libraries a model uses."""
    from hf_taskgroup import __version__

    versions = {"hf-taskgroup": library_version or __version__}
    for name in ("transformers", "torch", "peft", "datasets", "huggingface_hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------------------------------- rendering
def _example_input(kind: str, task_type: str) -> str:
    if task_type == "token_classification" or kind == "words":
        return '[["Mutations", "in", "BRCA1", "cause", "cancer", "."]]'
    if kind == "pair":
        return '[("first text", "second text")]'
    return '["A text to classify."]'


def _template_context(data: MultiTaskModelCardData, repo: str) -> dict[str, Any]:
    def tasks_rows() -> list[dict[str, Any]]:
        rows = []
        for task in data.tasks:
            labels = data.label_names.get(task)
            ttype = data.task_types.get(task, "–")
            ref = data.task_datasets.get(task) or {}
            source = ref.get("type")
            if ref.get("hub"):
                config = f" (config `{ref['config']}`)" if ref.get("config") else ""
                dataset = f"[{source}](https://huggingface.co/datasets/{source}){config}"
            else:
                dataset = f"local `{source}` files" if source and source != "custom" else "in-memory / local data"
            rows.append({
                "task": task, "type": ttype, "dataset": dataset,
                "license": data.task_licenses.get(task) or "–",
                "labels": ", ".join(f"`{x}`" for x in labels) if labels else ("(a number)" if ttype == "regression" else "–"),
                "input": {"text": "text", "pair": "text pair", "words": "words"}.get(
                    data.task_inputs.get(task, "words" if ttype == "token_classification" else "text"), "text"),
                "example": _example_input(data.task_inputs.get(task, "text"), ttype),
                "returns": {"classification": "a label name", "multilabel": "a list of label names",
                            "regression": "a float", "token_classification": "one tag per word"}.get(ttype, "predictions"),
            })
        return rows

    def grouping() -> dict[str, Any] | None:
        g = data.grouping
        if not g:
            return None
        block = data.task_groups_block()
        mean_pvi = (g.get("scores") or {}).get("mean_pvi") or {}
        method = str(block["method"])
        return {
            "method": method,
            "description": METHOD_DESCRIPTIONS.get(method, f"Grouping method `{method}`."),
            "params": [(k, v) for k, v in block["parameters"].items()],
            "groups": [{"index": i, "tasks": grp, "this": grp == block["this_group"],
                        "pvi": {t: mean_pvi[t] for t in grp if isinstance(mean_pvi.get(t), (int, float))}}
                       for i, grp in enumerate(block["groups"])],
            "cost": block.get("cost") or {},
            "num_tasks": len(g.get("tasks") or {t for grp in block["groups"] for t in grp}),
        }

    def results_rows() -> list[dict[str, Any]]:
        rows = []
        for task in data.tasks or list(data.results):
            result = data.results.get(task)
            if not result:
                continue
            gain = _gain(result)
            rows.append({
                "task": task, "metric": result.get("metric", "–"), "split": result.get("split", "test"),
                "stl": _fmt(result.get("stl_value")), "mtl": _fmt(result.get("value")),
                "gain": _fmt(gain, signed=True), "negative": gain is not None and gain < 0,
                "seeds": result.get("seeds", "–"), "verdict": result.get("verdict"),
            })
        return rows

    def plots() -> list[dict[str, str]]:
        return [{"title": Path(p).stem.replace("_", " "), "path": Path(p).as_posix()} for p in data.plots]

    training = dict(data.training)
    trunk = training.get("trunk_hidden_sizes", training.get("trunk"))
    results = _safe("results", results_rows, [])
    return {
        "title": data.model_name or data.model_id or "hf-taskgroup multi-task model",
        "repo": repo,
        "encoder": public_value(data.encoder_name_or_path or data.base_model),
        "base_model": _safe("base_model", data.resolved_base_model, None),
        "pooling": training.get("pooling"),
        "trunk": list(trunk) if trunk else [],
        "finetune": training.get("finetune"),
        "adapter": training.get("weights") == "peft-adapter",
        "tasks": _safe("tasks", tasks_rows, []),
        "grouping": _safe("grouping", grouping, None),
        "results": results,
        "negative": [r["task"] for r in results if r["negative"]],
        "not_learned": sorted(data.not_learned.items()),
        "licenses": [(t, data.task_licenses.get(t) or "not recorded") for t in data.tasks],
        "license": _safe("license", data.resolved_license, (None, None))[0],
        "regression": [t for t in data.tasks if data.task_types.get(t) == "regression"],
        "regression_labels": training.get("regression_labels"),
        "citations": _safe("citations", lambda: METHOD_BIBTEX.get(str((data.grouping or {}).get("method")), []), []),
        "plots": _safe("plots", plots, []),
        "training": [(k, public_value(v)) for k, v in _public(training).items() if v is not None],
        "versions": _safe("framework versions", lambda: framework_versions(data.library_version), {}),
    }


def generate_model_card(card_data: MultiTaskModelCardData, template_path: str | Path | None = None) -> ModelCard:
    """Render the card: YAML header from :meth:`MultiTaskModelCardData.to_card_data`, body from the template.

    Fields that cannot be filled are left out with a warning naming them; errors of the template itself raise
    (use :func:`save_model_card` for the never-fails path).

    Example::

        >>> card = generate_model_card(MultiTaskModelCardData(model_name="m", tasks=["a"]))  # doctest: +SKIP
        >>> card.data.library_name  # doctest: +SKIP
        'hf-taskgroup'
    """
    template = str(template_path) if template_path is not None else str(_template_path(MODEL_CARD_TEMPLATE))
    repo = card_data.model_id or REPO_PLACEHOLDER  # push_group_model puts the real repo id in its place
    card = ModelCard.from_template(card_data.to_card_data(), template_path=template,
                                   **_template_context(card_data, repo))
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))


def _fallback_card(card_data: MultiTaskModelCardData, error: BaseException) -> ModelCard:
    header = {"library_name": "hf-taskgroup", "tags": _safe("tags", card_data.all_tags, list(BASE_TAGS))}
    title = card_data.model_name or card_data.model_id or "hf-taskgroup multi-task model"
    tasks = ", ".join(f"`{t}`" for t in card_data.tasks) or "unknown"
    body = (f"# {title}\n\nA multi-task model (hf-taskgroup) with heads for: {tasks}.\n\n"
            f"The full model card could not be generated ({type(error).__name__}: {error}).\n")
    return ModelCard(f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n{body}")


def save_model_card(card_data: MultiTaskModelCardData, output_dir: str | Path,
                    template_path: str | Path | None = None) -> Path:
    """Write ``README.md`` into ``output_dir`` (atomically). Never raises because of the card's content: a
    rendering failure is logged as a warning and a minimal card (YAML header, title, tasks) is written."""
    path = Path(output_dir) / "README.md"
    try:
        card = generate_model_card(card_data, template_path)
    except Exception as err:  # saving a model must not fail because of its card; the warning says why
        logger.warning("Model card for %s could not be rendered (%s: %s); writing a minimal card",
                       output_dir, type(err).__name__, err)
        card = _fallback_card(card_data, err)
    atomic_write_text(path, str(card))
    return path


# ---------------------------------------------------------------------------------------- defaults from models
def card_data_from_config(config: Any) -> MultiTaskModelCardData:
    """Card data filled from a ``MultiTaskConfig``: tasks, types, labels, encoder, pooling, trunk, grouping."""
    tasks = list(getattr(config, "task_names", None) or (config.tasks or {}))
    infos = config.tasks or {}
    encoder = getattr(config, "encoder_name_or_path", None) or getattr(getattr(config, "encoder", None),
                                                                       "_name_or_path", None) or None
    grouping = config.task_groups
    if isinstance(grouping, list) and grouping:
        grouping = {"method": None, "groups": grouping if isinstance(grouping[0], list) else [grouping]}
    index = None
    if isinstance(grouping, dict):
        matches = [i for i, g in enumerate(grouping.get("groups") or []) if sorted(g) == sorted(tasks)]
        index = matches[0] if matches else None
    return MultiTaskModelCardData(
        encoder_name_or_path=encoder,
        tasks=tasks,
        task_types={t: infos[t]["type"] for t in tasks},
        label_names={t: (list(infos[t].get("id2label")) if infos[t].get("id2label") else None) for t in tasks},
        grouping=copy.deepcopy(grouping) if isinstance(grouping, dict) else None,
        group_index=index,
        training={"pooling": config.pooling, "trunk_hidden_sizes": list(config.trunk_hidden_sizes or [])},
    )


def merge_card_data(primary: MultiTaskModelCardData | None, defaults: MultiTaskModelCardData) -> MultiTaskModelCardData:
    """A copy of ``primary`` whose empty fields are taken from ``defaults`` (dict fields merged per key,
    ``primary`` winning)."""
    if primary is None:
        return copy.deepcopy(defaults)
    out = copy.deepcopy(primary)
    for f in fields(MultiTaskModelCardData):
        mine, theirs = getattr(out, f.name), getattr(defaults, f.name)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            setattr(out, f.name, {**copy.deepcopy(theirs), **mine})
        elif mine in (None, [], {}) and theirs not in (None, [], {}):
            setattr(out, f.name, copy.deepcopy(theirs))
    out.generated_from_trainer = primary.generated_from_trainer or defaults.generated_from_trainer
    return out


def results_from_log_history(log_history: Sequence[Mapping[str, Any]], task_types: Mapping[str, str],
                             prefixes: Sequence[str] = ("test", "eval", "validation")) -> dict[str, dict[str, Any]]:
    """Each task's latest primary metric from a trainer's ``log_history`` (keys ``<prefix>_<task>_<metric>``;
    the first prefix in ``prefixes`` that has a value wins). ``eval`` is reported as split ``validation``."""
    from hf_taskgroup.training.metrics import primary_metric

    results: dict[str, dict[str, Any]] = {}
    for task, ttype in task_types.items():
        metric = primary_metric(ttype)
        for prefix in prefixes:
            key = f"{prefix}_{task}_{metric}"
            values = [entry[key] for entry in log_history if isinstance(entry.get(key), (int, float))]
            if values:
                split = "validation" if prefix == "eval" else prefix
                results[task] = {"metric": metric, "split": split, "value": float(values[-1]),
                                 "stl_value": None, "gain": None, "seeds": 1}
                break
    return results


def write_trainer_model_card(trainer: Any, *, language: str | list[str] | None = None, license: str | None = None,
                             tags: str | list[str] | None = None, model_name: str | None = None,
                             finetuned_from: str | None = None, dataset: str | list[str] | None = None,
                             **_unused: Any) -> Path | None:
    """Build the card of a :class:`~hf_taskgroup.training.trainer.MultiTaskTrainer` run and write ``README.md`` into
    ``args.output_dir`` (main process only). ``trainer.model_card_data`` wins over what is read from the
    model config, the arguments and the last evaluation in the log history."""
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    defaults = _safe("model config", lambda: card_data_from_config(trainer.base_model_ref.config),
                     MultiTaskModelCardData())
    defaults.generated_from_trainer = True
    defaults.model_name = model_name or Path(args.output_dir).name
    defaults.model_id = args.hub_model_id
    defaults.base_model = finetuned_from
    defaults.language, defaults.license = language, license
    defaults.tags = [tags] if isinstance(tags, str) else list(tags or [])
    defaults.datasets = [dataset] if isinstance(dataset, str) else list(dataset or [])
    defaults.training.update(_safe("training", lambda: _training_from_args(args, trainer.state), {}))
    defaults.results = _safe("results", lambda: results_from_log_history(trainer.state.log_history,
                                                                         defaults.task_types), {})
    defaults.library_version = framework_versions()["hf-taskgroup"]
    if hasattr(trainer.model, "peft_config"):  # the folder holds PEFT's adapter files, not a standalone model
        defaults.training["weights"] = "peft-adapter"
    card_data = merge_card_data(getattr(trainer, "model_card_data", None), defaults)
    return save_model_card(card_data, args.output_dir)


def _training_from_args(args: Any, state: Any) -> dict[str, Any]:
    out = {
        "finetune": args.finetune,
        "epochs": float(args.num_train_epochs),
        "learning_rate": float(args.learning_rate),
        "per_device_train_batch_size": int(args.per_device_train_batch_size),
        "task_sampling": args.task_sampling,
        "regression_labels": args.regression_labels,
        "seeds": [int(args.seed)],
        "global_steps": int(getattr(state, "global_step", 0) or 0),
    }
    if args.finetune == "lora":
        out.update({"lora_r": args.lora_r, "lora_alpha": args.lora_alpha})
    return out


__all__ = ["CARD_COST_FIELDS", "METHOD_DESCRIPTIONS", "REPO_PLACEHOLDER", "MultiTaskModelCardData", "card_data_from_config", "framework_versions",
           "generate_model_card", "hub_repo_id_or_none", "merge_card_data", "results_from_log_history",
           "save_model_card", "write_trainer_model_card"]


def _register() -> None:
    from hf_taskgroup.training.trainer import set_model_card_writer

    set_model_card_writer(write_trainer_model_card)


_register()  # MultiTaskTrainer.create_model_card renders through this module (the trainer never imports it)
