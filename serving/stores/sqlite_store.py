"""The SQLite interest store: one file, zero setup, the default.

Safe for several threads of one process and for several processes on one
machine: SQLite's own locking and WAL journal, and every write in a
`BEGIN IMMEDIATE` transaction so a compare-and-set reads and writes under the
same lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from schemas.events import Event, Item
from serving.stores.base import InterestStateRecord, InterestStore, ItemEncoding, decode_state, encode_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    user_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp  INTEGER NOT NULL,
    value      REAL NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_by_user_time ON events (user_id, timestamp, event_id);
CREATE TABLE IF NOT EXISTS interest_states (
    user_id          TEXT PRIMARY KEY,
    state            BLOB NOT NULL,
    shape            TEXT NOT NULL,
    model_version    INTEGER NOT NULL,
    event_count      INTEGER NOT NULL,
    updated_at       REAL NOT NULL,
    interest_graph   TEXT NOT NULL,
    previous_graph   TEXT,
    long_term_memory TEXT
);
CREATE TABLE IF NOT EXISTS state_revisions (
    user_id  TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    stale    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stale_users ON state_revisions (user_id) WHERE stale = 1;
CREATE TABLE IF NOT EXISTS items (
    item_id     TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    categories  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS added_items (
    item_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS item_encodings (
    model_version INTEGER NOT NULL,
    item_id       TEXT NOT NULL,
    encoding      BLOB,
    PRIMARY KEY (model_version, item_id)
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_ADDED_ITEMS_REVISION = "added_items_revision"
_EVENT_COLUMNS = "user_id, item_id, event_type, timestamp, value, text, event_id"
_CATEGORY_SEPARATOR = "\x1f"
_BUSY_TIMEOUT_S = 30.0


def _create_tables(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the open transaction first.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate(db: sqlite3.Connection) -> None:
    """Brings a file written by an earlier version to the current layout, keeping its data.

    Earlier files keyed events by event_id alone and had no long-term memory column.
    """
    event_keys = {row[1]: row[5] for row in db.execute("PRAGMA table_info(events)")}
    if event_keys and event_keys.get("user_id") == 0:
        db.execute("ALTER TABLE events RENAME TO events_before_migration")
        _create_tables(db)
        db.execute(f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM events_before_migration")
        db.execute("DROP TABLE events_before_migration")
    state_columns = {row[1] for row in db.execute("PRAGMA table_info(interest_states)")}
    if state_columns and "long_term_memory" not in state_columns:
        db.execute("ALTER TABLE interest_states ADD COLUMN long_term_memory TEXT")


def _use_write_ahead_log(db: sqlite3.Connection, path: str) -> None:
    """Switches the file to WAL, waiting for other processes that open it at the same moment.

    Switching needs an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, while another connection opens the new
    file; so the switch is retried for as long as any other statement would wait.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        # ":memory:" databases keep their own journal mode; anything else must be WAL.
        if mode.lower() in ("wal", "memory"):
            return
        raise sqlite3.OperationalError(f"SQLite refused WAL mode for {path} (journal mode stays {mode!r})")


class SqliteInterestStore(InterestStore):
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
        # Autocommit mode: transactions are explicit (see `_write`).
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        _use_write_ahead_log(self._db, path)
        # In WAL mode NORMAL still survives a crash of the application; only an OS
        # crash or power loss can drop the last commits. FULL fsyncs every commit,
        # which set the p99 of `record` (two commits) at 90-190 ms on this machine.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows are overwritten, so `forget` does not leave the user's data in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._write() as db:
            _migrate(db)
            _create_tables(db)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds SQLite's write lock from its first statement.

        BEGIN IMMEDIATE takes the lock up front (waiting up to the busy
        timeout), so what a transaction reads cannot change before it writes.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        self._db.close()

    def add_events(self, events: Iterable[Event]) -> list[Event]:
        added = []
        with self._write() as db:
            for e in events:
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.user_id, e.item_id, e.event_type, e.timestamp, e.value, e.text, e.event_id),
                )
                if cursor.rowcount:
                    added.append(e)
        return added

    def user_events(self, user_id: str) -> list[Event]:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = ? ORDER BY timestamp, event_id", (user_id,)
        )
        return [Event(*row) for row in rows]

    def revision(self, user_id: str) -> int:
        rows = self._read("SELECT revision FROM state_revisions WHERE user_id = ?", (user_id,))
        return rows[0][0] if rows else 0

    def save_state(
        self,
        user_id: str,
        state: np.ndarray,
        model_version: int,
        event_count: int,
        interest_graph: dict[str, Any] | None = None,
        *,
        long_term_memory: dict[str, Any] | None = None,
        expected_revision: int | None = None,
    ) -> bool:
        data, shape = encode_state(state)
        memory = None if long_term_memory is None else json.dumps(long_term_memory)
        with self._write() as db:
            row = db.execute("SELECT revision FROM state_revisions WHERE user_id = ?", (user_id,)).fetchone()
            revision = row[0] if row else 0
            if expected_revision is not None and revision != expected_revision:
                return False
            previous = db.execute("SELECT interest_graph FROM interest_states WHERE user_id = ?", (user_id,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO interest_states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    data,
                    shape,
                    model_version,
                    event_count,
                    time.time(),
                    json.dumps(interest_graph or {}),
                    previous[0] if previous else None,
                    memory,
                ),
            )
            db.execute("INSERT OR REPLACE INTO state_revisions VALUES (?, ?, 0)", (user_id, revision + 1))
        return True

    def load_state(self, user_id: str) -> InterestStateRecord | None:
        rows = self._read(
            "SELECT s.state, s.shape, s.model_version, s.event_count, s.updated_at, s.interest_graph, "
            "s.previous_graph, s.long_term_memory, COALESCE(r.revision, 0), COALESCE(r.stale, 0) "
            "FROM interest_states AS s LEFT JOIN state_revisions AS r USING (user_id) WHERE s.user_id = ?",
            (user_id,),
        )
        if not rows:
            return None
        data, shape, version, count, updated_at, graph, previous, memory, revision, stale = rows[0]
        return InterestStateRecord(
            user_id=user_id,
            state=decode_state(data, shape),
            model_version=version,
            event_count=count,
            updated_at=updated_at,
            interest_graph=json.loads(graph),
            previous_graph=json.loads(previous) if previous else None,
            revision=revision,
            stale=bool(stale),
            long_term_memory=None if memory is None else json.loads(memory),
        )

    def mark_stale(self, user_id: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO state_revisions VALUES (?, 1, 1) "
                "ON CONFLICT (user_id) DO UPDATE SET revision = revision + 1, stale = 1",
                (user_id,),
            )

    def stale_users(self, limit: int | None = None) -> list[str]:
        rows = self._read(
            "SELECT user_id FROM state_revisions WHERE stale = 1 ORDER BY user_id LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [row[0] for row in rows]

    def forget(self, user_id: str) -> int:
        with self._write() as db:
            removed = db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM interest_states WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM state_revisions WHERE user_id = ?", (user_id,))
        if self.path != ":memory:":
            # Older page images in the write-ahead log may still hold the user's rows;
            # moving the log into the database file and truncating it drops them.
            self._read("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = [(i.item_id, i.title, i.description, _CATEGORY_SEPARATOR.join(i.categories)) for i in items]
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    def item_categories(self, item_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        return {
            item_id: _split_categories(categories)
            for item_id, categories in self._rows_of_items("item_id, categories", item_ids)
        }

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return {
            item_id: Item(item_id, title, description, _split_categories(categories))
            for item_id, title, description, categories in self._rows_of_items(
                "item_id, title, description, categories", item_ids
            )
        }

    def _rows_of_items(self, columns: str, item_ids: Sequence[str]) -> list[tuple]:
        """`columns` of the catalog rows of the given items."""
        ids = list(dict.fromkeys(item_ids))
        rows: list[tuple] = []
        # SQLite limits the number of bound parameters per statement.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += self._read(f"SELECT {columns} FROM items WHERE item_id IN ({marks})", chunk)
        return rows

    def mark_added_items(self, item_ids: Iterable[str]) -> None:
        with self._write() as db:
            marked = db.executemany("INSERT OR IGNORE INTO added_items VALUES (?)", [(i,) for i in item_ids])
            if marked.rowcount > 0:
                _raise_added_items_revision(db)

    def added_item_ids(self) -> list[str]:
        return [row[0] for row in self._read("SELECT item_id FROM added_items ORDER BY item_id")]

    def save_item_encodings(self, model_version: int, encodings: Mapping[str, ItemEncoding | None]) -> None:
        rows = [(model_version, i, None if e is None else e.to_bytes()) for i, e in encodings.items()]
        if not rows:
            return
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO item_encodings VALUES (?, ?, ?)", rows)
            _raise_added_items_revision(db)

    def item_encodings(self, model_version: int) -> dict[str, ItemEncoding | None]:
        rows = self._read("SELECT item_id, encoding FROM item_encodings WHERE model_version = ?", (model_version,))
        return {i: None if data is None else ItemEncoding.from_bytes(data) for i, data in rows}

    def added_items_revision(self) -> int:
        rows = self._read("SELECT value FROM counters WHERE name = ?", (_ADDED_ITEMS_REVISION,))
        return int(rows[0][0]) if rows else 0


def _raise_added_items_revision(db: sqlite3.Connection) -> None:
    """Within the write's transaction, so a reader never sees the change without the new revision."""
    db.execute(
        "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
        (_ADDED_ITEMS_REVISION,),
    )


def _split_categories(joined: str) -> tuple[str, ...]:
    return tuple(c for c in joined.split(_CATEGORY_SEPARATOR) if c)
