"""Concurrent clients as separate processes, started together at a barrier.

Why processes: the client is Python (SQLite, subgraph encoding, protobuf), so
16 client threads in one process would queue on one GIL and the benchmark
would measure the client's interpreter lock, not the server. Separate
processes behave like separate application instances, which is how a real
deployment calls a model server. They are started with "spawn" because forking
a process that has imported TensorFlow is unsafe.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from bench.serving.stats import Timings
from bench.serving.workloads import PRELOAD_BATCH, NewEvents, client_calls, preload, signature_inputs
from schemas.events import Event, Item
from serving.client import InterestClient
from serving.interest_store import SqliteInterestStore

# Generous: 16 processes importing TensorFlow on 2 busy cores take a while.
START_TIMEOUT_S = 600.0
# Longest a client may take for warmup plus its measured calls.
RUN_TIMEOUT_S = 1800.0


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What one client process needs.

    Attributes:
      index: the client's number (makes its event ids unique).
      target: the server's gRPC address.
      model_name: the served model's name.
      store_path: this client's own SQLite store (created and preloaded here).
      histories: this client's users and their real histories.
      items: the catalog.
      timeout_s: deadline of every gRPC call.
      seed: for the `record` events.
    """

    index: int
    target: str
    model_name: str
    store_path: str
    histories: Mapping[str, Sequence[Event]]
    items: Sequence[Item]
    timeout_s: float
    seed: int


def _setup(spec: WorkerSpec) -> dict[str, Any]:
    """Preloads the store, computes every user's state over gRPC, builds the workload calls."""
    store = SqliteInterestStore(spec.store_path)
    preload(store, spec.items, spec.histories)
    client = InterestClient(spec.target, store, spec.model_name, timeout_s=spec.timeout_s)
    users = list(spec.histories)
    for start in range(0, len(users), PRELOAD_BATCH):
        client.update_interests(users[start : start + PRELOAD_BATCH])
    states = {u: store.load_state(u) for u in users}
    inputs = {u: signature_inputs(client, u, states[u].state) for u in users}
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(spec.target))
    new_events = NewEvents(str(spec.index), spec.histories, [i.item_id for i in spec.items], spec.seed + spec.index)
    return client_calls(client, stub, users, inputs, new_events, spec.timeout_s)


def worker_main(conn: Connection, barrier: Any, spec: WorkerSpec) -> None:
    """A client process: set up, then run the workloads the parent asks for.

    Protocol on `conn`: the worker sends ("ready", None); then for every
    (workload, warmup, calls) it receives it runs `warmup` unmeasured calls,
    waits at the barrier for the other clients, runs `calls` measured ones and
    sends ("done", (latencies_s, start, end)); None ends it. Any failure is
    sent as ("error", traceback) and breaks the barrier so no client waits forever.

    Args:
      conn: this worker's end of the pipe.
      barrier: a multiprocessing Barrier shared by all clients of the pool.
      spec: what to set up.
    """
    try:
        calls = _setup(spec)
        conn.send(("ready", None))
        while (command := conn.recv()) is not None:
            workload, warmup, count = command
            call = calls[workload]
            for i in range(warmup):
                call(i)
            barrier.wait(timeout=RUN_TIMEOUT_S)
            latencies = []
            start = time.monotonic()
            for i in range(warmup, warmup + count):
                t0 = time.perf_counter()
                call(i)
                latencies.append(time.perf_counter() - t0)
            conn.send(("done", (latencies, start, time.monotonic())))
    except BaseException:  # noqa: BLE001 - report anything to the parent instead of dying silently
        barrier.abort()
        conn.send(("error", traceback.format_exc()))


def split_calls(total: int, parts: int) -> list[int]:
    """Divides `total` calls among `parts` clients as evenly as possible.

    Args:
      total: measured calls of the workload, all clients together.
      parts: number of clients.

    Returns:
      Calls per client, summing to `total`.
    """
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ClientPool:
    """N client processes, each with its own store preloaded with its users' histories.

    Args:
      target: the server's gRPC address.
      model_name: the served model's name.
      shares: one {user: history} per client.
      items: the catalog.
      workdir: where the clients' SQLite stores go.
      timeout_s: deadline of every gRPC call.
      seed: for the `record` events.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        shares: Sequence[Mapping[str, Sequence[Event]]],
        items: Sequence[Item],
        workdir: str,
        timeout_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(len(shares))
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        for index, share in enumerate(shares):
            store_path = os.path.join(workdir, f"client{index}.sqlite")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(store_path + suffix):
                    os.remove(store_path + suffix)
            spec = WorkerSpec(index, target, model_name, store_path, dict(share), list(items), timeout_s, seed)
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, self._barrier, spec), daemon=True)
            process.start()
            self._conns.append(parent)
            self._processes.append(process)
        try:
            for index in range(len(shares)):
                self._receive(index, "ready", START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def _receive(self, index: int, expected: str, timeout_s: float) -> Any:
        conn, process = self._conns[index], self._processes[index]
        deadline = time.monotonic() + timeout_s
        while not conn.poll(1.0):
            if not process.is_alive():
                raise RuntimeError(f"client {index} exited with code {process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"client {index} sent nothing for {timeout_s:.0f} s (expected {expected!r})")
        kind, payload = conn.recv()
        if kind == "error":
            raise RuntimeError(f"client {index} failed:\n{payload}")
        if kind != expected:
            raise RuntimeError(f"client {index} sent {kind!r}, expected {expected!r}")
        return payload

    def run(self, workload: str, warmup: int, calls: int) -> Timings:
        """Runs a workload on every client at once.

        Args:
          workload: one of `bench.serving.workloads.CLIENT_WORKLOADS`.
          warmup: unmeasured calls per client before the barrier.
          calls: measured calls, all clients together.

        Returns:
          Every measured latency and the wall time from the first start to the last end.
        """
        for conn, count in zip(self._conns, split_calls(calls, len(self._conns)), strict=True):
            conn.send((workload, warmup, count))
        results = [self._receive(i, "done", RUN_TIMEOUT_S) for i in range(len(self._conns))]
        latencies = [latency for result in results for latency in result[0]]
        wall = max(r[2] for r in results) - min(r[1] for r in results)
        return Timings(latencies, wall)

    def close(self) -> None:
        """Stops the client processes."""
        for conn, process in zip(self._conns, self._processes, strict=True):
            if process.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
