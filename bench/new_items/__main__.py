"""What items added after training cost: encoding them, and recommending with them.

1. `encode_items` in process (the SavedModel loaded with only TensorFlow):
   time per call for batches of 1, 8 and 32 MovieLens item texts.
2. Over gRPC, against the project's model server: `InterestClient.add_items`
   throughput, and `InterestClient.recommend` (k=10) for a user with 50 events
   while the store holds 0, 100, 1,000 and 10,000 added items (the client
   scores them itself and merges them with the model's top k). Twice: with
   nothing written between calls (the client reuses what it read), and with
   another connection rewriting one item's encoding before every call (the
   client reads every encoding again).

Results go to bench/results/new_items.json.

    .venv/bin/python -m bench.new_items [--model-dir BASE_PATH] [--calls 30]

Without --model-dir it uses (and trains on first use) the same pipeline
model as bench/serving.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np
import tensorflow as tf

from bench import REPO_ROOT
from bench.serving.model import existing_model, load_movielens, trained_model
from bench.serving.server import ServerProcess
from schemas import signatures as s
from schemas.events import Event, Item
from serving.client import InterestClient
from serving.interest_store import SqliteInterestStore

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "new_items.json")
BATCH_SIZES = (1, 8, 32)
ADDED_COUNTS = (0, 100, 1_000, 10_000)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def encode_in_process(version_dir: str, items: list[Item], calls: int) -> dict[str, dict[str, float]]:
    """Time per `encode_items` call, per batch size, in this process."""
    encode = tf.saved_model.load(version_dir).signatures[s.ENCODE_ITEMS]
    result = {}
    rng = random.Random(0)
    for size in BATCH_SIZES:
        seconds = []
        for n in range(calls + 3):
            batch = rng.sample(items, size)
            width = max(1, *(len(i.categories) for i in batch))
            inputs = {
                s.TITLES: tf.constant([i.title for i in batch]),
                s.DESCRIPTIONS: tf.constant([i.description for i in batch]),
                s.ITEM_CATEGORIES: tf.constant(
                    [list(i.categories) + [""] * (width - len(i.categories)) for i in batch]
                ),
            }
            start = time.perf_counter()
            encode(**inputs)
            if n >= 3:  # the first calls trace and warm up
                seconds.append(time.perf_counter() - start)
        result[str(size)] = _percentiles(seconds) | {
            "per_item_p50_ms": round(_percentiles(seconds)["p50_ms"] / size, 2)
        }
        print(f"[new_items] encode_items, {size} items per call: {result[str(size)]}", flush=True)
    return result


def added_item(n: int, template: Item) -> Item:
    """The n-th synthetic added item: a MovieLens item's text under a new id."""
    return Item(f"added-{n}", f"{template.title} (new edition {n})", template.description, template.categories)


def recommend_with_added_items(model: Any, events: list[Event], items: list[Item], calls: int) -> dict[str, Any]:
    """add_items throughput, then recommend latency as the added catalog grows."""
    user = Counter(e.user_id for e in events).most_common(1)[0][0]
    history = sorted((e for e in events if e.user_id == user), key=lambda e: e.timestamp)[:50]
    rng = random.Random(1)
    result: dict[str, Any] = {"user_events": len(history), "recommend_k10": {}, "recommend_k10_after_a_write": {}}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(model, None, os.path.join(tmp, "server.log"))
        try:
            with SqliteInterestStore(os.path.join(tmp, "state.sqlite")) as store:
                store.upsert_items(items)
                with InterestClient(server.target, store, model.name) as client:
                    client.record(history)
                    added = 0
                    for count in ADDED_COUNTS:
                        fresh = [added_item(n, rng.choice(items)) for n in range(added, count)]
                        if fresh:
                            start = time.perf_counter()
                            client.add_items(fresh)
                            seconds = time.perf_counter() - start
                            result.setdefault("add_items", []).append(
                                {
                                    "items": len(fresh),
                                    "seconds": round(seconds, 2),
                                    "items_per_s": round(len(fresh) / seconds, 1),
                                }
                            )
                            added = count
                        seconds = []
                        for n in range(calls + 2):
                            start = time.perf_counter()
                            client.recommend(user, 10)
                            if n >= 2:
                                seconds.append(time.perf_counter() - start)
                        result["recommend_k10"][str(count)] = _percentiles(seconds)
                        print(
                            f"[new_items] recommend with {count} added items: {result['recommend_k10'][str(count)]}",
                            flush=True,
                        )
                        if count:
                            result["recommend_k10_after_a_write"][str(count)] = _after_writes(
                                client, user, os.path.join(tmp, "state.sqlite"), calls
                            )
        finally:
            server.stop()
    return result


def _after_writes(client: InterestClient, user: str, store_path: str, calls: int) -> dict[str, float]:
    """recommend latency when another process's write (one encoding saved again) came before each call."""
    seconds = []
    with SqliteInterestStore(store_path) as other:
        version = client.interest_state(user).model_version
        item_id, encoding = next(iter(other.item_encodings(version).items()))
        for _ in range(calls):
            other.save_item_encodings(version, {item_id: encoding})
            start = time.perf_counter()
            client.recommend(user, 10)
            seconds.append(time.perf_counter() - start)
    timings = _percentiles(seconds)
    print(f"[new_items]   ... after a write each time: {timings}", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.new_items", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="an existing model base path (default: the bench's pipeline model)")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per measurement (default 30)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    model = existing_model(args.model_dir) if args.model_dir else trained_model()
    events, items = load_movielens()
    started = time.time()
    report = {
        "command": "python -m bench.new_items " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "model": model.origin,
        "machine": f"{os.cpu_count()} CPU cores",
        "encode_items_in_process": encode_in_process(model.version_dir, items, args.calls),
        "client_over_grpc": recommend_with_added_items(model, events, items, args.calls),
    }
    report["seconds"] = round(time.time() - started, 1)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"[new_items] written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
