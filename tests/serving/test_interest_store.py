from __future__ import annotations

import numpy as np

from schemas.events import Event, Item
from serving.interest_store import SqliteInterestStore


def _event(event_id: str, ts: int, user: str = "u1", item: str = "i1") -> Event:
    return Event(user, item, "view", ts, 1.0, "", event_id)


def test_events_are_idempotent_by_event_id_and_ordered_by_time(tmp_path) -> None:
    store = SqliteInterestStore(str(tmp_path / "state.sqlite"))
    assert len(store.add_events([_event("b", 20), _event("a", 10)])) == 2
    assert store.add_events([_event("a", 10), _event("c", 5, item="i2")]) == [_event("c", 5, item="i2")]
    assert [e.event_id for e in store.user_events("u1")] == ["c", "a", "b"]
    assert store.user_events("nobody") == []


def test_state_round_trip_survives_reopening(tmp_path) -> None:
    path = str(tmp_path / "state.sqlite")
    store = SqliteInterestStore(path)
    state = np.arange(8, dtype=np.float32).reshape(2, 4)
    first = {"items": [["i1", 1.0]], "categories": [["A", 1.0]]}
    store.save_state("u1", state, model_version=7, event_count=3, interest_graph=first)
    second = {"items": [["i2", 0.6], ["i1", 0.4]], "categories": [["B", 0.6], ["A", 0.4]]}
    store.save_state("u1", state * 2, model_version=7, event_count=4, interest_graph=second)
    store.close()
    record = SqliteInterestStore(path).load_state("u1")
    assert record is not None
    np.testing.assert_array_equal(record.state, state * 2)
    assert record.state.shape == (2, 4)
    assert (record.model_version, record.event_count) == (7, 4)
    assert (record.interest_graph, record.previous_graph) == (second, first)
    assert SqliteInterestStore(path).load_state("u2") is None


def test_item_catalog_categories(tmp_path) -> None:
    store = SqliteInterestStore(str(tmp_path / "state.sqlite"))
    store.upsert_items([Item("i1", "One", "", ("A", "B")), Item("i2", "Two", "", ())])
    assert store.item_categories(["i1", "i2", "i3"]) == {"i1": ("A", "B"), "i2": ()}
    assert store.item("i1") == Item("i1", "One", "", ("A", "B"))
    assert store.item("i3") is None
