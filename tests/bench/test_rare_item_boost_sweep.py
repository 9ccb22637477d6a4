"""The rare-item sweep's ranking and its recommended-strength rule."""

from __future__ import annotations

import numpy as np

from bench.quality.data import PredictionPoint
from bench.quality.rare_item_boost import lifted_rankings, recommended_strength
from schemas.events import Event


def _point(exclude: set[str]) -> PredictionPoint:
    target = Event("u", "c", "rating", 10, 3.0, "", "e1")
    return PredictionPoint("u", target, (), frozenset(exclude), ())


def test_lift_reorders_and_exclusions_still_hold() -> None:
    items = ["a", "b", "c", "d"]
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]], np.float32)
    lift = np.array([0.0, 0.0, 2.5, 0.0], np.float32)
    points = [_point(set()), _point({"a", "c"})]
    assert lifted_rankings(scores, np.zeros(4, np.float32), points, items, 3) == [["a", "b", "c"], ["b", "d"]]
    lifted = lifted_rankings(scores, lift, points, items, 3)
    assert lifted[0] == ["c", "a", "b"]
    # An excluded item stays out however much it is lifted.
    assert lifted[1] == ["b", "d"]


def _row(strength: float, validation_ndcg: float) -> dict:
    return {"strength": strength, "validation": {"ndcg@10": {"mean": validation_ndcg, "std": 0.0}}}


def test_recommended_strength_is_the_largest_within_the_validation_budget() -> None:
    rows = [_row(0.0, 0.100), _row(0.5, 0.101), _row(1.0, 0.0985), _row(1.5, 0.0979), _row(2.0, 0.099)]
    # 2% of 0.100: 0.098 is the floor; 1.5 falls below it, 2.0 is back above it.
    assert recommended_strength(rows) == 2.0
    assert recommended_strength(rows[:4]) == 1.0
    assert recommended_strength(rows, max_cost=0.0) == 0.5
