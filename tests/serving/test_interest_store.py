"""The interest store's contract, on SQLite and on a real Redis server alike."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np
import pytest
import redis

from schemas.events import Event, Item
from serving.interest_store import (
    InterestStore,
    ItemEncoding,
    RedisInterestStore,
    SqliteInterestStore,
    open_store,
)
from tests.serving import workers
from tests.serving.backends import StoreSpec


def _event(event_id: str, ts: int, user: str = "u1", item: str = "i1") -> Event:
    return Event(user, item, "view", ts, 1.0, "", event_id)


def test_events_are_idempotent_by_event_id_and_ordered_by_time(store: InterestStore) -> None:
    assert len(store.add_events([_event("b", 20), _event("a", 10)])) == 2
    assert store.add_events([_event("a", 10), _event("c", 5, item="i2")]) == [_event("c", 5, item="i2")]
    # A late event (timestamp 5, recorded last) takes its place by time; ties go by event_id.
    store.add_events([_event("0", 20)])
    assert [e.event_id for e in store.user_events("u1")] == ["c", "a", "0", "b"]
    assert store.user_events("nobody") == []


def test_event_identity_is_per_user(store: InterestStore) -> None:
    assert len(store.add_events([_event("e1", 1, user="u1"), _event("e1", 1, user="u2")])) == 2
    assert store.add_events([_event("e1", 1, user="u2")]) == []
    assert [e.user_id for e in store.user_events("u2")] == ["u2"]


def test_events_round_trip_exactly(store: InterestStore) -> None:
    event = Event("ü:{1}*", "item/ß", "review", 1_700_000_000, 4.25, 'naïve, "quoted"\nline\x00nul', "e:1")
    store.add_events([event])
    assert store.user_events("ü:{1}*") == [event]


def test_state_round_trip_survives_reopening(open_test_store: Callable[[], InterestStore]) -> None:
    store = open_test_store()
    state = np.arange(8, dtype=np.float32).reshape(2, 4)
    first = {"items": [["i1", 1.0]], "categories": [["A", 1.0]]}
    assert store.save_state("u1", state, model_version=7, event_count=3, interest_graph=first)
    second = {"items": [["i2", 0.6], ["i1", 0.4]], "categories": [["B", 0.6], ["A", 0.4]]}
    memory = {"vectors": [[0.5, -1.25], [1e-7, 3.0]], "seen": {"i1": 2}, "note": "ü", "flag": None}
    assert store.save_state("u1", state * 2, 7, 4, second, long_term_memory=memory)
    store.close()
    record = open_test_store().load_state("u1")
    assert record is not None
    np.testing.assert_array_equal(record.state, state * 2)
    assert record.state.shape == (2, 4) and record.state.dtype == np.float32
    assert (record.model_version, record.event_count, record.revision, record.stale) == (7, 4, 2, False)
    assert (record.interest_graph, record.previous_graph) == (second, first)
    assert record.long_term_memory == memory
    assert open_test_store().load_state("u2") is None


def test_long_term_memory_defaults_to_none_and_is_replaced_on_save(store: InterestStore) -> None:
    state = np.zeros((2, 4), np.float32)
    store.save_state("u1", state, 1, 1, long_term_memory={"a": 1})
    assert store.load_state("u1").long_term_memory == {"a": 1}
    store.save_state("u1", state, 1, 2)
    assert store.load_state("u1").long_term_memory is None
    store.save_state("u1", state, 1, 3, long_term_memory={})
    assert store.load_state("u1").long_term_memory == {}


def test_save_is_compare_and_set_on_the_revision(store: InterestStore) -> None:
    state = np.ones((2, 4), np.float32)
    assert store.revision("u1") == 0
    assert store.save_state("u1", state, 1, 1, {"items": [["a", 1.0]]}, expected_revision=0)
    assert store.revision("u1") == 1
    # A writer that read revision 0 computed from an outdated view: refused, nothing changes.
    assert not store.save_state("u1", state * 5, 1, 9, {"items": [["b", 1.0]]}, expected_revision=0)
    record = store.load_state("u1")
    assert (record.revision, record.event_count, record.interest_graph) == (1, 1, {"items": [["a", 1.0]]})
    np.testing.assert_array_equal(record.state, state)
    assert store.save_state("u1", state * 2, 1, 2, expected_revision=1)
    assert store.revision("u1") == 2


def test_mark_stale_bumps_the_revision_and_a_later_save_clears_it(store: InterestStore) -> None:
    state = np.ones((2, 4), np.float32)
    store.save_state("u1", state, 1, 1)
    store.mark_stale("u1")
    store.mark_stale("newcomer")  # no state yet: the mark alone is stored
    assert store.stale_users() == ["newcomer", "u1"]
    assert store.stale_users(limit=1) == ["newcomer"]
    assert store.load_state("newcomer") is None and store.revision("newcomer") == 1
    record = store.load_state("u1")
    assert (record.stale, record.revision) == (True, 2)
    # A save computed before the mark (revision 1) must not clear it.
    assert not store.save_state("u1", state, 1, 1, expected_revision=1)
    assert store.stale_users() == ["newcomer", "u1"]
    assert store.save_state("u1", state, 1, 2, expected_revision=2)
    assert store.stale_users() == ["newcomer"]
    assert not store.load_state("u1").stale


def _leftovers(store: InterestStore, user_id: str) -> list[str]:
    """What the backend still holds about the user, looked up behind the store's back."""
    if isinstance(store, RedisInterestStore):
        raw = redis.Redis.from_url(store.url)
        keys = [k.decode() for k in raw.scan_iter(match=store.user_key_pattern(user_id))]
        if raw.sismember(f"{store.prefix}stale-users", user_id):
            keys.append("stale-users member")
        raw.close()
        return keys
    assert isinstance(store, SqliteInterestStore)
    with sqlite3.connect(store.path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [
            f"{table} row"
            for table in tables
            if "user_id" in {column[1] for column in db.execute(f"PRAGMA table_info({table})")}
            for _ in db.execute(f"SELECT 1 FROM {table} WHERE user_id = ?", (user_id,))
        ]


@pytest.mark.parametrize("user", ["u1", "a:b*{c}?"])
def test_forget_removes_everything_about_the_user_and_nothing_else(store: InterestStore, user: str) -> None:
    # The other user's id is a prefix of the forgotten one's: a careless key pattern would match both.
    other = user[:1]
    state = np.ones((2, 4), np.float32)
    for user_id in (user, other):
        store.add_events([_event("e1", 1, user=user_id), _event("e2", 2, user=user_id)])
        store.save_state(user_id, state, 1, 2, {"items": [["i1", 1.0]]}, long_term_memory={"m": 1})
        store.save_state(user_id, state, 1, 2, {"items": [["i1", 1.0]]})
        store.mark_stale(user_id)
    store.upsert_items([Item("i1", "One", "", ("A",))])
    assert _leftovers(store, user)

    assert store.forget(user) == 2
    assert _leftovers(store, user) == []
    assert store.user_events(user) == [] and store.load_state(user) is None and store.revision(user) == 0
    assert store.stale_users() == [other]
    assert [e.event_id for e in store.user_events(other)] == ["e1", "e2"]
    assert store.load_state(other).revision == 3
    assert store.item("i1") is not None
    assert store.forget(user) == 0


def test_item_catalog_categories(store: InterestStore) -> None:
    assert store.upsert_items([Item("i1", "One", "", ("A", "B")), Item("i2", "Two", "", ())]) == 2
    assert store.item_categories(["i1", "i2", "i3"]) == {"i1": ("A", "B"), "i2": ()}
    assert store.item_categories([]) == {}
    assert store.item("i1") == Item("i1", "One", "", ("A", "B"))
    assert store.item("i3") is None
    assert store.items(["i2", "i3", "i1", "i2"]) == {
        "i2": Item("i2", "Two", "", ()),
        "i1": Item("i1", "One", "", ("A", "B")),
    }
    assert store.items([]) == {}


def test_added_items_and_their_encodings_per_model_version(store: InterestStore) -> None:
    assert store.added_item_ids() == [] and store.item_encodings(1) == {}
    store.mark_added_items(["new/ß", "new-2"])
    store.mark_added_items(["new-2"])
    assert store.added_item_ids() == ["new-2", "new/ß"]
    vector = np.array([0.5, -1.25, 3.0], np.float32)
    store.save_item_encodings(1, {"new/ß": ItemEncoding(vector, -2.5), "new-2": None})
    store.save_item_encodings(2, {"new-2": ItemEncoding(vector * 2, 0.75)})
    first = store.item_encodings(1)
    assert set(first) == {"new/ß", "new-2"} and first["new-2"] is None
    np.testing.assert_array_equal(first["new/ß"].vector, vector)
    assert first["new/ß"].bias == -2.5
    second = store.item_encodings(2)
    assert list(second) == ["new-2"] and second["new-2"].bias == 0.75
    np.testing.assert_array_equal(second["new-2"].vector, vector * 2)
    assert store.item_encodings(3) == {}


def test_every_write_of_added_items_or_encodings_moves_the_revision_seen_by_other_connections(
    open_test_store: Callable[[], InterestStore],
) -> None:
    writer, reader = open_test_store(), open_test_store()
    assert reader.added_items_revision() == 0
    seen = [reader.added_items_revision()]
    for write in (
        lambda: writer.mark_added_items(["new-1"]),
        lambda: writer.mark_added_items(["new-1", "new-2"]),
        lambda: writer.save_item_encodings(1, {"new-1": None}),
        lambda: writer.save_item_encodings(1, {"new-1": ItemEncoding(np.ones(3, np.float32), 0.5)}),
        lambda: writer.save_item_encodings(2, {"new-2": None}),
    ):
        write()
        seen.append(reader.added_items_revision())
        assert seen[-1] > seen[-2], f"write {len(seen) - 1} left the revision at {seen[-2]}"
    # Writes that change nothing, and reads, may leave it where it is.
    writer.mark_added_items([])
    writer.save_item_encodings(3, {})
    reader.added_item_ids()
    reader.item_encodings(1)
    assert reader.added_items_revision() == writer.added_items_revision() >= seen[-1]


def test_two_processes_saving_with_compare_and_set_lose_no_event(store_spec: StoreSpec) -> None:
    """Two processes add events for one user and save "states" (the event ids read) with compare-and-set.

    Every accepted save must have been computed from a superset of the events
    of the save before it: a writer that read before the other's save is
    refused and reads again. Without compare-and-set, a slower writer would
    overwrite a newer state with an older view (and revisions would repeat).
    """
    per_process = 40
    outcomes = workers.run_in_processes(workers.add_and_save, store_spec, per_process)
    saves = sorted(save for process_saves, _ in outcomes for save in process_saves)
    revisions = [revision for revision, _ in saves]
    assert len(set(revisions)) == len(revisions) == 2 * per_process
    for (_, before), (revision, after) in zip(saves, saves[1:], strict=False):
        assert set(before) <= set(after), f"the save of revision {revision} lost events {set(before) - set(after)}"
    store = store_spec.open()
    events = store.user_events("shared")
    assert len(events) == 2 * per_process
    record = store.load_state("shared")
    assert record.event_count == 2 * per_process
    assert record.long_term_memory == {"event_ids": sorted(e.event_id for e in events)}
    assert record.revision == max(revisions)
    store.close()
    print(f"saves refused per process: {[refused for _, refused in outcomes]}")


def test_sqlite_files_opened_by_several_processes_at_once_all_open(tmp_path) -> None:
    """The first opener switches a new file to WAL; the others must wait for it, not fail with "locked".

    Before the switch was retried, about 7 % of six simultaneous opens of a new
    file failed (measured over 240 opens), which crashed a worker in CI.
    """
    outcomes = workers.run_in_processes(workers.open_fresh_files, str(tmp_path), 10, processes=6)
    assert [error for errors in outcomes for error in errors] == []
    for n in range(10):
        with sqlite3.connect(tmp_path / f"fresh-{n}.sqlite") as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("state.sqlite", SqliteInterestStore, "state.sqlite"),
        ("sqlite:///state.sqlite", SqliteInterestStore, "state.sqlite"),
        ("sqlite:///:memory:", SqliteInterestStore, ":memory:"),
    ],
)
def test_open_store_sqlite_urls(url: str, kind: type, path: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(url) as store:
        assert isinstance(store, kind) and store.path == path
    assert open_store(f"sqlite:///{tmp_path}/abs.sqlite").path == f"{tmp_path}/abs.sqlite"


def test_open_store_redis_url_and_prefix(redis_url: str) -> None:
    with open_store(redis_url, redis_prefix="ns1:") as first, open_store(redis_url, redis_prefix="ns2:") as second:
        assert isinstance(first, RedisInterestStore)
        first.add_events([_event("e1", 1)])
        assert second.user_events("u1") == []
        assert len(first.user_events("u1")) == 1
        first.forget("u1")


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite://relative-without-third-slash", "sqlite:///"])
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match="expected a file path"):
        open_store(url)


def test_sqlite_file_of_the_earlier_layout_is_migrated_with_its_data(tmp_path) -> None:
    path = str(tmp_path / "old.sqlite")
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE events (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
                event_type TEXT NOT NULL, timestamp INTEGER NOT NULL, value REAL NOT NULL, text TEXT NOT NULL);
            CREATE TABLE interest_states (user_id TEXT PRIMARY KEY, state BLOB NOT NULL, shape TEXT NOT NULL,
                model_version INTEGER NOT NULL, event_count INTEGER NOT NULL, updated_at REAL NOT NULL,
                interest_graph TEXT NOT NULL, previous_graph TEXT);
            INSERT INTO events VALUES ('e1', 'u1', 'i1', 'view', 5, 1.0, '');
            """
        )
        db.execute(
            "INSERT INTO interest_states VALUES ('u1', ?, '2', 3, 1, 0.0, '{}', NULL)",
            (np.array([1.0, 2.0], np.float32).tobytes(),),
        )
    store = SqliteInterestStore(path)
    assert store.user_events("u1") == [_event("e1", 5)]
    # The same event id for another user is now a different event.
    assert len(store.add_events([_event("e1", 5, user="u2")])) == 1
    record = store.load_state("u1")
    np.testing.assert_array_equal(record.state, [1.0, 2.0])
    assert (record.model_version, record.long_term_memory, record.revision) == (3, None, 0)
    store.close()
