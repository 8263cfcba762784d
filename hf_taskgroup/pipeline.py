"""The main job: task suite -> PVI -> grouping -> grouped and single-task models -> evaluation -> report
-> model cards -> (optionally) the Hub.

Every stage writes its artifacts atomically under one output folder, each sealed with a manifest (sizes,
sha256, the fingerprint of its inputs: data content, tokenizer, model, settings; see
:mod:`hf_taskgroup.artifacts`), and is skipped on re-run when its artifacts verify with the same inputs, so a
killed run resumes where it stopped and a changed input recomputes what depends on it (docs/reliability.md)::

    <output_dir>/
      config.json                     the run's configuration
      pvi/<task>/dataset, summary.json   PVI-annotated data per task (stage "pvi")
      affinity/<kind>.json             collected affinity matrices (transfer_gain, tag)
      cache/evaluator/                 trainings of search methods (exhaustive, affinity_search, surrogate)
      cache/<method>/                  models trained by task_embedding / grad_estimate themselves
      groupings/<method>.json          one Grouping per method (stage "group")
      runs/<group>/seed<k>.json        per-task scores (+ per-example outputs) of every trained group (stage "train")
      recommendation.json              the recommended grouping, per-task verdicts and intervals (stage "recommend")
      models/<method>/<group>/         the published groups' models with README.md cards ("recommended" by default)
      evaluation.json, report.md, report.json, plots/*.png

Example::

    >>> from hf_taskgroup.pipeline import PipelineConfig, run_pipeline
    >>> run_pipeline(PipelineConfig(output_dir="outputs/run"))  # the demo suite with MiniLM, frozen  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import (
    ArtifactStore,
    check_model_path,
    load_verified,
    run_input_fingerprints,
    stable_hash,
    verify_all,
)
from hf_taskgroup.config import PipelineConfig
from hf_taskgroup.data.tasks import TaskSuite
from hf_taskgroup.grouping.evaluators.base import ColdCostEvaluator
from hf_taskgroup.grouping.registry import COLLECTION_OPTIONS
from hf_taskgroup.log import progress_bar
from hf_taskgroup.report.evaluation import MethodEvaluation, evaluate_groupings, group_name
from hf_taskgroup.training.features import default_feature_cache
from hf_taskgroup.training.train import default_model_path, load_tokenizer, train_group
from hf_taskgroup.utils import atomic_write_json
from hf_taskgroup.utils import write_folder as _write_folder

logger = logging.getLogger(__name__)

__all__ = ["COLLECTION_OPTIONS", "Pipeline", "PipelineConfig", "PipelineResult", "run_pipeline"]

STAGES = ("pvi", "group", "train", "recommend", "report", "cards", "publish")
EVALUATOR_METHODS = ("exhaustive", "affinity_search", "surrogate")
AFFINITY_METHODS = ("transfer_gain", "tag")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced: evaluations per method, groupings, paths."""

    output_dir: Path
    groupings: dict[str, Any]
    evaluations: dict[str, MethodEvaluation]
    report_path: Path
    model_dirs: dict[str, Path]
    published: dict[str, str]
    timings: dict[str, float]
    recommendation: Any = None  # a hf_taskgroup.grouping.recommend.Recommendation when the stage ran


class Pipeline:
    """The stages of the main job, each resumable from its artifacts (see the module docstring).

    ``model_factory(task_infos, seed) -> MultiTaskModel`` and ``tokenizer`` let tests use tiny models.
    ``stop_after`` ends the run after the named stage (used to test resuming).
    """

    def __init__(self, config: PipelineConfig, *, suite: TaskSuite | None = None, tokenizer: Any = None,
                 model_factory: Callable[..., Any] | None = None, progress: bool = True):
        self.config = config
        self.out = Path(config.output_dir)
        self.suite = suite if suite is not None else _load_suite(config)
        self.tasks = self.suite.task_names
        self.tokenizer = tokenizer
        self.model_factory = model_factory
        self.store = ArtifactStore(self.out)  # verified reuse; ``store.reused`` goes into the report
        self._given_tokenizer = tokenizer
        self._inputs: dict[str, Any] | None = None
        self.progress = progress
        self.executor = config.make_executor()  # Ray (if chosen) starts at the first dispatched training
        self.timings: dict[str, float] = {}
        self._input_costs: dict[str, tuple[int, float]] = {}  # cost of building a method's inputs
        # checks that need the tasks and the model, before any work (the config checked the rest)
        config.check_tasks(self.tasks)
        config.check_model(tokenizer)

    # ---- set-up ---------------------------------------------------------------------------------

    def _tok(self) -> Any:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.config.model or default_model_path())
        return self.tokenizer

    def _model_label(self) -> str:
        return self.config.model or "sentence-transformers/all-MiniLM-L6-v2"

    def _input_fingerprints(self, tasks: list[str] | None = None) -> dict[str, Any]:
        """Fingerprints of the run's inputs (data of ``tasks`` or of every task, tokenizer, model)."""
        if self._inputs is None:
            self._inputs = run_input_fingerprints(self.suite, model=self.config.model, tokenizer=self._given_tokenizer,
                                                  model_factory=self.model_factory)
        data = self._inputs["data"]
        return {**self._inputs, "data": {t: data[t] for t in (tasks if tasks is not None else self.tasks)}}

    # ---- stages ---------------------------------------------------------------------------------
    def run(self, stop_after: str | None = None) -> PipelineResult | None:
        """Run the stages in order (each resumes from its artifacts); ``stop_after`` ends after that stage.

        Pooled frozen-encoder features persist under ``<output_dir>/cache/features`` during the run (unless
        the process-wide :class:`~hf_taskgroup.training.features.FeatureCache` already has a folder, e.g. from
        ``$HF_TASKGROUP_FEATURE_CACHE``), so a resumed run does not encode the tasks again.
        """
        if stop_after is not None and stop_after not in STAGES:
            raise ValueError(f"stop_after must be one of {STAGES}")
        cache = default_feature_cache()
        borrowed = cache.cache_dir is None
        if borrowed:
            cache.cache_dir = self.out / "cache" / "features"
        try:
            with self.store.collecting():  # the caches' reuses (evaluator, affinity, embeddings) go in the report
                return self._run(stop_after)
        finally:
            if borrowed:
                cache.cache_dir = None
            self.executor.close()

    def _run(self, stop_after: str | None) -> PipelineResult | None:
        if self.model_factory is None or self._given_tokenizer is None:
            check_model_path(self.config.model)  # a missing --model folder: one error naming it
        self.suite.validate()  # one clear error before any expensive work
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", {**self.config.to_dict(), "tasks": self.tasks})
        pvi = self._timed("pvi", self.stage_pvi)
        if stop_after == "pvi":
            return None
        groupings = self._timed("group", self.stage_group, pvi)
        if stop_after == "group":
            return None
        results = self._timed("train", self.stage_train, groupings)
        if stop_after == "train":
            return None
        evaluations = evaluate_groupings(groupings, results, split=self.config.eval_split)
        recommendation = None
        if self.config.recommend:
            from hf_taskgroup.grouping.recommend import stage_recommend

            recommendation = self._timed("recommend", stage_recommend, self, groupings, pvi)
            groupings = {"recommended": recommendation.grouping, **groupings}
            evaluations = {**evaluate_groupings({"recommended": recommendation.grouping}, recommendation.results,
                                                split=self.config.eval_split), **evaluations}
        if stop_after == "recommend":
            return None
        if self.config.llm is not None:  # a prompted causal LM as one more column (trains nothing)
            evaluations = {**evaluations, "llm": self._timed("llm", self.stage_llm, evaluations)}
        atomic_write_json(self.out / "evaluation.json", {m: ev.to_dict() for m, ev in evaluations.items()})
        model_dirs = self._timed("cards", self.stage_cards, groupings, evaluations, recommendation)
        published: dict[str, str] = {}
        if self.config.push_to_hub:
            published = self._timed("publish", self.stage_publish, model_dirs)
        report = self._timed("report", self.stage_report, evaluations, pvi, published, recommendation)
        return PipelineResult(self.out, groupings, evaluations, report, model_dirs, published, self.timings,
                              recommendation)

    def stage_llm(self, evaluations: Mapping[str, MethodEvaluation]) -> MethodEvaluation:
        """Score the prompted causal LM of ``config.llm`` on the evaluation split (resumable per task under
        ``<output_dir>/llm``) and compare it with the single-task models."""
        from hf_taskgroup.llm import evaluate_llm
        from hf_taskgroup.llm.evaluate import llm_method_evaluation

        results = evaluate_llm(self.suite, self.config.llm_arguments(), output_dir=self.out / "llm", progress=self.progress)
        return llm_method_evaluation(results, next(iter(evaluations.values())))

    def _card_training(self) -> dict[str, Any]:
        """The training hyperparameters the grouped models were actually trained with (for the model cards)."""
        used = self.config.train_settings(self.config.seeds[0]).to_dict()
        return {"finetune": used["finetune"], "epochs": used["num_train_epochs"], "learning_rate": used["learning_rate"],
                "batch_size": used["per_device_train_batch_size"], "max_length": used["max_length"],
                "task_sampling": used["task_sampling"], "weight_decay": used["weight_decay"],
                "warmup_steps": used["warmup_steps"], "eval_split": self.config.eval_split,
                "regression_labels": self.config.regression_labels}

    def _timed(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.perf_counter() - start

    def stage_pvi(self) -> dict[str, Any]:
        """PVI for every task (resumes per task; see :func:`hf_taskgroup.pvi.compute_pvi`)."""
        from hf_taskgroup.pvi import compute_pvi

        cfg = self.config
        factory = None
        if self.model_factory is not None:
            factory = _SeededFactory(self.model_factory, cfg.seeds[0])
        results = compute_pvi(
            self.suite, settings=cfg.pvi_settings(), tokenizer=self._tok(), null=cfg.pvi_null,
            heldout=cfg.pvi_heldout, folds=cfg.pvi_folds, splits=list(cfg.pvi_splits), smoothing=cfg.pvi_smoothing,
            output_dir=self.out / "pvi", model_factory=factory, progress=self.progress, executor=self.executor,
        )
        self.store.reused += [f"pvi/{t}" for t, r in results.items() if getattr(r, "resumed", False)]
        return results

    def _pvi_values(self, pvi: Mapping[str, Any]) -> dict[str, np.ndarray]:
        split = self.config.pvi_split
        values = {}
        for task, res in pvi.items():
            if split not in res.scores:
                raise ValueError(f"task {task!r}: PVI was not computed on split {split!r} (have {sorted(res.scores)})")
            v = np.asarray(res.scores[split].pvi, dtype=float)
            values[task] = v[np.isfinite(v)]
        return values

    def stage_group(self, pvi: Mapping[str, Any]) -> dict[str, Any]:
        """One Grouping per method, written to ``groupings/<method>.json`` (reused when present)."""
        with self.store.collecting():  # reused cache entries (evaluator, affinity, embeddings) go in the report
            return self._group_all(pvi)

    def _group_all(self, pvi: Mapping[str, Any]) -> dict[str, Any]:
        from hf_taskgroup.grouping import Grouping, group_tasks

        out: dict[str, Any] = {}
        for method in progress_bar(self.config.methods, desc="Grouping", unit="method", progress=self.progress):
            path = self.out / "groupings" / f"{method}.json"
            params = self._method_params(method)
            identity = {"method": method, "params": params, "options": self.config.method_options.get(method, {}),
                        "tasks": self.tasks, "settings": self._settings_stamp(), "inputs": self._input_fingerprints()}
            if method in EVALUATOR_METHODS and self.config.evaluator_objective != "loss":
                identity["evaluator_objective"] = self.config.evaluator_objective
            stamp = _stamp(identity)
            existing = load_verified(self.store, path, stamp, Grouping.from_json)
            if existing is not None:
                out[method] = existing
                continue
            inputs = self._method_inputs(method, pvi)
            grouping = group_tasks(method, self.tasks, **inputs, **params)
            if isinstance(inputs.get("evaluator"), ColdCostEvaluator):  # charge as if the cache were cold
                rec = inputs["evaluator"]
                grouping.cost.trainings = rec.cold_trainings
                grouping.cost.seconds += rec.cold_seconds() - rec.real_seconds()
            trainings, seconds = self._input_costs.pop(method, (0, 0.0))
            grouping.cost.trainings += trainings
            grouping.cost.seconds += seconds
            if method == "pvi":  # the grouping itself is cheap; what it costs is the PVI stage
                grouping.cost.trainings += self._pvi_trainings()
                grouping.cost.seconds += sum(float(r.summary.get("seconds") or 0.0) for r in pvi.values())
                grouping.cost.examples += sum(sum((r.summary.get("num_examples") or {}).values()) for r in pvi.values())
            grouping.provenance["pipeline_stamp"] = stamp
            self.store.unseal(path)
            grouping.to_json(path)
            self.store.seal(path, fingerprint=stamp)
            out[method] = grouping
        return out

    def _pvi_trainings(self) -> int:
        per_task = 1 if self.config.pvi_null == "analytic" else 2
        folds = self.config.pvi_folds if self.config.pvi_heldout == "kfold" else 1
        # k-fold trains one pair per fold plus one pair on all of train for dev/test
        return len(self.tasks) * per_task * (folds + 1 if folds > 1 else 1)

    def _settings_stamp(self) -> dict[str, Any]:
        cfg = self.config
        # keys keep their pre-0.2 names so run folders written before the config spine still resume
        names = {"epochs": "num_train_epochs", "pvi_epochs": "pvi_num_train_epochs"}
        return {k: getattr(cfg, names.get(k, k)) for k in (
            "model", "finetune", "epochs", "learning_rate", "batch_size", "pooling", "trunk_hidden_sizes", "max_length",
            "pvi_null", "pvi_heldout", "pvi_split", "pvi_epochs", "pvi_learning_rate", "pvi_keep_collapsed_single")} | (
            {"trainable_layers": cfg.trainable_layers} if cfg.finetune == "partial" else {}) | (
            # raw labels were the only behaviour before the knob: folders written then keep resuming under raw
            {"regression_labels": cfg.regression_labels} if cfg.regression_labels != "raw" else {})

    def _method_params(self, method: str) -> dict[str, Any]:

        from hf_taskgroup.grouping.registry import method_config_class

        params = dict(self.config.method_options.get(method, {}))
        for option in COLLECTION_OPTIONS:  # pipeline-level options of the affinity collection, read by _method_inputs
            params.pop(option, None)
        accepted = {f.name for f in dataclasses.fields(method_config_class(method))}
        for name in ("num_groups", "max_group_size"):
            value = getattr(self.config, name)
            if value is not None and name in accepted and name not in params:
                params[name] = value
        if "seed" in accepted and "seed" not in params:
            params["seed"] = self.config.seeds[0]
        if method == "pvi":
            params.setdefault("keep_collapsed_single", self.config.pvi_keep_collapsed_single)
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ValueError(f"method {method!r} has no option(s) {unknown}; options: {sorted(accepted)}")
        return params

    def _method_inputs(self, method: str, pvi: Mapping[str, Any]) -> dict[str, Any]:
        """The method's declared inputs, built by the one input resolver (as ``hf-taskgroup group`` does)."""
        from hf_taskgroup.grouping.inputs import InputSources, resolve_inputs

        cfg = self.config
        settings = cfg.train_settings(cfg.seeds[0])
        options = dict(cfg.method_options.get(method, {}))

        def pvi_values() -> tuple[dict[str, np.ndarray], list[str]]:  # the grouping split only, never test
            collapsed = [t for t in self.tasks if (pvi[t].summary.get("collapsed") or {}).get(cfg.pvi_split)]
            return self._pvi_values(pvi), collapsed

        def affinity(kind: str) -> np.ndarray:
            from hf_taskgroup.grouping.evaluators.affinity_collection import collect_affinity

            collection = {k: options[k] for k in COLLECTION_OPTIONS[1:] if k in options}
            result = collect_affinity(self.suite, self.tasks, settings, kind=kind, tokenizer=self._tok(),
                                      output_path=self.out / "affinity" / f"{kind}.json", **collection)
            # one MTL training with collection: its whole wall time (training + lookaheads)
            self._input_costs[method] = (1, float(result.params.get("wall_seconds", result.seconds)))
            return result.matrix

        def evaluator() -> Any:
            from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator

            factory = None
            if self.model_factory is not None:
                factory = _SeededFactory(self.model_factory, cfg.seeds[0])
            return ColdCostEvaluator(make_suite_evaluator(self.suite, settings, self.out / "cache" / "evaluator",
                                                          tokenizer=self._tok(), model_factory=factory,
                                                          objective=cfg.evaluator_objective, executor=self.executor))

        def probe_factory(infos: Mapping[str, Any], *args: Any) -> Any:  # methods training their own models
            return self.model_factory(infos, cfg.seeds[0])

        sources = InputSources(tasks=list(self.tasks), pvi=pvi_values, affinity=affinity, evaluator=evaluator,
                               suite=self.suite, settings=settings, tokenizer=self._tok(),
                               model_factory=probe_factory if self.model_factory is not None else None,
                               cache_dir=self.out / "cache" / method)
        return resolve_inputs(method, sources, options)

    def stage_train(self, groupings: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
        """Train every group of every method plus every single task, for every seed (resumable per run)."""
        groups: dict[str, list[str]] = {group_name([t]): [t] for t in self.tasks}
        for grouping in groupings.values():
            for g in grouping.groups:
                groups.setdefault(group_name(g), sorted(g))
        published = self.config.published_method  # the recommendation saves the models it publishes itself
        publish = {group_name(g) for g in groupings[published].groups} if published in groupings else set()
        results: dict[str, dict[int, dict[str, Any]]] = {}
        todo = []
        for key, tasks in groups.items():
            for seed in self.config.seeds:
                keep = key in publish and seed == self.config.seeds[0]
                cached, stamp = self._cached_run(tasks, seed, keep)
                if cached is not None:
                    results.setdefault(key, {})[seed] = cached
                    continue
                todo.append((key, tasks, seed, stamp, keep))

        def store(index: int, outcome: tuple[dict[str, Any], dict[str, bytes] | None]) -> None:
            key, tasks, seed, stamp, _ = todo[index]
            results.setdefault(key, {})[seed] = self._store_run(key, tasks, seed, stamp, outcome)

        train = _TrainJob(self.suite, self.config, self._tok(), self.model_factory)
        self.executor.map(train, [(tasks, seed, keep) for _, tasks, seed, _, keep in todo], on_result=store,
                          desc="Training groups", progress=self.progress)
        return results

    def _cached_run(self, tasks: list[str], seed: int, keep_model: bool) -> tuple[dict[str, Any] | None, str]:
        """``(runs/<group>/seed<k>.json, stamp)`` when the file verifies with the same inputs (with the per-example
        outputs the recommendation needs, and the model folder when it is to be kept), else ``(None, stamp)``."""
        key = group_name(tasks)
        path = self.out / "runs" / key / f"seed{seed}.json"
        stamp = _stamp({"tasks": sorted(tasks), "seed": seed, "settings": self._settings_stamp(),
                        "inputs": self._input_fingerprints(sorted(tasks))})
        model_dir = [self.out / "runs" / key / "model"] if keep_model else []  # a published group's saved model
        data = self.store.read_json(path, fingerprint=stamp, requires=model_dir)  # verified, same inputs
        if data is not None and (self.config.pvi_split in data.get("outputs", {}) or not self.config.recommend):
            return data, stamp
        self.store.discard(path, *model_dir)
        return None, stamp

    def _store_run(self, key: str, tasks: list[str], seed: int, stamp: str,
                   outcome: tuple[dict[str, Any], dict[str, bytes] | None]) -> dict[str, Any]:
        from hf_taskgroup.publishing.models import share_encoder_weights

        res, model_files = outcome
        if model_files is not None:  # the model first: a seed file on disk means its model is complete
            _write_folder(self.out / "runs" / key / "model", model_files)
            # frozen runs: the unchanged encoder is stored once per run (runs/_shared), linked from every folder
            share_encoder_weights(self.out / "runs" / key / "model", self.out / "runs" / "_shared")
            self.store.seal(self.out / "runs" / key / "model", fingerprint=stamp)
        res["stamp"] = stamp
        res["group"] = tasks
        self.store.write_json(self.out / "runs" / key / f"seed{seed}.json", res, fingerprint=stamp)
        return res

    def train_cached(self, tasks: list[str], seed: int, *, keep_model: bool = False) -> dict[str, Any]:
        """One training of ``tasks`` with ``seed`` for the recommend stage: the cached run when it matches (see
        ``_cached_run``), else trained here and written like ``stage_train``'s runs."""
        tasks = sorted(tasks)
        cached, stamp = self._cached_run(tasks, seed, keep_model)
        if cached is not None:
            return cached
        return self._store_run(group_name(tasks), tasks, seed, stamp, self._train(tasks, seed, keep_model))

    def train_cached_many(self, jobs: list[tuple[list[str], int]]) -> list[dict[str, Any]]:
        """:meth:`train_cached` for many ``(tasks, seed)`` at once: the uncached ones are dispatched together
        through the run's executor (the recommendation's seeds and groups run side by side on Ray)."""
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        todo = []
        for i, (tasks, seed) in enumerate(jobs):
            tasks = sorted(tasks)
            cached, stamp = self._cached_run(tasks, seed, False)
            if cached is not None:
                out[i] = cached
            else:
                todo.append((i, tasks, seed, stamp))

        def store(index: int, outcome: tuple[dict[str, Any], dict[str, bytes] | None]) -> None:
            i, tasks, seed, stamp = todo[index]
            out[i] = self._store_run(group_name(tasks), tasks, seed, stamp, outcome)

        if todo:
            train = _TrainJob(self.suite, self.config, self._tok(), self.model_factory)
            self.executor.map(train, [(tasks, seed, False) for _, tasks, seed, _ in todo], on_result=store,
                              desc="Recommendation", progress=self.progress)
        return out  # type: ignore[return-value]

    def _train(self, tasks: list[str], seed: int, keep_model: bool) -> tuple[dict[str, Any], dict[str, bytes] | None]:
        return _TrainJob(self.suite, self.config, self._tok(), self.model_factory)((tasks, seed, keep_model))

    def stage_cards(self, groupings: Mapping[str, Any], evaluations: Mapping[str, MethodEvaluation],
                    recommendation: Any = None) -> dict[str, Path]:
        """Model folders with cards for the published groups: ``models/<method>/<group>/``."""
        from hf_taskgroup.grouping.recommend import card_verdicts
        from hf_taskgroup.publishing.models import build_group_card_data, write_group_model_folder

        method = self.config.published_method
        grouping = groupings[method]
        ev = evaluations[method]
        dirs = {}
        for index, group in enumerate(grouping.groups):
            key = group_name(group)
            source = self.store.require(self.out / "runs" / key / "model", action="copy for publishing")
            target = self.out / "models" / method / key
            self.store.discard(target)  # a fresh copy: nothing of an older model stays behind
            card = build_group_card_data(
                grouping=grouping, group_index=index, evaluation=ev, suite=self.suite,
                encoder=self._model_label(), training=self._card_training(),
                seeds=recommendation.seeds if method == "recommended" else self.config.seeds,
                verdicts=card_verdicts(recommendation, method, group),
                pvi_dataset_repo=f"{self.config.hub_prefix}-pvi" if self.config.push_to_hub else None,
            )
            write_group_model_folder(source, target, card)
            self.store.seal(target)
            dirs[key] = target
        return dirs

    def stage_publish(self, model_dirs: Mapping[str, Path]) -> dict[str, str]:
        """Push the PVI datasets and the published method's group models to the Hub."""
        from hf_taskgroup.publishing.models import check_group_model_push, push_group_model
        from hf_taskgroup.publishing.pvi_dataset import push_pvi_datasets

        prefix = self.config.hub_prefix
        published = {}
        verify_all([*model_dirs.values(), *(self.out / "pvi" / t / "dataset" for t in self.tasks)])  # refuse unverified
        for i, folder in enumerate(model_dirs.values()):  # refuse (before any upload) to overwrite a model repo
            check_group_model_push(folder, f"{prefix}-group{i}", overwrite=self.config.overwrite)
        pushed = push_pvi_datasets(self.out / "pvi", f"{prefix}-pvi", private=self.config.private, overwrite=self.config.overwrite, suite=self.suite)
        published["pvi dataset"] = f"{prefix}-pvi ({len(pushed)} configs)"
        for i, (key, folder) in enumerate(model_dirs.items()):
            repo = f"{prefix}-group{i}"
            sha = push_group_model(folder, repo, private=self.config.private, overwrite=self.config.overwrite)
            published[key] = f"{repo}@{sha}"
        atomic_write_json(self.out / "published.json", published)
        return published

    def stage_report(self, evaluations: Mapping[str, MethodEvaluation], pvi: Mapping[str, Any],
                     published: Mapping[str, str], recommendation: Any = None) -> Path:
        from hf_taskgroup.report.render import write_report

        config = {**self.config.to_dict(), "tasks": self.tasks, "suite_name": self.suite.name,
                  "model_label": self._model_label()}
        paths = write_report(
            self.out, evaluations, config=config, pvi_summaries={t: r.summary for t, r in pvi.items()},
            pvi_values=self._pvi_values(pvi), primary_method=self.config.published_method, published=published,
            timings=self.timings, split=self.config.eval_split, reused=self.store.reused,
            recommendation=recommendation.to_dict() if recommendation is not None else None,
        )
        return paths["report.md"]


class _SeededFactory:
    """``model_factory(infos, seed)`` with the seed fixed, as the PVI / evaluator factories want (picklable)."""

    def __init__(self, factory: Callable[..., Any], seed: int) -> None:
        self.factory, self.seed = factory, seed

    def __call__(self, infos: Mapping[str, Any], *args: Any) -> Any:
        return self.factory(infos, self.seed)


class _TrainJob:
    """One training of ``stage_train``: ``(tasks, seed, keep) -> (result, model files or None)``.

    Runs on any executor and writes nothing shared: the model of a published group is saved to a
    temporary folder and returned as ``{relative path: bytes}``, which the driver writes.
    """

    def __init__(self, suite: TaskSuite, config: PipelineConfig, tokenizer: Any,
                 model_factory: Callable[..., Any] | None) -> None:
        self.suite, self.config, self.tokenizer, self.model_factory = suite, config, tokenizer, model_factory

    def __call__(self, job: tuple[list[str], int, bool]) -> tuple[dict[str, Any], dict[str, bytes] | None]:
        import tempfile

        tasks, seed, keep = job
        model = None
        if self.model_factory is not None:
            model = self.model_factory(self.suite.subset(tasks).task_infos(), seed)
        with tempfile.TemporaryDirectory(prefix="hf_taskgroup_train_") as tmp:
            splits = (self.config.pvi_split, self.config.eval_split)  # per-example outputs: the recommendation
            res = train_group(self.suite, tasks, self.config.train_settings(seed), tokenizer=self.tokenizer,
                              model=model, eval_splits=splits, prediction_splits=splits, output_dir=Path(tmp) / "run")
            trainer = res.pop("trainer")
            if not keep:
                return res, None
            from hf_taskgroup.publishing.models import save_group_model

            folder = Path(tmp) / "model"
            save_group_model(trainer.model, self.tokenizer, folder)  # merges LoRA: the folder reloads with AutoModel
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return res, files


def _load_suite(config: PipelineConfig) -> TaskSuite:
    from hf_taskgroup.demo import DEMO_SUITE_PATH

    suite = TaskSuite.from_yaml(config.suite or DEMO_SUITE_PATH)
    return suite.subset(config.tasks) if config.tasks else suite


def _stamp(payload: Mapping[str, Any]) -> str:
    return stable_hash(payload)


def run_pipeline(config: PipelineConfig | None = None, **kwargs: Any) -> PipelineResult | None:
    """Run the whole job (see the module docstring); ``kwargs`` go to :class:`Pipeline`."""
    stop_after = kwargs.pop("stop_after", None)
    return Pipeline(config or PipelineConfig(), **kwargs).run(stop_after=stop_after)
