from __future__ import annotations

import math

import pytest

from trainer.metrics import items_by_popularity, point_metrics, popularity_ranking, ranking_metrics


def test_hit_at_rank_three() -> None:
    m = point_metrics(["a", "b", "t", "c"], ["t"])
    assert m["hr@10"] == 1.0
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert m["recall@20"] == 1.0 and m["ndcg@20"] == m["ndcg@10"]


def test_hit_between_ten_and_twenty_counts_only_at_twenty() -> None:
    ranked = [f"x{i}" for i in range(14)] + ["t"]
    m = point_metrics(ranked, ["t"])
    assert (m["hr@10"], m["ndcg@10"], m["mrr@10"]) == (0.0, 0.0, 0.0)
    assert m["recall@20"] == 1.0 and m["ndcg@20"] == pytest.approx(1 / math.log2(16))


def test_miss_and_several_targets() -> None:
    assert point_metrics(["a"], ["t"]) == dict.fromkeys(["hr@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20"], 0.0)
    m = point_metrics(["t1", "a", "t2"], ["t1", "t2"])
    assert m["recall@20"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_mean_over_points_and_errors() -> None:
    m = ranking_metrics([["t"], ["a"]], [["t"], ["t"]])
    assert m["hr@10"] == 0.5 and m["count"] == 2
    with pytest.raises(ValueError):
        ranking_metrics([], [])
    with pytest.raises(ValueError):
        point_metrics(["a"], [])


def test_popularity_excludes_seen_items_and_breaks_ties_by_id() -> None:
    ranked = items_by_popularity({"a": 5, "b": 9, "c": 5, "d": 1})
    assert ranked == ["b", "a", "c", "d"]
    assert popularity_ranking(ranked, {"b"}, k=2) == ["a", "c"]
