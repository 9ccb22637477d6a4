"""Where users' events and interest states live between requests (SQLite).

One file, zero setup, safe for several threads of one process and for several
processes on one machine (SQLite's own locking, WAL journal). Events are keyed
by `event_id`, so recording the same event twice stores it once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from schemas.events import Event, Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp  INTEGER NOT NULL,
    value      REAL NOT NULL,
    text       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp);
CREATE TABLE IF NOT EXISTS interest_states (
    user_id        TEXT PRIMARY KEY,
    state          BLOB NOT NULL,
    shape          TEXT NOT NULL,
    model_version  INTEGER NOT NULL,
    event_count    INTEGER NOT NULL,
    updated_at     REAL NOT NULL,
    interest_graph TEXT NOT NULL,
    previous_graph TEXT
);
CREATE TABLE IF NOT EXISTS items (
    item_id     TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    categories  TEXT NOT NULL
);
"""
_CATEGORY_SEPARATOR = "\x1f"


@dataclasses.dataclass(frozen=True)
class InterestStateRecord:
    """A user's interest state, the model version that computed it, and its readable graph.

    Attributes:
      interest_graph: the readable interest graph of this state (JSON-like:
        top items and categories with weights).
      previous_graph: the readable graph of the state this one replaced, so
        what moved with the latest events can be shown.
    """

    user_id: str
    state: np.ndarray
    model_version: int
    event_count: int
    updated_at: float
    interest_graph: dict[str, Any]
    previous_graph: dict[str, Any] | None


class SqliteInterestStore:
    """Events, interest states and the item catalog in one SQLite file.

    Args:
      path: the database file (created if missing); ":memory:" for a private
        in-process store.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_events(self, events: Iterable[Event]) -> list[Event]:
        """Stores events; returns those that were new (by event_id)."""
        added = []
        with self._lock, self._db:
            for e in events:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.event_id, e.user_id, e.item_id, e.event_type, e.timestamp, e.value, e.text),
                )
                if cursor.rowcount:
                    added.append(e)
        return added

    def user_events(self, user_id: str) -> list[Event]:
        """All of a user's events, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user_id, item_id, event_type, timestamp, value, text, event_id FROM events "
                "WHERE user_id = ? ORDER BY timestamp, event_id",
                (user_id,),
            ).fetchall()
        return [Event(*row) for row in rows]

    def save_state(
        self,
        user_id: str,
        state: np.ndarray,
        model_version: int,
        event_count: int,
        interest_graph: dict[str, Any] | None = None,
    ) -> None:
        """Saves the user's interest state with the model version that made it.

        The readable graph of the state being replaced is kept as `previous_graph`.
        """
        array = np.asarray(state, dtype=np.float32)
        shape = ",".join(map(str, array.shape))
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT interest_graph FROM interest_states WHERE user_id = ?", (user_id,)
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO interest_states VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    array.tobytes(),
                    shape,
                    model_version,
                    event_count,
                    time.time(),
                    json.dumps(interest_graph or {}),
                    row[0] if row else None,
                ),
            )

    def load_state(self, user_id: str) -> InterestStateRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, shape, model_version, event_count, updated_at, interest_graph, previous_graph "
                "FROM interest_states WHERE user_id = ?",
                (user_id,),
            ).fetchone()
        if row is None:
            return None
        shape = tuple(int(d) for d in row[1].split(",") if d)
        state = np.frombuffer(row[0], dtype=np.float32).reshape(shape).copy()
        previous = json.loads(row[6]) if row[6] else None
        return InterestStateRecord(user_id, state, row[2], row[3], row[4], json.loads(row[5]), previous)

    def upsert_items(self, items: Iterable[Item]) -> int:
        """Adds or replaces catalog items; returns how many were written."""
        rows = [
            (i.item_id, i.title, i.description, _CATEGORY_SEPARATOR.join(i.categories)) for i in items
        ]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def item_categories(self, item_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Categories of the given items that are in the catalog."""
        ids = list(dict.fromkeys(item_ids))
        result: dict[str, tuple[str, ...]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for item_id, categories in self._db.execute(
                    f"SELECT item_id, categories FROM items WHERE item_id IN ({marks})", chunk
                ):
                    result[item_id] = tuple(c for c in categories.split(_CATEGORY_SEPARATOR) if c)
        return result

    def item(self, item_id: str) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT item_id, title, description, categories FROM items WHERE item_id = ?", (item_id,)
            ).fetchone()
        if row is None:
            return None
        return Item(row[0], row[1], row[2], tuple(c for c in row[3].split(_CATEGORY_SEPARATOR) if c))
