"""The interest client against a real model server: concurrent writers, outages, deadlines, forget, bad input."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import read_catalog
from schemas.events import Event, InvalidRecordError, Item, parse_event
from serving.client import InterestClient
from serving.grpc_retry import RetryPolicy
from serving.interest_store import InterestStateRecord, InterestStore, SqliteInterestStore
from tests.schemas.event_strategies import raw_events
from tests.serving import workers
from tests.serving.backends import StoreSpec
from tests.serving.served_model import MODEL_NAME, ModelServer


@pytest.fixture(scope="session")
def catalog(tiny_model: dict[str, str]) -> list[Item]:
    return [entry.item for entry in read_catalog(tiny_model["catalog"])]


def _event(user: str, k: int, timestamp: int | None = None) -> Event:
    return Event(user, f"item{k % 30}", "view", timestamp or 1_000_000 + 3600 * k, 1.0, "", f"{user}-{k}")


def _recomputed(target: str, events: list[Event], catalog: list[Item], path: Path) -> InterestStateRecord:
    """The state a fresh store and client compute from exactly these events in one go."""
    with SqliteInterestStore(str(path)) as store, InterestClient(target, store, MODEL_NAME) as client:
        store.upsert_items(catalog)
        assert client.record(events).accepted == len(events)
        record = store.load_state(events[0].user_id)
    assert record is not None
    return record


def _assert_same_state(record: InterestStateRecord, expected: InterestStateRecord) -> None:
    assert not record.stale
    assert (record.event_count, record.model_version) == (expected.event_count, expected.model_version)
    np.testing.assert_allclose(record.state, expected.state, rtol=1e-5, atol=1e-5)
    assert [i for i, _ in record.interest_graph["items"]] == [i for i, _ in expected.interest_graph["items"]]


def test_two_processes_recording_for_one_user_lose_nothing(
    model_server: ModelServer, store_spec: StoreSpec, catalog: list[Item], tmp_path: Path
) -> None:
    per_process = 12
    with store_spec.open() as store:
        store.upsert_items(catalog)
    outcomes = workers.run_in_processes(workers.record_events, store_spec, model_server.target, per_process)
    assert [accepted for accepted, _, _ in outcomes] == [per_process, per_process]
    assert [duplicates for _, duplicates, _ in outcomes] == [3, 3]
    with store_spec.open() as store:
        events = store.user_events("shared")
        record = store.load_state("shared")
    assert len(events) == 2 * per_process
    assert {e.event_id for e in events} == {f"p{n}-{k}" for n in range(2) for k in range(per_process)}
    # Late events (p1 goes back in time) are placed by timestamp.
    assert events == sorted(events, key=lambda e: (e.timestamp, e.event_id))
    assert record is not None
    _assert_same_state(record, _recomputed(model_server.target, events, catalog, tmp_path / "fresh.sqlite"))


@pytest.fixture
def restartable_server(tiny_model: dict[str, str], tmp_path: Path) -> Iterator[ModelServer]:
    server = ModelServer(tiny_model["models_dir"], tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


def test_events_recorded_while_the_server_is_down_are_kept_and_folded_in_when_it_returns(
    restartable_server: ModelServer, store: InterestStore, catalog: list[Item], tmp_path: Path
) -> None:
    store.upsert_items(catalog)
    client = InterestClient(restartable_server.target, store, MODEL_NAME, timeout_s=2.0)
    assert client.record([_event("u", k) for k in range(3)]).updated_users == ["u"]

    restartable_server.stop()
    during = client.record([_event("u", 3), _event("u", 4, timestamp=1_000_000 + 1800), _event("v", 0)])
    assert (during.accepted, during.updated_users, during.model_version) == (3, [], None)
    assert during.stale_users == ["u", "v"]
    assert len(store.user_events("u")) == 5 and len(store.user_events("v")) == 1
    stale = store.load_state("u")
    assert stale.stale and stale.event_count == 3
    assert store.stale_users() == ["u", "v"]
    with pytest.raises(grpc.RpcError) as raised:
        client.recommend("u")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

    restartable_server.start()
    # The next call that needs the state brings it up to date...
    assert len(client.recommend("u", k=3)) == 3
    assert store.stale_users() == ["v"]
    # ...and catch_up does the rest.
    assert client.catch_up() == ["v"]
    assert store.stale_users() == []
    for user in ("u", "v"):
        expected = _recomputed(restartable_server.target, store.user_events(user), catalog, tmp_path / f"{user}.sqlite")
        _assert_same_state(store.load_state(user), expected)
    client.close()


def test_record_catches_up_states_left_stale(model_server: ModelServer, store: InterestStore) -> None:
    store.add_events([_event("left-behind", 0)])
    store.mark_stale("left-behind")
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        client.record([_event("someone", 0)])
    record = store.load_state("left-behind")
    assert record is not None and not record.stale and record.event_count == 1


class _AlwaysOutraced(SqliteInterestStore):
    """A store where another writer always saves first: every compare-and-set is refused."""

    def save_state(self, *args: Any, **kwargs: Any) -> bool:
        return False


def test_a_writer_outraced_every_time_leaves_the_state_marked_stale(model_server: ModelServer, tmp_path) -> None:
    store = _AlwaysOutraced(str(tmp_path / "state.sqlite"))
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        result = client.record([_event("u", 0)])
    assert (result.accepted, result.updated_users, result.stale_users) == (1, [], ["u"])
    assert store.stale_users() == ["u"] and len(store.user_events("u")) == 1


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: calls can only end by their deadline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_every_call_has_a_deadline(silent_server: str, store: InterestStore) -> None:
    retry = RetryPolicy(attempts=2, initial_backoff_s=0.01)
    with InterestClient(silent_server, store, MODEL_NAME, timeout_s=0.3, retry=retry) as client:
        started = time.monotonic()
        result = client.record([_event("u", 0)])
        assert time.monotonic() - started < 3.0
        assert result.stale_users == ["u"] and store.stale_users() == ["u"]
        assert len(store.user_events("u")) == 1
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            client.score("u", ["item1"])
        assert time.monotonic() - started < 3.0
        # The first try runs out of time; later ones may find the channel already given up on the server.
        assert raised.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


def test_forget_removes_the_user_through_the_client(model_server: ModelServer, store: InterestStore) -> None:
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        client.record([_event("gone", k) for k in range(4)] + [_event("stays", 0)])
        assert client.forget("gone") == 4
    assert store.user_events("gone") == [] and store.load_state("gone") is None
    assert len(store.user_events("stays")) == 1 and store.load_state("stays") is not None


def test_recommend_leaves_out_what_the_caller_excludes_and_refuses_what_is_not_item_ids(
    model_server: ModelServer, store: InterestStore, catalog: list[Item]
) -> None:
    store.upsert_items(catalog)
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        client.record([_event("shopper", k) for k in range(3)])
        ranked = [r.item_id for r in client.recommend("shopper", k=5)]
        shown = [r.item_id for r in client.recommend("shopper", k=4, exclude=[ranked[0], "not-in-catalog"])]
        assert shown == ranked[1:5]
        with pytest.raises(TypeError, match="not one id"):
            client.recommend("shopper", exclude=ranked[0])
        with pytest.raises(TypeError, match="as strings") as raised:
            client.recommend("shopper", exclude=[ranked[0], 7, b"item1"])
        # Only the offending ids are named.
        assert str(raised.value).endswith(("got [7, b'item1']", "got [b'item1', 7]"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(raw_events(), max_size=6), retry=st.booleans())
def test_record_of_random_records_rejects_bad_ones_and_stores_every_accepted_event(
    model_server: ModelServer, store: InterestStore, review_sentiment_head: Any, batch: list[Any], retry: bool
) -> None:
    # Review events with text are scored by the real sentiment head, as in the pipeline.
    # The store outlives the examples, so what counts as new is judged against what it held before.
    valid: list[Event] = []
    for raw in batch:
        try:
            valid.append(parse_event(raw))
        except InvalidRecordError:
            pass
    before = {u: {e.event_id: e for e in store.user_events(u)} for u in {e.user_id for e in valid}}
    new: dict[tuple[str, str], Event] = {}
    for event in valid:
        if event.event_id not in before[event.user_id]:
            new.setdefault((event.user_id, event.event_id), event)

    with InterestClient(model_server.target, store, MODEL_NAME, review_sentiment=review_sentiment_head) as client:
        result = client.record(batch, source="api")
        if retry:  # a retried batch changes nothing
            again = client.record(batch, source="api")
            assert (again.accepted, again.duplicates, again.updated_users) == (0, len(valid), [])

    assert (result.accepted, result.duplicates) == (len(new), len(valid) - len(new))
    assert len(result.rejected) == len(batch) - len(valid)
    for rejection in result.rejected:
        assert rejection.source == "api" and 1 <= rejection.line <= len(batch) and rejection.reason
        with pytest.raises(InvalidRecordError):
            parse_event(batch[rejection.line - 1])
    for user_id, stored_before in before.items():
        after = {e.event_id: e for e in store.user_events(user_id)}
        assert after == stored_before | {event_id: e for (u, event_id), e in new.items() if u == user_id}
        state = store.load_state(user_id)
        assert state is not None and not state.stale and state.event_count == len(after)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from interest_graph.cli import main

    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        ("record", ["JSON lines on stdin", "event_id", "unavailable", "--store", "redis://"]),
        ("recommend", ["top k", "--k", "--timeout", "--new-items"]),
        ("score", ["-Infinity", "item ids", "add-items"]),
        ("add-items", ["encode_items", "stdin", "a newer model"]),
        ("interests", ["categories and items", "--json"]),
        ("forget", ["Delete the user's events", "user_id", "--redis-prefix"]),
        ("serve", ["--model_base_path", "--port"]),
    ],
)
def test_every_client_command_explains_itself(
    command: str, phrases: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli([command, "--help"], capsys)
    assert code == 0
    for phrase in phrases:
        assert phrase in out, out


def test_cli_forget(open_test_store: Callable[[], InterestStore], store_spec: StoreSpec, capsys) -> None:
    store = open_test_store()
    store.add_events([_event("cli-gone", k) for k in range(2)] + [_event("cli-stays", 0)])
    code, out = _cli(["forget", "cli-gone", "--store", store_spec.url, "--redis-prefix", store_spec.prefix], capsys)
    assert code == 0 and '"events_removed": 2' in out
    assert store.user_events("cli-gone") == [] and len(store.user_events("cli-stays")) == 1
