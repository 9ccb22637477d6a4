"""Behaviour events and item records: the documented input format.

An event is one thing a user did to an item at a moment in time. Every input
file (CSV or JSONL), the TFX ExampleGen, the online client and the adapters of
public datasets go through `parse_event`, so a row is accepted or rejected by
the same rule everywhere.

Event fields (CSV header or JSON keys):

    user_id     required, non-empty string
    item_id     required, non-empty string
    event_type  required, one of EVENT_TYPES
    timestamp   required, Unix seconds (integer or decimal number), not more
                than MAX_FUTURE_SECONDS ahead of the clock
    value       optional number; required for `rating` (the rating itself);
                defaults to 1.0 otherwise
    text        optional free text (a review's body), at most MAX_TEXT_CHARS
    event_id    optional id, unique per user; derived from the other fields when
                absent, so that replaying the same row is recognisably the same event

Ids and text are strings (JSON numbers are accepted for ids and read as their
decimal text); each is at most MAX_ID_CHARS / MAX_TEXT_CHARS characters.

Item fields: item_id (required), title, description, categories (a `|`
separated list in CSV, a list in JSON).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating", "review")
EVENT_FIELDS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "value",
    "text",
    "event_id",
)
REQUIRED_EVENT_FIELDS: tuple[str, ...] = ("user_id", "item_id", "event_type", "timestamp")
ITEM_FIELDS: tuple[str, ...] = ("item_id", "title", "description", "categories")
CATEGORY_SEPARATOR = "|"
MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 256
# Clocks disagree a little, so an event slightly ahead of ours is fine; one a
# day ahead is a unit or clock bug (milliseconds instead of seconds, say), and
# storing it would make it the user's "latest" event for a very long time.
MAX_FUTURE_SECONDS = 24 * 3600


class InvalidRecordError(ValueError):
    """A record that breaks the input contract; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Event:
    """One behaviour event, validated."""

    user_id: str
    item_id: str
    event_type: str
    timestamp: int
    value: float
    text: str
    event_id: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Item:
    """One catalog item; its text is what the BERT encoder reads."""

    item_id: str
    title: str
    description: str
    categories: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text that represents the item to the language model."""
        parts = [self.title, self.description, ", ".join(self.categories)]
        return ". ".join(p for p in parts if p)


@dataclasses.dataclass(frozen=True)
class RejectedRecord:
    """A record that was not accepted, kept with where it came from and why."""

    source: str
    line: int
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def derive_event_id(user_id: str, item_id: str, event_type: str, timestamp: int) -> str:
    """A stable id for events that arrive without one (same row, same id)."""
    key = f"{user_id}\x1f{item_id}\x1f{event_type}\x1f{timestamp}".encode()
    return hashlib.sha1(key).hexdigest()[:20]


def _text_field(record: Mapping[str, Any], name: str, max_chars: int) -> str:
    raw = record.get(name)
    if raw is None:
        return ""
    # Numbers are fine as ids (JSON writers often emit them); lists, objects and
    # booleans are not text, and their repr would silently become an id.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise InvalidRecordError(f"field '{name}' must be a string, got {type(raw).__name__}")
    value = str(raw).strip()
    if len(value) > max_chars:
        raise InvalidRecordError(f"field '{name}' is {len(value)} characters long; the limit is {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. from a JSON "\\ud800" escape) cannot be stored or sent anywhere.
        raise InvalidRecordError(f"field '{name}' is not valid Unicode text") from None
    return value


def reviews_with_text(events: Iterable[Event]) -> list[Event]:
    """The `review` events that carry text: the ones a review sentiment head scores."""
    return [e for e in events if e.event_type == "review" and e.text]


def parse_event(record: Mapping[str, Any], now: float | None = None) -> Event:
    """Validates one raw event record and returns it as an `Event`.

    Args:
      record: field name -> raw value, as read from CSV (all strings) or JSON.
      now: the current Unix time, against which "far in the future" is judged
        (default: the clock).

    Returns:
      The validated event.

    Raises:
      InvalidRecordError: with a message naming the offending field.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecordError(f"an event must be an object with fields {EVENT_FIELDS}, got {type(record).__name__}")
    missing = [f for f in REQUIRED_EVENT_FIELDS if record.get(f) in (None, "")]
    if missing:
        raise InvalidRecordError(f"missing required field(s): {', '.join(missing)}")
    user_id = _text_field(record, "user_id", MAX_ID_CHARS)
    item_id = _text_field(record, "item_id", MAX_ID_CHARS)
    for name, value in (("user_id", user_id), ("item_id", item_id)):
        if not value:
            raise InvalidRecordError(f"field '{name}' must not be blank")
    event_type = _text_field(record, "event_type", MAX_ID_CHARS).lower()
    if event_type not in EVENT_TYPES:
        expected = ", ".join(EVENT_TYPES)
        raise InvalidRecordError(f"unknown event_type {_shown(record['event_type'])}; expected one of {expected}")
    timestamp = _number(record["timestamp"], "timestamp")
    if timestamp < 0:
        raise InvalidRecordError(f"timestamp {_shown(record['timestamp'])} is negative")
    latest = (time.time() if now is None else now) + MAX_FUTURE_SECONDS
    if timestamp > latest:
        raise InvalidRecordError(
            f"timestamp {_shown(record['timestamp'])} is more than {MAX_FUTURE_SECONDS} s in the future "
            "(Unix seconds expected)"
        )
    raw_value = record.get("value")
    if raw_value in (None, ""):
        if event_type == "rating":
            raise InvalidRecordError("a rating event needs a numeric 'value' (the rating)")
        value = 1.0
    else:
        value = _number(raw_value, "value")
    text = _text_field(record, "text", MAX_TEXT_CHARS)
    event_id = _text_field(record, "event_id", MAX_ID_CHARS) or derive_event_id(
        user_id, item_id, event_type, int(timestamp)
    )
    return Event(user_id, item_id, event_type, int(timestamp), float(value), text, event_id)


def _number(raw: Any, name: str) -> float:
    if isinstance(raw, bool):
        raise InvalidRecordError(f"field '{name}' must be a number, got a boolean")
    try:
        number = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRecordError(f"field '{name}' must be a number, got {_shown(raw)}") from None
    if not math.isfinite(number):
        raise InvalidRecordError(f"field '{name}' must be a finite number, got {_shown(raw)}")
    return number


def _shown(raw: Any, limit: int = 60) -> str:
    """A value as a rejection message quotes it: its repr, cut short so a huge value cannot bloat the reason."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_item(record: Mapping[str, Any]) -> Item:
    """Validates one raw catalog record.

    Args:
      record: field name -> raw value; `categories` is a list or a
        `|`-separated string.

    Returns:
      The validated item.

    Raises:
      InvalidRecordError: when `item_id` is missing or a field is malformed.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecordError(f"an item must be an object with fields {ITEM_FIELDS}")
    item_id = _text_field(record, "item_id", MAX_ID_CHARS)
    if not item_id:
        raise InvalidRecordError("missing required field: item_id")
    raw_categories = record.get("categories") or []
    if isinstance(raw_categories, str):
        raw_categories = raw_categories.split(CATEGORY_SEPARATOR)
    if not isinstance(raw_categories, list | tuple):
        raise InvalidRecordError("field 'categories' must be a list or a '|'-separated string")
    categories = tuple(c.strip() for c in map(str, raw_categories) if c.strip())
    return Item(
        item_id=item_id,
        title=_text_field(record, "title", MAX_TEXT_CHARS),
        description=_text_field(record, "description", MAX_TEXT_CHARS),
        categories=categories,
    )


def _json_lines(lines: Iterable[str]) -> Iterator[tuple[int, Mapping[str, Any] | None, str, str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), line.rstrip("\n"), ""
        except json.JSONDecodeError as e:
            yield number, None, line.rstrip("\n"), f"invalid JSON: {e.msg} at column {e.colno}"


def read_records(path: str) -> Iterator[tuple[int, Mapping[str, Any] | None, str, str]]:
    """Yields (line number, record, raw line, error) from a CSV or JSONL file.

    `record` is None and `error` says why when a line cannot be read at all.
    The format is chosen by extension: `.jsonl`/`.json` is JSON lines, anything
    else is CSV with a header row; `-` is JSON lines on standard input. Line
    numbers are 1-based physical lines, as an editor shows them, so a rejected
    row can be found.
    """
    if path == "-":
        yield from _json_lines(sys.stdin)
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        if path.endswith((".jsonl", ".json")):
            yield from _json_lines(f)
            return
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            raw = ",".join(row)
            if len(row) != len(header):
                yield start, None, raw, f"expected {len(header)} columns, got {len(row)}"
                continue
            yield start, dict(zip(header, row, strict=True)), raw, ""


def source_name(path: str) -> str:
    """How a rejection names the file it came from."""
    return "<stdin>" if path == "-" else os.path.abspath(path)


def read_events(path: str) -> Iterator[Event | RejectedRecord]:
    """Reads an event file, yielding each valid `Event` or a `RejectedRecord`.

    Args:
      path: a CSV (with header) or JSONL file of events; `-` for JSONL on stdin.

    Returns:
      An iterator over accepted events and rejected rows, in file order; one
      bad row never stops the others.
    """
    source = source_name(path)
    for number, record, raw, error in read_records(path):
        if record is None:
            yield RejectedRecord(source, number, error, raw)
            continue
        try:
            yield parse_event(record)
        except InvalidRecordError as e:
            yield RejectedRecord(source, number, str(e), raw)


def read_items(path: str) -> tuple[list[Item], list[RejectedRecord]]:
    """Reads an item catalog (CSV or JSONL); returns accepted items and rejected rows."""
    items: list[Item] = []
    rejected: list[RejectedRecord] = []
    source = source_name(path)
    for number, record, raw, error in read_records(path):
        if record is None:
            rejected.append(RejectedRecord(source, number, error, raw))
            continue
        try:
            items.append(parse_item(record))
        except InvalidRecordError as e:
            rejected.append(RejectedRecord(source, number, str(e), raw))
    return items, rejected
