"""Most-popular baseline: training-event counts, the same code as the demo's baseline."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.quality import FitInfo
from bench.quality.data import LeaveOneOutSplit, PredictionPoint
from trainer.metrics import items_by_popularity, popularity_ranking


class Popularity:
    """Ranks every unseen item by its number of training interactions (ties by item id)."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self._ranked: list[str] = []

    def fit(self, split: LeaveOneOutSplit, seed: int) -> FitInfo:
        del seed  # deterministic
        started = time.perf_counter()
        counts = {item: split.train_item_counts.get(item, 0) for item in split.item_ids}
        self._ranked = items_by_popularity(counts)
        return FitInfo(train_s=time.perf_counter() - started, params=self.params)

    def rank(self, points: Sequence[PredictionPoint], k: int = 20) -> list[list[str]]:
        return [popularity_ranking(self._ranked, p.exclude, k) for p in points]

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def params(self) -> int:
        return len(self._ranked)  # one count per item
