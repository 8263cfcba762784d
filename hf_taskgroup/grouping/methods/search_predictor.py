"""Group features and the gain predictor of ``affinity_search`` (arXiv 2310.16241, B.2-B.3).

Features of a group G (B.2, ``NN/school_QR.py``):

- ``pairwise_improvement_average`` / ``_variance`` / ``_stddev``: mean / variance / std of the pairwise
  gains ``Change(i, j)`` over all pairs in G;
- ``group_dataset_size``: ``sum_{t in G} n_t / N`` (the search script's normalisation by all N tasks);
- ``group_variance``: variance of the union of G's training targets (exact from per-task sizes, means and
  variances; without means, the size-weighted mean of the task variances);
- ``number_of_tasks``: |G|.

The paper's final predictor uses five of them (:data:`DEFAULT_FEATURES`). The predictor is the paper's
Keras MLP rebuilt in torch: hidden layers [57, 23, 18, 53] with sigmoid, linear output, Adam with
lr 0.0016620815899787528, MSE, batch 16, trained from scratch at every refit on standardised features.
(The paper's 20% validation split with best-epoch checkpointing is not used: the data are a few dozen rows.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["DEFAULT_FEATURES", "FEATURE_NAMES", "GainPredictor", "GroupFeaturizer"]

FEATURE_NAMES = (
    "pairwise_improvement_average",
    "pairwise_improvement_variance",
    "pairwise_improvement_stddev",
    "group_dataset_size",
    "group_variance",
    "number_of_tasks",
)
#: The final feature set of the paper (B.2).
DEFAULT_FEATURES = (
    "pairwise_improvement_average",
    "group_dataset_size",
    "pairwise_improvement_variance",
    "group_variance",
    "number_of_tasks",
)
HIDDEN = (57, 23, 18, 53)
LEARNING_RATE = 0.0016620815899787528


class GroupFeaturizer:
    """Compute the B.2 group features over a fixed task list and pairwise-gain matrix.

    Example:
        >>> gains = np.array([[0, .2, -.1], [.2, 0, 0], [-.1, 0, 0]])
        >>> f = GroupFeaturizer(["a", "b", "c"], gains, ("pairwise_improvement_average", "number_of_tasks"))
        >>> f.matrix([["a", "b"], ["a", "b", "c"]]).round(3).tolist()
        [[0.2, 2.0], [0.033, 3.0]]
    """

    def __init__(
        self,
        tasks: Sequence[str],
        pairwise_gains: np.ndarray,
        features: Sequence[str] = DEFAULT_FEATURES,
        task_sizes: Mapping[str, float] | None = None,
        task_target_variance: Mapping[str, float] | None = None,
        task_target_mean: Mapping[str, float] | None = None,
    ) -> None:
        self.index = {t: i for i, t in enumerate(tasks)}
        self.gains = np.asarray(pairwise_gains, dtype=float)
        unknown = [f for f in features if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; choose from {FEATURE_NAMES}")
        self.features = tuple(features)
        for name, mapping in (("task_sizes", task_sizes), ("task_target_variance", task_target_variance),
                              ("task_target_mean", task_target_mean)):
            if mapping is not None:
                missing = [t for t in tasks if t not in mapping]
                if missing:
                    raise ValueError(f"{name} has no entry for task(s) {missing}")
        self.sizes = {t: float(task_sizes[t]) if task_sizes is not None else 1.0 for t in tasks}
        self.variance = {t: float(task_target_variance[t]) if task_target_variance is not None else 0.0
                         for t in tasks}
        self.mean = None if task_target_mean is None else {t: float(task_target_mean[t]) for t in tasks}

    def pair_values(self, group: Sequence[str]) -> np.ndarray:
        idx = [self.index[t] for t in group]
        return np.array([self.gains[i, j] for a, i in enumerate(idx) for j in idx[a + 1:]])

    def mean_pair_gain(self, group: Sequence[str]) -> float:
        values = self.pair_values(group)
        return float(values.mean()) if values.size else 0.0

    def vector(self, group: Sequence[str]) -> np.ndarray:
        pairs = self.pair_values(group)
        sizes = np.array([self.sizes[t] for t in group])
        variances = np.array([self.variance[t] for t in group])
        weights = sizes / sizes.sum() if sizes.sum() > 0 else np.full(len(group), 1 / len(group))
        pooled = float(weights @ variances)
        if self.mean is not None:
            means = np.array([self.mean[t] for t in group])
            pooled += float(weights @ (means - weights @ means) ** 2)
        values = {
            "pairwise_improvement_average": float(pairs.mean()) if pairs.size else 0.0,
            "pairwise_improvement_variance": float(pairs.var()) if pairs.size else 0.0,
            "pairwise_improvement_stddev": float(pairs.std()) if pairs.size else 0.0,
            "group_dataset_size": float(sizes.sum()) / len(self.index),
            "group_variance": pooled,
            "number_of_tasks": float(len(group)),
        }
        return np.array([values[f] for f in self.features], dtype=float)

    def matrix(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        return np.stack([self.vector(g) for g in groups]) if groups else np.zeros((0, len(self.features)))


class GainPredictor:
    """MLP regressor of a group's relative gain from its features (B.3), deterministic for a given seed.

    Example:
        >>> X = np.linspace(0, 1, 20)[:, None]
        >>> p = GainPredictor(epochs=200).fit(X, 0.5 * X[:, 0], seed=0)
        >>> bool(abs(p.predict(np.array([[0.5]]))[0] - 0.25) < 0.1)
        True
    """

    def __init__(self, epochs: int = 100, batch_size: int = 16, lr: float = LEARNING_RATE,
                 hidden: Sequence[int] = HIDDEN) -> None:
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.hidden = tuple(int(h) for h in hidden)
        self.fitted = False
        self._state: dict | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> GainPredictor:
        """Train from scratch on ``X`` [rows, features] and ``y`` [rows]; fewer than 2 rows leaves it unfitted."""
        import torch

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(X) < 2:
            self.fitted = False
            return self
        self._mu = X.mean(axis=0)
        self._sd = X.std(axis=0)
        self._sd[self._sd < 1e-12] = 1.0
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny model: single-threaded is fastest and bitwise reproducible
        try:
            gen = torch.Generator().manual_seed(int(seed) % (2**63))
            with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
                torch.manual_seed(int(seed) % (2**63))
                self.model = self._build(X.shape[1])
            xt = torch.tensor((X - self._mu) / self._sd, dtype=torch.float32)
            yt = torch.tensor(y, dtype=torch.float32)
            opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
            for _ in range(self.epochs):
                order = torch.randperm(len(xt), generator=gen)
                for start in range(0, len(xt), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    loss = torch.mean((self.model(xt[idx]).squeeze(-1) - yt[idx]) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(previous_threads)
        self.fitted = True
        return self

    def _build(self, num_features: int):  # -> torch.nn.Module
        import torch

        layers: list[torch.nn.Module] = []
        width = num_features
        for h in self.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.Sigmoid()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        return torch.nn.Sequential(*layers)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted gains for rows of ``X``."""
        if not self.fitted:
            raise RuntimeError("GainPredictor.predict before fit (or fit with fewer than 2 rows)")
        import torch

        with torch.no_grad():
            xt = torch.tensor((np.asarray(X, dtype=np.float64) - self._mu) / self._sd, dtype=torch.float32)
            return self.model(xt).squeeze(-1).numpy().astype(float)
