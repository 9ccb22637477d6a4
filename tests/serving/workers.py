"""Code run in spawned processes by the store and client tests (importable, so spawn can find it)."""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.events import Event
from tests.serving.backends import StoreSpec


def run_in_processes(worker: Callable[..., Any], *args: Any, processes: int = 2, timeout_s: float = 300.0) -> list[Any]:
    """Runs `worker(*args, name, start, results)` in `processes` spawned processes at once; returns their results.

    `start` is a barrier all pass after their (slow) imports and setup, so
    their work really overlaps; each puts (name, result) on `results`.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    spawned = [context.Process(target=worker, args=(*args, f"p{n}", start, results)) for n in range(processes)]
    for process in spawned:
        process.start()
    collected: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(collected) < len(spawned):
            try:
                name, result = results.get(timeout=1.0)
                collected[name] = result
            except queue.Empty:
                # A worker that died (its traceback is on stderr) will never report: stop waiting for it.
                crashed = [p.exitcode for p in spawned if p.exitcode not in (None, 0)]
                assert not crashed, f"a worker process failed with exit code {crashed}; see its traceback above"
                assert time.monotonic() < deadline, f"the workers did not report within {timeout_s} s"
    finally:
        for process in spawned:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in spawned), [p.exitcode for p in spawned]
    return [collected[name] for name in sorted(collected)]


def open_fresh_files(directory: str, files: int, name: str, start: Any, results: Any) -> None:
    """Opens SQLite stores on `files` new files in turn, each at the same moment as the other workers.

    Puts (name, errors) on `results`: the error each failed open raised.
    """
    from serving.stores.sqlite_store import SqliteInterestStore

    errors = []
    for n in range(files):
        start.wait()
        try:
            SqliteInterestStore(f"{directory}/fresh-{n}.sqlite").close()
        except Exception as error:  # noqa: BLE001 - the test reports every failure
            errors.append(repr(error))
    results.put((name, errors))


def add_and_save(spec: StoreSpec, count: int, name: str, start: Any, results: Any) -> None:
    """Adds `count` events for user "shared", each followed by a compare-and-set save loop.

    The saved "state" is the set of event ids read (kept as long-term memory).
    Puts (name, (saves, refused)) on `results`: `saves` lists (the revision the
    save produced, the event ids it was computed from) for every accepted
    save; `refused` counts saves refused because the other process saved in
    between.
    """
    store = spec.open()
    start.wait()
    saves: list[tuple[int, list[str]]] = []
    refused = 0
    for k in range(count):
        # Timestamps go down, so every event arrives late and is placed by time.
        store.add_events([Event("shared", f"i{k}", "view", 1000 + 2 * (count - k), 1.0, "", f"{name}-{k}")])
        while True:
            revision = store.revision("shared")
            events = store.user_events("shared")
            ids = sorted(e.event_id for e in events)
            time.sleep(random.uniform(0.0, 0.004))  # stands for the model call between read and save
            state = np.full((2, 4), len(events), np.float32)
            if store.save_state(
                "shared", state, 1, len(events), long_term_memory={"event_ids": ids}, expected_revision=revision
            ):
                saves.append((revision + 1, ids))
                break
            refused += 1
    store.close()
    results.put((name, (saves, refused)))


def record_events(spec: StoreSpec, target: str, count: int, name: str, start: Any, results: Any) -> None:
    """Records `count` events for user "shared" through an InterestClient, one call each, then retries a batch.

    Puts (name, (events accepted, duplicates on the retried batch, users left stale)) on `results`.
    """
    from serving.client import InterestClient
    from tests.serving.served_model import MODEL_NAME

    client = InterestClient(target, spec.open(), MODEL_NAME)
    events = [
        {
            "user_id": "shared",
            "item_id": f"item{(3 * k + len(name)) % 30}",
            "event_type": "purchase" if k % 3 else "view",
            # p0 moves forward in time, p1 backward: its events land between p0's, as late arrivals.
            "timestamp": 1_000_000 + 7200 * (k if name == "p0" else count - k) + (3600 if name == "p1" else 0),
            "event_id": f"{name}-{k}",
        }
        for k in range(count)
    ]
    start.wait()
    accepted, stale = 0, set()
    for event in events:
        result = client.record([event])
        accepted += result.accepted
        stale.update(result.stale_users)
    duplicates = client.record(events[:3]).duplicates
    client.store.close()
    client.close()
    results.put((name, (accepted, duplicates, sorted(stale))))
