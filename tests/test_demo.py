"""The demo's held-out split: what the served model may see before each test event."""

from __future__ import annotations

from interest_graph.demo import split_held_out
from schemas.events import Event


def _event(user_id: str, item_id: str, timestamp: int, event_id: str) -> Event:
    return Event(user_id, item_id, "rating", timestamp, 4.0, "", event_id)


def test_events_in_the_held_out_events_second_are_set_apart_from_what_the_model_sees() -> None:
    events = [
        _event("a", "3", 20, "ml100k-9"),
        _event("a", "1", 10, "ml100k-1"),
        _event("a", "4", 20, "ml100k-10"),
        _event("a", "2", 20, "ml100k-11"),
        _event("b", "5", 7, "ml100k-2"),
        _event("b", "6", 8, "ml100k-3"),
    ]
    held_out = split_held_out(events)

    # Within one second the order is the event ids' ("ml100k-10" < "ml100k-11" < "ml100k-9"), as in the pipeline.
    a = held_out["a"]
    assert a.event.item_id == "3"
    assert [e.item_id for e in a.visible] == ["1"]
    assert [e.item_id for e in a.tied] == ["4", "2"]
    assert [e.item_id for e in a.history] == ["1", "4", "2"]

    b = held_out["b"]
    assert (b.event.item_id, [e.item_id for e in b.visible], b.tied) == ("6", ["5"], [])


def test_a_user_with_one_event_is_held_out_with_nothing_before_it() -> None:
    held = split_held_out([_event("c", "9", 5, "ml100k-7")])["c"]
    assert (held.event.item_id, held.visible, held.tied) == ("9", [], [])
