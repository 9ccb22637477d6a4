"""Item-to-item co-occurrence recommender (a tuned neighbourhood baseline).

Training: for every user, every pair of training events at most
`neighbourhood` positions apart in the user's time-ordered history counts as one
co-occurrence of the two items (both directions; `neighbourhood=None` means the
whole history). The counts C are normalised into similarities

    S[i, j] = C[i, j] / (n_i ** alpha * n_j ** (1 - alpha))

where n_i is item i's number of training interactions: alpha = 0.5 is cosine,
alpha = 1 is the conditional frequency P(j | i), which favours popular
candidates.

Scoring: a point's input window (oldest first) becomes a profile where the
event r steps before the most recent one weighs 0.5 ** (r / half_life)
(`half_life=None`: all equal); a candidate's score is the profile-weighted sum
of its similarities to the window's items. Ties (e.g. a user with an empty
window) fall back to popularity.

The matrix is dense (items x items), which suits catalogs of a few thousand
items such as MovieLens-100k.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.quality import FitInfo, model_config, top_k_from_scores
from bench.quality.data import LeaveOneOutSplit, PredictionPoint

DEFAULTS: dict[str, Any] = {"neighbourhood": None, "half_life": None, "alpha": 0.5}
_FLUSH_KEYS = 4_000_000


class ItemCooccurrence:
    """Recency-weighted item-to-item co-occurrence scores."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = model_config("item_cooccurrence", DEFAULTS, config)
        self._item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._similarity = np.zeros((0, 0), dtype=np.float32)
        self._popularity = np.zeros(0)

    def fit(self, split: LeaveOneOutSplit, seed: int) -> FitInfo:
        del seed  # deterministic
        started = time.perf_counter()
        self._item_ids = list(split.item_ids)
        self._index = {item: i for i, item in enumerate(self._item_ids)}
        n = len(self._item_ids)
        neighbourhood = self.config["neighbourhood"]
        counts = np.zeros(n * n, dtype=np.float64)
        pending: list[np.ndarray] = []
        pending_size = 0
        for user in split.users:
            seq = np.array([self._index[e.item_id] for e in split.train[user]], dtype=np.int64)
            reach = len(seq) - 1 if neighbourhood is None else min(int(neighbourhood), len(seq) - 1)
            for d in range(1, reach + 1):
                a, b = seq[:-d], seq[d:]
                pending.append(a * n + b)
                pending.append(b * n + a)
                pending_size += 2 * a.size
            if pending_size > _FLUSH_KEYS:
                counts += np.bincount(np.concatenate(pending), minlength=n * n)
                pending, pending_size = [], 0
        if pending:
            counts += np.bincount(np.concatenate(pending), minlength=n * n)
        cooc = counts.reshape(n, n)
        np.fill_diagonal(cooc, 0.0)
        item_counts = np.array([split.train_item_counts.get(i, 0) for i in self._item_ids], dtype=np.float64)
        safe = np.maximum(item_counts, 1.0)
        alpha = float(self.config["alpha"])
        similarity = cooc / (safe[:, None] ** alpha) / (safe[None, :] ** (1.0 - alpha))
        self._similarity = similarity.astype(np.float32)
        self._popularity = item_counts
        return FitInfo(train_s=time.perf_counter() - started, params=self.params)

    def _profile(self, points: Sequence[PredictionPoint]) -> np.ndarray:
        half_life = self.config["half_life"]
        profile = np.zeros((len(points), len(self._item_ids)), dtype=np.float32)
        for row, point in enumerate(points):
            m = len(point.window)
            for position, event in enumerate(point.window):
                index = self._index.get(event.item_id)
                if index is None:
                    continue
                age = m - 1 - position
                profile[row, index] += 1.0 if half_life is None else 0.5 ** (age / float(half_life))
        return profile

    def scores(self, points: Sequence[PredictionPoint]) -> np.ndarray:
        """[len(points), n_items] scores, before exclusions."""
        return self._profile(points) @ self._similarity

    def rank(self, points: Sequence[PredictionPoint], k: int = 20) -> list[list[str]]:
        rankings: list[list[str]] = []
        for start in range(0, len(points), 512):
            batch = points[start : start + 512]
            rankings.extend(top_k_from_scores(self.scores(batch), self._item_ids, batch, k, self._popularity))
        return rankings

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def params(self) -> int:
        return int(np.count_nonzero(self._similarity))  # stored item-pair similarities
