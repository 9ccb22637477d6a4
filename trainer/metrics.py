"""Ranking metrics for next-item prediction, shared by every evaluation.

The TFX Evaluator, the demo's replay over gRPC and the popularity baseline all
call `ranking_metrics`, so their numbers are comparable by construction.

Protocol: for each prediction point the model ranks all items the user has not
interacted with before that point; the held-out item(s) are the targets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

METRIC_NAMES: tuple[str, ...] = ("hr@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20")
MAX_CUTOFF = 20


def _dcg_gain(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


def point_metrics(ranked_item_ids: Sequence[str], targets: Iterable[str]) -> dict[str, float]:
    """Metrics of one prediction point.

    Args:
      ranked_item_ids: the recommended items, best first (at least MAX_CUTOFF
        long when that many candidates exist).
      targets: the item(s) the user actually touched next.

    Returns:
      METRIC_NAMES -> value in [0, 1]. HR@10 is 1 when any target is in the
      top 10; NDCG normalises by the ideal ordering of the targets; MRR@10 is
      the reciprocal rank of the first hit in the top 10; Recall@20 is the
      fraction of targets in the top 20.
    """
    target_set = set(targets)
    if not target_set:
        raise ValueError("a prediction point needs at least one target item")
    hit_ranks = [r for r, item in enumerate(ranked_item_ids[:MAX_CUTOFF], start=1) if item in target_set]

    def ndcg(cutoff: int) -> float:
        ideal = sum(_dcg_gain(r) for r in range(1, min(cutoff, len(target_set)) + 1))
        return sum(_dcg_gain(r) for r in hit_ranks if r <= cutoff) / ideal

    first_hit = hit_ranks[0] if hit_ranks else None
    return {
        "hr@10": 1.0 if first_hit is not None and first_hit <= 10 else 0.0,
        "ndcg@10": ndcg(10),
        "mrr@10": 1.0 / first_hit if first_hit is not None and first_hit <= 10 else 0.0,
        "recall@20": len(hit_ranks) / len(target_set),
        "ndcg@20": ndcg(20),
    }


def ranking_metrics(rankings: Iterable[Sequence[str]], targets: Iterable[Iterable[str]]) -> dict[str, float]:
    """Mean of `point_metrics` over prediction points.

    Args:
      rankings: per prediction point, the recommended item ids, best first.
      targets: per prediction point, the held-out item ids.

    Returns:
      METRIC_NAMES -> mean value, plus `count`, the number of points.
    """
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    count = 0
    for ranked, target in zip(rankings, targets, strict=True):
        for name, value in point_metrics(ranked, target).items():
            totals[name] += value
        count += 1
    if count == 0:
        raise ValueError("no prediction points to evaluate")
    return {**{name: total / count for name, total in totals.items()}, "count": count}


def items_by_popularity(item_counts: dict[str, int]) -> list[str]:
    """Item ids, most frequent first (ties broken by item id for determinism)."""
    return sorted(item_counts, key=lambda item: (-item_counts[item], item))


def popularity_ranking(ranked_items: Sequence[str], exclude: Iterable[str], k: int = MAX_CUTOFF) -> list[str]:
    """The most-popular baseline for one user.

    Args:
      ranked_items: all items, most popular first (`items_by_popularity`).
      exclude: items the user already interacted with.
      k: how many to return.

    Returns:
      The k most popular items the user has not interacted with.
    """
    excluded = set(exclude)
    top: list[str] = []
    for item in ranked_items:
        if item not in excluded:
            top.append(item)
            if len(top) == k:
                break
    return top
