"""The item cold-start protocol of the quality benchmark (`--cold-start-items`), on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.quality import ModelSpec, paired
from bench.quality import harness as h
from bench.quality.data import build_split, cold_start_sample
from tests.bench.test_quality_baselines import _cooccurrence_split, _event, _SeededPopularity
from trainer.metrics import METRIC_NAMES, ranking_metrics

# Test targets y26..y29 and the probe's q2; `a` is in many users' inputs and in the probe's window.
WITHHELD = {"y26", "y27", "y28", "y29", "q2", "a"}


def test_withheld_items_leave_training_and_every_input_but_stay_candidates() -> None:
    split = _cooccurrence_split()
    cold = split.without_items(WITHHELD)
    assert cold.cold_start_items == WITHHELD
    assert cold.item_ids == split.item_ids
    assert not any(e.item_id in WITHHELD for events in cold.train.values() for e in events)
    assert not WITHHELD & set(cold.train_item_counts)
    assert cold.train_item_counts["b"] == split.train_item_counts["b"]
    for before, after in zip(split.eval_points + split.test_points, cold.eval_points + cold.test_points, strict=True):
        # Same point, same target, same exclusions (a withheld item the user touched is still not recommended).
        assert (after.user_id, after.target, after.exclude) == (before.user_id, before.target, before.exclude)
        assert after.history == tuple(e for e in before.history if e.item_id not in WITHHELD)
        assert not any(e.item_id in WITHHELD for e in after.window)
    probe = next(p for p in cold.eval_points if p.user_id == "probe")
    assert [e.item_id for e in probe.window] == ["z"] and "a" in probe.exclude
    assert sum(p.target_item in WITHHELD for p in cold.test_points) == 5


def test_a_withheld_event_makes_room_for_an_older_one_in_the_window() -> None:
    events = [_event("u", item, t, k) for k, (item, t) in enumerate([("p", 1), ("a", 2), ("q", 3), ("r", 4), ("s", 5)])]
    split = build_split(events, window=2)
    assert [e.item_id for e in split.test_points[0].window] == ["q", "r"]
    cold = split.without_items({"q"})
    assert [e.item_id for e in cold.test_points[0].window] == ["a", "r"]
    assert [e.item_id for e in cold.eval_points[0].window] == ["p", "a"]


def test_the_withheld_items_are_a_seeded_uniform_draw() -> None:
    items = [f"i{k}" for k in range(200)]
    first = cold_start_sample(items, 0.2, seed=0)
    assert len(first) == 40 and first <= set(items)
    assert cold_start_sample(list(reversed(items)), 0.2, seed=0) == first
    assert cold_start_sample(items, 0.2, seed=1) != first
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="must be in"):
            cold_start_sample(items, share)


def test_harness_reports_the_cold_start_points_and_keeps_them_apart(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: _SeededPopularity(config)))
    split = _cooccurrence_split().without_items(WITHHELD)
    output = str(tmp_path / "cold.json")
    seeds = [0, 1, 2]
    h.run_benchmark(split, ["pop"], seeds=seeds, output=output)
    with open(output) as f:
        results = json.load(f)
    protocol = results["protocol"]["cold_start_items"]
    assert protocol["items"] == sorted(WITHHELD)
    cold_test = [p for p in split.test_points if p.target_item in WITHHELD]
    assert [split.test_points[i] for i in protocol["points"]["test"]] == cold_test
    cold_validation = [p for p in split.eval_points if p.target_item in WITHHELD]
    assert [split.eval_points[i] for i in protocol["points"]["validation"]] == cold_validation
    assert len(cold_validation) == 2  # users 26 and 28 rated `a` just before their last event
    # Both readings of the slice equal an independent scoring of the same fits on those points only.
    full, among = [], []
    for seed in seeds:
        model = _SeededPopularity()
        model.fit(split, seed)
        targets = [[p.target_item] for p in cold_test]
        full.append(ranking_metrics(model.rank(cold_test, 20), targets))
        whole = model.rank(cold_test, len(split.item_ids))
        among.append(ranking_metrics([[i for i in r if i in WITHHELD] for r in whole], targets))
    assert any(e["recall@20"] > 0 for e in full)  # some withheld target reached a full top 20
    assert all(e["recall@20"] == 1.0 for e in among)  # six withheld items: all within the top 20
    # Leaving the established items out moves each target up.
    assert all(a["ndcg@10"] > f["ndcg@10"] for a, f in zip(among, full, strict=True))
    entry = results["slices"]["cold_start_items"]
    assert entry["test_points"] == len(cold_test) == 5
    for way, expected in (("full_ranking", full), ("among_withheld", among)):
        for metric in METRIC_NAMES:
            assert entry["models"]["pop"][way][metric]["mean"] == pytest.approx(np.mean([e[metric] for e in expected]))
    assert "Cold-start items (5 test" in h.markdown_table(results)

    # Paired on the rankings among the withheld items: the means are the slice's.
    tests = tmp_path / "paired.json"
    argv = ["--base", "pop", "--models", "pop", "--results", output, "--output", str(tests), "--cold-start"]
    assert paired.main(argv) == 0
    record = json.loads(tests.read_text())
    test_ndcg = next(c for c in record["comparisons"] if c["split"] == "cold_start_test")
    assert test_ndcg["points"] == 5 and test_ndcg["difference"] == 0.0
    assert test_ndcg["a_mean"] == pytest.approx(entry["models"]["pop"]["among_withheld"]["ndcg@10"]["mean"])

    # The spine's protocol is another protocol: its run starts the file afresh instead of mixing the two.
    h.run_benchmark(_cooccurrence_split(), ["pop"], seeds=[0], output=output)
    with open(output) as f:
        spine = json.load(f)
    assert "cold_start_items" not in spine["protocol"] and "cold_start_items" not in spine["slices"]
    with pytest.raises(SystemExit):
        paired.main(argv)
