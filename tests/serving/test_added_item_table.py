"""The client's table of added items ranks them as the model's `score` would, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from serving.client import _AddedItemTable
from serving.interest_store import ItemEncoding


@pytest.fixture
def table() -> _AddedItemTable:
    rng = np.random.default_rng(3)
    encodings = {f"new-{n}": ItemEncoding(rng.normal(size=64).astype(np.float32), float(n % 3)) for n in range(50)}
    return _AddedItemTable.of(encodings)


def _brute_force(table: _AddedItemTable, state: np.ndarray) -> dict[str, float]:
    return {
        item_id: float(max(state[m] @ table.vectors[row] for m in range(len(state))) + table.bias[row])
        for row, item_id in enumerate(table.item_ids)
    }


@pytest.mark.parametrize("k", [1, 7, 50, 80])
def test_best_is_the_head_of_the_full_ranking_without_the_excluded(table: _AddedItemTable, k: int) -> None:
    state = np.random.default_rng(k).normal(size=(4, 64)).astype(np.float32)
    exclude = {"new-3", "new-10", "not-added"}
    expected = sorted(((i, v) for i, v in _brute_force(table, state).items() if i not in exclude), key=lambda x: -x[1])
    best = table.best(state, k, exclude)
    assert [i for i, _ in best] == [i for i, _ in expected[:k]]
    np.testing.assert_allclose([v for _, v in best], [v for _, v in expected[:k]], rtol=1e-5, atol=1e-4)


def test_scores_only_of_items_in_the_table(table: _AddedItemTable) -> None:
    state = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    scores = table.scores(state, ["new-4", "elsewhere", "new-0"])
    expected = _brute_force(table, state)
    assert list(scores) == ["new-4", "new-0"]
    assert scores == pytest.approx({i: expected[i] for i in scores}, rel=1e-5)


def test_an_empty_table_ranks_nothing() -> None:
    empty = _AddedItemTable.of({})
    state = np.ones((4, 64), np.float32)
    assert empty.best(state, 10, set()) == [] and empty.scores(state, ["x"]) == {}
