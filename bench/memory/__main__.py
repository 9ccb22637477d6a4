"""Checks that incremental interest updates match a full recomputation.

For a sample of MovieLens-100k users, the user's whole history is replayed
event by event the way the online client does it (`schemas.memory`: after
each event, `fold_interest` merges only the newly evicted events into the
stored memory), and the final interest state, memory and top-10
recommendations are compared with one `update_interest` call over the whole
history (every old event in the memory node set). Results go to
bench/results/memory_consistency.json.

    .venv/bin/python -m bench.memory [--model-dir BASE_PATH] [--users 40]

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
import time
from collections import defaultdict
from typing import Any

import numpy as np
import tensorflow as tf

from bench import REPO_ROOT
from bench.serving.model import existing_model, load_movielens, trained_model
from schemas import signatures as s
from schemas.events import Event
from schemas.graph import EventWindowConfig, event_order, recent_item_ids
from schemas.memory import MemoryCheckpoint, checkpoint_after, interest_request, plan_update

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "memory_consistency.json")
# Relative difference (L2 norm of the difference over the norm of the full
# recomputation's) accepted between the incremental and the recomputed
# interest state, and likewise for the long-term memory, which is checked on
# its own (a model trained with `use_memory=False` does not read it into the
# interest state, yet stores and folds it).
STATE_TOLERANCE = 1e-4


def _relative_difference(incremental: np.ndarray, full: np.ndarray) -> float:
    return float(np.linalg.norm(incremental - full) / np.linalg.norm(full))


def _call(
    loaded: Any, history: list[Event], categories: dict, window: int, checkpoint: MemoryCheckpoint | None
) -> tuple[np.ndarray, MemoryCheckpoint]:
    prediction_time = history[-1].timestamp + 1
    plan = plan_update(history, prediction_time, window, checkpoint)
    signature, inputs = interest_request(plan, prediction_time, categories)
    outputs = loaded.signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
    memory = outputs[s.LONG_TERM_MEMORY].numpy()[0]
    return outputs[s.INTEREST_STATE].numpy()[0], checkpoint_after(plan, memory, prediction_time, 1)


def _top10(loaded: Any, state: np.ndarray, history: list[Event], window: int) -> list[str]:
    seen = sorted({e.item_id for e in history})
    out = loaded.signatures[s.RECOMMEND](
        **{
            s.INTEREST_STATE: tf.constant(state[None]),
            s.RECENT_ITEM_IDS: tf.constant([recent_item_ids(history[-window:], s.RECENT_ITEMS)]),
            s.EXCLUDE_ITEM_IDS: tf.constant([seen or [s.PADDING_ITEM_ID]]),
            s.K: tf.constant([10], tf.int32),
        }
    )
    return [i.decode() for i in out[s.ITEM_IDS].numpy()[0] if i]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=None, help="TF Serving model base path (default: bench/serving's)")
    parser.add_argument("--users", type=int, default=40, help="users replayed (half the longest, half at random)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    model = existing_model(args.model_dir) if args.model_dir else trained_model()
    loaded = tf.saved_model.load(model.version_dir)
    events, items = load_movielens()
    categories = {item.item_id: item.categories for item in items}
    histories: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        histories[event.user_id].append(event)
    window = EventWindowConfig().max_events
    longest = sorted(histories, key=lambda u: (-len(histories[u]), u))
    rest = [u for u in longest[args.users // 2 :] if len(histories[u]) > window]
    users = longest[: args.users // 2] + random.Random(0).sample(rest, min(len(rest), args.users - args.users // 2))

    rows = []
    started = time.time()
    for n, user in enumerate(users, start=1):
        history = sorted(histories[user], key=event_order)
        checkpoint = None
        calls_started = time.perf_counter()
        for k in range(1, len(history) + 1):
            state, checkpoint = _call(loaded, history[:k], categories, window, checkpoint)
        per_update_ms = (time.perf_counter() - calls_started) * 1000 / len(history)
        full_state, full_checkpoint = _call(loaded, history, categories, window, None)
        assert checkpoint is not None
        memory, full_memory = np.array(checkpoint.memory), np.array(full_checkpoint.memory)
        rows.append(
            {
                "user_id": user,
                "events": len(history),
                "remembered": full_checkpoint.folded,
                "state_rel_diff": _relative_difference(state, full_state),
                "state_max_abs_diff": float(np.max(np.abs(state - full_state))),
                "memory_rel_diff": _relative_difference(memory, full_memory),
                "memory_max_abs_diff": float(np.max(np.abs(memory - full_memory))),
                "top10_same": _top10(loaded, state, history, window) == _top10(loaded, full_state, history, window),
                "incremental_update_ms": per_update_ms,
            }
        )
        print(
            f"[memory] {n}/{len(users)} user {user}: {len(history)} events, "
            f"state rel diff {rows[-1]['state_rel_diff']:.2e}, memory {rows[-1]['memory_rel_diff']:.2e}, "
            f"top-10 same: {rows[-1]['top10_same']}",
            flush=True,
        )
    worst = max(r["state_rel_diff"] for r in rows)
    worst_memory = max(r["memory_rel_diff"] for r in rows)
    result = {
        "protocol": {
            "command": "python -m bench.memory " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
            "model": model.origin,
            "window": window,
            "users": len(rows),
            "tolerance": {"state_rel_diff": STATE_TOLERANCE, "memory_rel_diff": STATE_TOLERANCE},
            "seconds": round(time.time() - started, 1),
        },
        "summary": {
            "worst_state_rel_diff": worst,
            "worst_state_max_abs_diff": max(r["state_max_abs_diff"] for r in rows),
            "worst_memory_rel_diff": worst_memory,
            "worst_memory_max_abs_diff": max(r["memory_max_abs_diff"] for r in rows),
            "top10_identical_share": sum(r["top10_same"] for r in rows) / len(rows),
            "events_replayed": sum(r["events"] for r in rows),
            "within_tolerance": worst <= STATE_TOLERANCE and worst_memory <= STATE_TOLERANCE,
        },
        "users": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["summary"], indent=2))
    return 0 if result["summary"]["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
