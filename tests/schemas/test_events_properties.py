"""Property-based tests: whatever a producer sends, parse_event accepts a valid event or names the problem."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings

from schemas.events import (
    EVENT_FIELDS,
    EVENT_TYPES,
    MAX_FUTURE_SECONDS,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    Event,
    InvalidRecordError,
    parse_event,
)
from tests.schemas.event_strategies import NOW, raw_events


@settings(max_examples=800, deadline=None)
@given(raw_events())
def test_parse_event_accepts_only_valid_events_and_otherwise_names_the_problem(raw: Any) -> None:
    try:
        event = parse_event(raw, now=NOW)
    except InvalidRecordError as error:
        reason = str(error)
        assert reason and len(reason) < 400
        assert any(name in reason for name in EVENT_FIELDS) or "must be an object" in reason, reason
        return
    assert isinstance(event, Event)
    for name in ("user_id", "item_id", "event_id"):
        value = getattr(event, name)
        assert isinstance(value, str) and value.strip() == value and 0 < len(value) <= MAX_ID_CHARS
        value.encode("utf-8")
    assert event.event_type in EVENT_TYPES
    assert isinstance(event.timestamp, int) and 0 <= event.timestamp <= NOW + MAX_FUTURE_SECONDS
    assert isinstance(event.value, float) and math.isfinite(event.value)
    assert isinstance(event.text, str) and len(event.text) <= MAX_TEXT_CHARS
    # Parsing is a pure function of the record: the same record gives the same event (and event_id).
    assert parse_event(raw, now=NOW) == event
