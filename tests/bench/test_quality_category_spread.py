"""Points by the category spread of their input, and the paired comparison within those groups."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench.quality import harness as h
from bench.quality import paired, ranks
from bench.quality.category_spread import THIRDS, category_spread, spread_thirds
from schemas.events import Item
from tests.bench.test_quality_baselines import _cooccurrence_split, _event
from tests.bench.test_quality_paired import popularity_and_cooccurrence_results


def _items(categories: dict[str, tuple[str, ...]]) -> dict[str, Item]:
    return {i: Item(item_id=i, title=i, description="", categories=c) for i, c in categories.items()}


def test_category_spread_is_the_entropy_of_the_windows_category_shares() -> None:
    items = _items({"h1": ("horror",), "h2": ("horror",), "m1": ("musical",), "hm": ("horror", "musical"), "n": ()})
    window = [_event("u", i, 1000 + k, k) for k, i in enumerate(["h1", "h2"])]
    assert category_spread(window, items) == 0.0
    window = [_event("u", i, 1000 + k, k) for k, i in enumerate(["h1", "m1"])]
    assert category_spread(window, items) == pytest.approx(1.0)
    # A two-category item counts half to each; an item without categories (or unknown) counts nothing.
    window = [_event("u", i, 1000 + k, k) for k, i in enumerate(["hm", "n", "unknown"])]
    assert category_spread(window, items) == pytest.approx(1.0)
    window = [_event("u", i, 1000 + k, k) for k, i in enumerate(["h1", "h2", "hm"])]
    shares = np.array([2.5, 0.5]) / 3
    assert category_spread(window, items) == pytest.approx(float(-(shares * np.log2(shares)).sum()))
    assert category_spread([], items) == 0.0


def _split_with_categories():  # type: ignore[no-untyped-def]
    split = _cooccurrence_split()
    genres = ["drama", "comedy", "horror", "musical", "western"]
    # User u's own items x{u}, y{u} get u % 5 categories, so the windows' spreads differ from user to user.
    categories = {i: ("drama",) for i in split.item_ids}
    for u in range(30):
        for prefix in ("x", "y"):
            categories[f"{prefix}{u}"] = tuple(genres[: u % 5 + 1])
    return dataclasses.replace(split, items=_items(categories))


def test_the_thirds_partition_the_points_from_narrowest_to_widest() -> None:
    split = _split_with_categories()
    points = split.test_points
    thirds = spread_thirds(points, split.items)
    assert list(thirds) == list(THIRDS)
    joined = np.concatenate(list(thirds.values()))
    assert sorted(joined.tolist()) == list(range(len(points)))
    sizes = [len(v) for v in thirds.values()]
    assert max(sizes) - min(sizes) <= 1
    spreads = np.array([category_spread(p.window, split.items) for p in points])
    narrow, middle, wide = (spreads[thirds[name]] for name in THIRDS)
    assert narrow.max() <= middle.min() and middle.max() <= wide.min()
    assert narrow.min() < wide.max()


def test_paired_by_category_spread_compares_each_third_on_its_own_points(tmp_path, monkeypatch, capsys) -> None:
    split = _split_with_categories()
    results_path = popularity_and_cooccurrence_results(split, tmp_path, monkeypatch)
    loaded_windows = []

    def load(window: int):  # type: ignore[no-untyped-def]
        loaded_windows.append(window)
        return split

    monkeypatch.setattr(paired, "load_movielens_100k", load)
    output = tmp_path / "thirds.json"
    argv = ["--base", "pop", "--models", "cooc", "--results", results_path, "--output", str(output)]
    assert paired.main([*argv, "--by-category-spread"]) == 0
    assert loaded_windows == [split.window]
    record = json.loads(output.read_text())
    assert [(c["split"], c["points_group"]) for c in record["comparisons"]] == [
        (s, g) for s in ("validation", "test") for g in THIRDS
    ]
    # Each third's comparison is the paired difference on exactly its points, recomputed here.
    with open(results_path) as f:
        results = json.load(f)
    positions = ranks.load(ranks.ranks_path(results_path))
    for comparison in record["comparisons"]:
        points = h.scored_points(split)[comparison["split"]]
        indices = spread_thirds(points, split.items)[comparison["points_group"]]
        split_name = comparison["split"]
        a, b = (
            ranks.point_values(paired.entry_positions(results, positions, n, split_name), "ndcg@10")[:, indices]
            for n in ("cooc", "pop")
        )
        assert comparison["points"] == len(indices)
        assert comparison["difference"] == pytest.approx(float(a.mean() - b.mean()))
        assert comparison["se"] == pytest.approx(paired.paired_difference(a, b)["se"])
    assert "| cooc | pop | test, widest third | ndcg@10 |" in capsys.readouterr().out
    assert (tmp_path / "thirds.png").stat().st_size > 0

    # Positions scored on other points (here: one user fewer) are refused, and so is the cold-start reading.
    monkeypatch.setattr(paired, "load_movielens_100k", lambda window: split.subset(split.users[1:]))
    with pytest.raises(SystemExit):
        paired.main([*argv, "--by-category-spread"])
    assert "positions were scored on other points" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired.main([*argv, "--by-category-spread", "--cold-start"])
    assert "does not combine with --cold-start" in capsys.readouterr().err
