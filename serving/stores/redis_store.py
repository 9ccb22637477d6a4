"""The Redis interest store: the same behaviour as SQLite, shared by many machines.

Layout (every key starts with the store's prefix, so several stores can share
one Redis database):

    <prefix>user:{<user>}:events   hash  event_id -> event as JSON
    <prefix>user:{<user>}:state    hash  state, shape, model_version, ...,
                                         revision, stale
    <prefix>stale-users            set   users whose state is marked stale
    <prefix>items                  hash  item_id -> item as JSON
    <prefix>added-items            set   items added after training
    <prefix>item-encodings:<ver>   hash  item_id -> what model version <ver> made
                                         of an added item ("" = trained on it)
    <prefix>added-items-revision   int   raised by every write of the two above,
                                         after the write

`<user>` is the URL-quoted user id, so it holds no `:` or glob characters and
`<prefix>user:{<user>}:*` matches exactly one user's keys; the braces make it
the key's hash tag, so a user's keys stay together on Redis Cluster. Saving a
state (compare-and-set) and marking it stale are Lua scripts, which Redis runs
atomically.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import redis

from schemas.events import Event, Item
from serving.stores.base import InterestStateRecord, InterestStore, ItemEncoding, decode_state, encode_state

DEFAULT_PREFIX = "interest-graph:"

# KEYS: state hash, stale-users set. ARGV: expected revision ('' = any), state,
# shape, model_version, event_count, updated_at, interest_graph, long_term_memory
# ('' = none), user_id. Returns 1 if saved, 0 if the revision moved on.
_SAVE_STATE = """
local revision = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= revision then
  return 0
end
local previous = redis.call('HGET', KEYS[1], 'interest_graph')
redis.call('HSET', KEYS[1], 'revision', revision + 1, 'stale', 0, 'state', ARGV[2], 'shape', ARGV[3],
  'model_version', ARGV[4], 'event_count', ARGV[5], 'updated_at', ARGV[6], 'interest_graph', ARGV[7],
  'long_term_memory', ARGV[8])
if previous then
  redis.call('HSET', KEYS[1], 'previous_graph', previous)
end
redis.call('SREM', KEYS[2], ARGV[9])
return 1
"""

# KEYS: state hash, stale-users set. ARGV: user_id.
_MARK_STALE = """
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('HSET', KEYS[1], 'stale', 1)
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisInterestStore(InterestStore):
    """Events, interest states and the item catalog in Redis.

    Args:
      url: a redis-py URL: redis://HOST:PORT/DB, rediss:// (TLS) or
        unix:///path/to/socket?db=N.
      prefix: the namespace of every key this store writes.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        # Bytes in and out: states are raw float32 buffers.
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=30)
        self._save_state = self._redis.register_script(_SAVE_STATE)
        self._mark_stale = self._redis.register_script(_MARK_STALE)
        self._stale_key = f"{prefix}stale-users"
        self._items_key = f"{prefix}items"
        self._added_items_key = f"{prefix}added-items"
        self._encodings_key = f"{prefix}item-encodings"
        self._added_items_revision_key = f"{prefix}added-items-revision"

    def _user_key(self, user_id: str, kind: str) -> str:
        return f"{self.prefix}user:{{{quote(user_id, safe='')}}}:{kind}"

    def user_key_pattern(self, user_id: str) -> str:
        """The MATCH pattern of every key this store holds for the user (not other users)."""
        return f"{_glob_escape(self.prefix)}user:{{{quote(user_id, safe='')}}}:*"

    def close(self) -> None:
        self._redis.close()

    def add_events(self, events: Iterable[Event]) -> list[Event]:
        events = list(events)
        if not events:
            return []
        # HSETNX is atomic per field: of two writers of the same event (or a
        # retried batch) exactly one sees 1.
        pipe = self._redis.pipeline(transaction=False)
        for e in events:
            body = json.dumps([e.item_id, e.event_type, e.timestamp, e.value, e.text])
            pipe.hsetnx(self._user_key(e.user_id, "events"), e.event_id, body)
        return [e for e, new in zip(events, pipe.execute(), strict=True) if new]

    def user_events(self, user_id: str) -> list[Event]:
        stored = self._redis.hgetall(self._user_key(user_id, "events"))
        events = []
        for event_id, body in stored.items():
            item_id, event_type, timestamp, value, text = json.loads(body)
            events.append(Event(user_id, item_id, event_type, int(timestamp), float(value), text, event_id.decode()))
        # Python compares str by code point, which is SQLite's (UTF-8 byte) order too.
        return sorted(events, key=lambda e: (e.timestamp, e.event_id))

    def revision(self, user_id: str) -> int:
        return int(self._redis.hget(self._user_key(user_id, "state"), "revision") or 0)

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
        args = [
            "" if expected_revision is None else expected_revision,
            data,
            shape,
            model_version,
            event_count,
            repr(time.time()),
            json.dumps(interest_graph or {}),
            "" if long_term_memory is None else json.dumps(long_term_memory),
            user_id,
        ]
        return bool(self._save_state(keys=[self._user_key(user_id, "state"), self._stale_key], args=args))

    def load_state(self, user_id: str) -> InterestStateRecord | None:
        fields = self._redis.hgetall(self._user_key(user_id, "state"))
        if b"state" not in fields:
            return None
        previous = fields.get(b"previous_graph")
        memory = fields.get(b"long_term_memory")
        return InterestStateRecord(
            user_id=user_id,
            state=decode_state(fields[b"state"], fields[b"shape"].decode()),
            model_version=int(fields[b"model_version"]),
            event_count=int(fields[b"event_count"]),
            updated_at=float(fields[b"updated_at"]),
            interest_graph=json.loads(fields[b"interest_graph"]),
            previous_graph=json.loads(previous) if previous else None,
            revision=int(fields[b"revision"]),
            stale=fields.get(b"stale") == b"1",
            long_term_memory=json.loads(memory) if memory else None,
        )

    def mark_stale(self, user_id: str) -> None:
        self._mark_stale(keys=[self._user_key(user_id, "state"), self._stale_key], args=[user_id])

    def stale_users(self, limit: int | None = None) -> list[str]:
        users = sorted(member.decode() for member in self._redis.smembers(self._stale_key))
        return users if limit is None else users[:limit]

    def forget(self, user_id: str) -> int:
        removed = self._redis.hlen(self._user_key(user_id, "events"))
        # Scan rather than list the keys: whatever else is ever stored under
        # the user's hash tag goes too.
        keys = list(self._redis.scan_iter(match=self.user_key_pattern(user_id), count=1000))
        pipe = self._redis.pipeline(transaction=True)
        if keys:
            pipe.delete(*keys)
        pipe.srem(self._stale_key, user_id)
        pipe.execute()
        return removed

    def upsert_items(self, items: Iterable[Item]) -> int:
        items = list(items)
        mapping = {i.item_id: json.dumps([i.title, i.description, list(i.categories)]) for i in items}
        if mapping:
            self._redis.hset(self._items_key, mapping=mapping)
        return len(items)

    def item_categories(self, item_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        # An item is one JSON value here, so the whole item costs the same read as its categories.
        return {item_id: item.categories for item_id, item in self.items(item_ids).items()}

    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        found: dict[str, Item] = {}
        for item_id, body in zip(ids, self._redis.hmget(self._items_key, ids), strict=True):
            if body:
                title, description, categories = json.loads(body)
                found[item_id] = Item(item_id, title, description, tuple(categories))
        return found

    def mark_added_items(self, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        if ids:
            # The data first, then the revision: a reader reads the revision first, so
            # what it reads is never older than the revision it keeps it under.
            pipe = self._redis.pipeline(transaction=False)
            pipe.sadd(self._added_items_key, *ids)
            pipe.incr(self._added_items_revision_key)
            pipe.execute()

    def added_item_ids(self) -> list[str]:
        return sorted(i.decode() for i in self._redis.smembers(self._added_items_key))

    def save_item_encodings(self, model_version: int, encodings: Mapping[str, ItemEncoding | None]) -> None:
        # An empty value: the model version was trained on the item.
        mapping = {i: b"" if e is None else e.to_bytes() for i, e in encodings.items()}
        if mapping:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(f"{self._encodings_key}:{model_version}", mapping=mapping)
            pipe.incr(self._added_items_revision_key)
            pipe.execute()

    def item_encodings(self, model_version: int) -> dict[str, ItemEncoding | None]:
        stored = self._redis.hgetall(f"{self._encodings_key}:{model_version}")
        return {i.decode(): ItemEncoding.from_bytes(data) if data else None for i, data in stored.items()}

    def added_items_revision(self) -> int:
        return int(self._redis.get(self._added_items_revision_key) or 0)
