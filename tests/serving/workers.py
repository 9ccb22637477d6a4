"""Code run in spawned processes by the store and client tests (importable, so spawn can find it)."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.events import Event
from tests.serving.backends import StoreSpec


def run_in_two_processes(worker: Callable[..., Any], *args: Any, timeout_s: float = 300.0) -> list[Any]:
    """Runs `worker(*args, name, start, results)` in two spawned processes at once; returns their results.

    `start` is a barrier both pass after their (slow) imports and setup, so
    their work really overlaps; each puts (name, result) on `results`.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=worker, args=(*args, f"p{n}", start, results)) for n in range(2)]
    for process in processes:
        process.start()
    try:
        collected = dict(results.get(timeout=timeout_s) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes), [p.exitcode for p in processes]
    return [collected[name] for name in sorted(collected)]


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
