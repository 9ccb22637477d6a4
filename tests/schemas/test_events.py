from __future__ import annotations

import json
import time

import pytest

from schemas.events import (
    MAX_FUTURE_SECONDS,
    Event,
    InvalidRecordError,
    RejectedRecord,
    derive_event_id,
    parse_event,
    parse_item,
    read_events,
    read_items,
)

NOW = 1_700_000_000
VALID = {"user_id": "u1", "item_id": "i1", "event_type": "rating", "timestamp": "881250949", "value": "4"}


def test_parse_event_accepts_documented_format() -> None:
    event = parse_event(VALID)
    assert event == Event("u1", "i1", "rating", 881250949, 4.0, "", derive_event_id("u1", "i1", "rating", 881250949))


def test_event_id_is_stable_and_explicit_id_wins() -> None:
    assert parse_event(VALID).event_id == parse_event(dict(VALID)).event_id
    assert parse_event({**VALID, "event_id": "e-7"}).event_id == "e-7"


def test_non_rating_defaults_value_to_one_and_normalises_type() -> None:
    event = parse_event({"user_id": "u", "item_id": "i", "event_type": " Purchase ", "timestamp": 10.9})
    assert (event.event_type, event.value, event.timestamp) == ("purchase", 1.0, 10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_id": ""}, "missing required field(s): user_id"),
        ({"event_type": "like"}, "unknown event_type 'like'"),
        ({"timestamp": "yesterday"}, "field 'timestamp' must be a number, got 'yesterday'"),
        ({"timestamp": "nan"}, "must be a finite number"),
        ({"timestamp": "-5"}, "is negative"),
        ({"value": ""}, "a rating event needs a numeric 'value'"),
        ({"value": "five"}, "field 'value' must be a number"),
        ({"text": "x" * 20_001}, "field 'text' is 20001 characters long; the limit is 20000"),
        ({"item_id": "   "}, "field 'item_id' must not be blank"),
        ({"user_id": ["u1"]}, "field 'user_id' must be a string, got list"),
        ({"event_id": True}, "field 'event_id' must be a string, got bool"),
        ({"text": "bad \ud800 surrogate"}, "field 'text' is not valid Unicode text"),
        ({"timestamp": 10**400}, "field 'timestamp' must be a number"),
        ({"timestamp": str(NOW + MAX_FUTURE_SECONDS + 1)}, "s in the future"),
        ({"timestamp": "1" * 5000}, "(5002 characters)"),
    ],
)
def test_parse_event_rejects_with_a_message_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        parse_event({**VALID, **change}, now=NOW)
    assert message in str(raised.value)
    assert len(str(raised.value)) < 300


def test_timestamps_up_to_the_future_limit_are_accepted() -> None:
    assert parse_event({**VALID, "timestamp": NOW + MAX_FUTURE_SECONDS}, now=NOW).timestamp == NOW + MAX_FUTURE_SECONDS
    # Without `now`, the limit is judged against the clock.
    with pytest.raises(InvalidRecordError, match="in the future"):
        parse_event({**VALID, "timestamp": time.time() + 2 * MAX_FUTURE_SECONDS})


def test_parse_event_rejects_non_objects() -> None:
    with pytest.raises(InvalidRecordError, match="must be an object"):
        parse_event(["u1", "i1"])  # type: ignore[arg-type]


def test_read_events_csv_reports_file_and_line_and_keeps_good_rows(tmp_path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,event_type,timestamp,value,text,event_id\n"
        "u1,i1,view,100,,,\n"
        "u1,i2,like,101,,,\n"
        'u2,i1,rating,102,5,"great, really",e3\n'
        "u2,i1,rating\n"
        ",i9,view,103,,,\n"
    )
    results = list(read_events(str(path)))
    accepted = [r for r in results if isinstance(r, Event)]
    rejected = [r for r in results if isinstance(r, RejectedRecord)]
    assert [e.item_id for e in accepted] == ["i1", "i1"]
    assert accepted[1].text == "great, really"
    assert [(r.line, r.source) for r in rejected] == [(3, str(path)), (5, str(path)), (6, str(path))]
    assert "unknown event_type 'like'" in rejected[0].reason
    assert "expected 7 columns, got 3" in rejected[1].reason
    assert "user_id" in rejected[2].reason
    assert rejected[0].raw == "u1,i2,like,101,,,"


def test_read_events_jsonl_rejects_invalid_json_with_line(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(VALID) + "\n\n{not json\n" + json.dumps({**VALID, "event_type": "x"}) + "\n")
    results = list(read_events(str(path)))
    assert isinstance(results[0], Event)
    assert (results[1].line, results[2].line) == (3, 4)
    assert "invalid JSON" in results[1].reason


def test_items_accept_list_or_pipe_separated_categories(tmp_path) -> None:
    assert parse_item({"item_id": "1", "categories": "Action|Comedy"}).categories == ("Action", "Comedy")
    assert parse_item({"item_id": "1", "categories": ["Drama"], "title": "T"}).text == "T. Drama"
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,description,categories\n1,Toy Story,,Animation|Comedy\n,No id,,\n")
    items, rejected = read_items(str(path))
    assert [i.item_id for i in items] == ["1"] and rejected[0].line == 3
