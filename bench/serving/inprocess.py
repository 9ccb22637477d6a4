"""The lower bound: the served signatures called in this process, no server.

The SavedModel is loaded with `tf.saved_model.load`, as the server loads it,
and a call is what the server does per request minus everything serving adds:
convert numpy inputs to tensors, run the signature, turn the outputs into
numpy. Concurrency is threads over one loaded model (one model copy, as in the
server); TensorFlow releases the GIL while a signature runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from bench.serving.stats import Timings
from bench.serving.workers import RUN_TIMEOUT_S, split_calls
from bench.serving.workloads import PRELOAD_BATCH, UserInputs, preload, signature_inputs
from schemas import signatures as s
from schemas.events import Event, Item
from serving.client import InterestClient
from serving.interest_store import SqliteInterestStore

# The client below only encodes subgraphs from its store; it never opens its channel.
UNUSED_TARGET = "127.0.0.1:1"

Call = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def signature_call(signature: Any) -> Call:
    """Wraps a loaded signature as numpy in, numpy out.

    Args:
      signature: `loaded.signatures[name]`.

    Returns:
      A function of {input name: array} returning {output name: array}.
    """
    specs = signature.structured_input_signature[1]

    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {name: tf.convert_to_tensor(inputs[name], dtype=spec.dtype) for name, spec in specs.items()}
        return {name: value.numpy() for name, value in signature(**tensors).items()}

    return call


class InProcessModel:
    """The `update_interest` and `recommend` signatures of a SavedModel version, loaded here.

    Args:
      version_dir: `<base_path>/<version>`.
    """

    def __init__(self, version_dir: str) -> None:
        # Kept as an attribute: the loaded object owns the variables the signatures read.
        self._loaded = tf.saved_model.load(version_dir)
        self.calls = {name: signature_call(self._loaded.signatures[name]) for name in (s.UPDATE_INTEREST, s.RECOMMEND)}


def build_inputs(
    calls: Mapping[str, Call], histories: Mapping[str, Sequence[Event]], items: Sequence[Item]
) -> dict[str, UserInputs]:
    """Every user's inputs, built exactly as the client processes build theirs.

    States come from the in-process `update_interest` on the users' full
    histories (the clients get theirs from the server: the same model).

    Args:
      calls: `InProcessModel.calls`.
      histories: user -> real history.
      items: the catalog.

    Returns:
      user -> `signature_inputs`.
    """
    store = SqliteInterestStore(":memory:")
    preload(store, items, histories)
    client = InterestClient(UNUSED_TARGET, store)
    users = list(histories)
    inputs = {}
    try:
        for start in range(0, len(users), PRELOAD_BATCH):
            chunk = users[start : start + PRELOAD_BATCH]
            subgraphs = np.array([client.subgraph(u) for u in chunk], dtype=object)
            states = calls[s.UPDATE_INTEREST]({s.SUBGRAPH: subgraphs})[s.INTEREST_STATE]
            for user, state in zip(chunk, states, strict=True):
                inputs[user] = signature_inputs(client, user, state)
    finally:
        client.close()
        store.close()
    return inputs


def run_threads(call: Call, shares: Sequence[Sequence[Mapping[str, np.ndarray]]], warmup: int, calls: int) -> Timings:
    """Calls a signature from one thread per share, all measured together.

    Args:
      call: the signature call.
      shares: per thread, the inputs it cycles through.
      warmup: unmeasured calls per thread before the barrier.
      calls: measured calls, all threads together.

    Returns:
      The measured latencies and wall time.
    """
    barrier = threading.Barrier(len(shares))
    results: list[tuple[list[float], float, float] | None] = [None] * len(shares)
    errors: list[BaseException] = []

    def work(index: int, inputs: Sequence[Mapping[str, np.ndarray]], count: int) -> None:
        try:
            for i in range(warmup):
                call(inputs[i % len(inputs)])
            barrier.wait(timeout=RUN_TIMEOUT_S)
            latencies = []
            start = time.monotonic()
            for i in range(warmup, warmup + count):
                t0 = time.perf_counter()
                call(inputs[i % len(inputs)])
                latencies.append(time.perf_counter() - t0)
            results[index] = (latencies, start, time.monotonic())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            barrier.abort()
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(i, share, count), name=f"inprocess-{i}")
        for i, (share, count) in enumerate(zip(shares, split_calls(calls, len(shares)), strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    done = [r for r in results if r is not None]
    return Timings([x for r in done for x in r[0]], max(r[2] for r in done) - min(r[1] for r in done))
