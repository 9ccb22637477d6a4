"""Per-point target positions and the paired comparison of two entries (bench.quality.ranks, .paired)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.quality import ModelSpec, paired, ranks
from bench.quality import harness as h
from bench.quality.item_cooccurrence import ItemCooccurrence
from tests.bench.test_quality_baselines import _cooccurrence_split, _SeededPopularity
from trainer.metrics import METRIC_NAMES, ranking_metrics


def test_point_values_average_to_the_shared_metrics() -> None:
    split = _cooccurrence_split()
    points = split.test_points
    items = sorted(split.item_ids)
    rng = np.random.default_rng(3)
    # Targets at the edges of every cutoff (1, 10, 11, 20) and absent, then at random.
    wanted = [1, 10, 11, 20, 0] + [int(x) for x in rng.integers(0, 21, size=len(points) - 5)]
    rankings = []
    for point, position in zip(points, wanted, strict=True):
        others = [i for i in items if i != point.target_item]
        ranked = [others[j] for j in rng.permutation(len(others))[:20]]
        if position:
            ranked[position - 1] = point.target_item
        rankings.append(ranked)
    encoded = ranks.target_positions(rankings, points)
    assert len(encoded) == len(points)
    assert list(ranks.decode(encoded)) == wanted
    expected = ranking_metrics(rankings, [[p.target_item] for p in points])
    for metric in METRIC_NAMES:
        assert ranks.point_values(ranks.decode(encoded), metric).mean() == pytest.approx(expected[metric], abs=1e-12)


def test_harness_keeps_each_fits_positions_beside_the_results(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: _SeededPopularity(config)))
    output = str(tmp_path / "quality.json")
    positions_path = ranks.ranks_path(output)
    assert positions_path == str(tmp_path / "quality.ranks.json")
    h.run_benchmark(split, ["pop"], seeds=[0, 1], output=output)
    h.run_benchmark(split, ["pop"], seeds=[0, 1, 2], output=output, extend=True)
    with open(output) as f:
        results = json.load(f)
    positions = ranks.load(positions_path)
    assert list(positions["models"]["pop"]) == ["0", "1", "2"]
    assert positions["points"]["test"] == ranks.points_fingerprint(split.test_points)
    values = ranks.point_values(paired.entry_positions(results, positions, "pop", "test"), "ndcg@10")
    assert values.shape == (3, len(split.test_points))
    assert values.mean(axis=1) == pytest.approx([r["test"]["ndcg@10"] for r in results["models"]["pop"]["per_seed"]])

    # Positions that do not give the entry's metrics belong to other fits, and are refused.
    encoded = positions["models"]["pop"]["0"]["test"]
    hit = next(i for i, c in enumerate(encoded) if c != "0")
    tampered = json.loads(json.dumps(positions))
    tampered["models"]["pop"]["0"]["test"] = encoded[:hit] + "0" + encoded[hit + 1 :]
    with pytest.raises(ValueError, match="pop seed 0: the test positions give"):
        paired.entry_positions(results, tampered, "pop", "test")
    del tampered["models"]["pop"]["2"]
    with pytest.raises(KeyError, match="pop seed 2 has no target positions"):
        paired.entry_positions(results, tampered, "pop", "validation")

    # A fresh run of the model replaces its positions with the new fits'.
    h.run_benchmark(split, ["pop"], seeds=[0], output=output)
    assert list(ranks.load(positions_path)["models"]["pop"]) == ["0"]
    # Positions scored on other points are not mixed in: the file starts afresh.
    other = ranks.merge(ranks.load(positions_path), {"validation": "x", "test": "y"}, "cooc", {0: {}}, replace=True)
    assert list(other["models"]) == ["cooc"]


def test_an_earlier_grid_choice_is_fitted_without_searching_the_grid(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    fitted: list[dict] = []

    def factory(config):  # type: ignore[no-untyped-def]
        fitted.append(dict(config))
        return ItemCooccurrence(config)

    grid = [{"half_life": 1}, {"half_life": None}]
    monkeypatch.setitem(h.REGISTRY, "cooc", ModelSpec(factory, grid=grid))
    first = str(tmp_path / "quality.json")
    h.run_benchmark(split, ["cooc"], seeds=[0], output=first)
    with open(first) as f:
        chosen = json.load(f)["grids"]["cooc"]["chosen"]
    fitted.clear()
    again = str(tmp_path / "again.json")
    h.run_benchmark(split, ["cooc"], seeds=[0, 1], output=again, choices_from=first)
    assert fitted == [chosen, chosen]
    with open(again) as f:
        results = json.load(f)
    assert results["models"]["cooc"]["config"] == chosen
    assert results["grids"]["cooc"]["reused_from"] == h.os.path.relpath(first, h.REPO_ROOT)
    with pytest.raises(KeyError, match="no grid choice"):
        h.run_benchmark(split, ["popularity"], seeds=[0], output=again, choices_from=first)


def test_paired_difference_of_entries_that_differ_on_known_points() -> None:
    n = 200
    rng = np.random.default_rng(0)
    a = (rng.random((3, n)) < 0.2).astype(float)
    # B equals A except at 20 points, where A hits and B misses at every seed.
    b = a.copy()
    a[:, :20], b[:, :20] = 1.0, 0.0
    result = paired.paired_difference(a, b)
    assert result["difference"] == pytest.approx(20 / n)
    assert (result["points_a_higher"], result["points_a_lower"]) == (20, 0)
    d = a.mean(axis=0) - b.mean(axis=0)
    assert result["se_points"] == pytest.approx(d.std(ddof=1) / math.sqrt(n))
    seeds = a.mean(axis=1).var(ddof=1) / 3 + b.mean(axis=1).var(ddof=1) / 3
    assert result["se"] == pytest.approx(math.sqrt(result["se_points"] ** 2 + seeds))
    assert result["low"] < result["difference"] < result["high"]
    assert result["high"] - result["low"] == pytest.approx(2 * paired.Z_95 * result["se"])
    assert result["z"] > 2 and result["p"] < 0.05
    swapped = paired.paired_difference(b, a)
    assert swapped["difference"] == pytest.approx(-result["difference"])
    assert swapped["z"] == pytest.approx(-result["z"]) and swapped["p"] == pytest.approx(result["p"])
    same = paired.paired_difference(a, a)
    assert same["difference"] == 0.0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="scored on 200 and 199 points"):
        paired.paired_difference(a, b[:, 1:])


def test_pairing_removes_what_the_points_share() -> None:
    # Two entries whose points are easy or hard alike: the pairs vary far less than either set's mean does.
    n = 943
    rng = np.random.default_rng(1)
    easy = rng.random(n) < 0.2
    a = np.where(easy, 0.6, 0.0)[None, :] + 0.01 * rng.random((3, n))
    b = np.where(easy, 0.58, 0.0)[None, :] + 0.01 * rng.random((3, n))
    result = paired.paired_difference(a, b)
    unpaired = math.sqrt(a.mean(axis=0).var(ddof=1) / n + b.mean(axis=0).var(ddof=1) / n)
    assert result["se_points"] < unpaired / 10
    assert result["low"] > 0


def popularity_and_cooccurrence_results(split, tmp_path, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """Registers "pop" and "cooc", fits both on the split (seeds 0-1) and returns the results file's path."""
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: _SeededPopularity(config)))
    monkeypatch.setitem(h.REGISTRY, "cooc", ModelSpec(lambda config: ItemCooccurrence(config)))
    results_path = str(tmp_path / "quality.json")
    h.run_benchmark(split, ["pop", "cooc"], seeds=[0, 1], output=results_path)
    return results_path


def test_the_paired_command_writes_its_comparisons_and_their_picture(tmp_path, monkeypatch, capsys) -> None:
    split = _cooccurrence_split()
    results_path = popularity_and_cooccurrence_results(split, tmp_path, monkeypatch)
    output = tmp_path / "tests.json"
    argv = ["--base", "pop", "--models", "cooc", "--results", results_path, "--output", str(output)]
    assert paired.main([*argv, "--metrics", "ndcg@10,hr@10"]) == 0
    record = json.loads(output.read_text())
    assert [(c["a"], c["b"], c["split"], c["metric"]) for c in record["comparisons"]] == [
        ("cooc", "pop", "validation", "ndcg@10"),
        ("cooc", "pop", "validation", "hr@10"),
        ("cooc", "pop", "test", "ndcg@10"),
        ("cooc", "pop", "test", "hr@10"),
    ]
    with open(results_path) as f:
        models = json.load(f)["models"]
    test_ndcg = record["comparisons"][2]
    assert test_ndcg["difference"] == pytest.approx(
        models["cooc"]["ndcg@10"]["mean"] - models["pop"]["ndcg@10"]["mean"]
    )
    assert record["command"].startswith(".venv/bin/python -m bench.quality.paired --base pop")
    assert (tmp_path / "tests.png").stat().st_size > 0
    assert "| cooc | pop | test | ndcg@10 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        paired.main([*argv, "--metrics", "ndcg@11"])
