"""Synthetic interest data with a known answer, for trainer tests.

Items 0..N-1 sit on a cycle; every user walks it from a random start, so the
next item is always the successor of the last one. A model that reads the
user's event window (and knows which event is the most recent) can learn this;
popularity cannot.
"""

from __future__ import annotations

import os
import random

import numpy as np
import tensorflow as tf

from pipeline.components.graph_builder import split_user_history
from schemas.catalog import CatalogEntry, write_catalog
from schemas.events import Event, Item

NUM_ITEMS = 30
WALK_LENGTH = 9
# In the catalog, never in any event: the cold-start case.
COLD_ITEM = "cold-item"


def item_id(i: int) -> str:
    return f"item{i % NUM_ITEMS}"


def make_dataset(root: str, num_users: int = 240, seed: int = 0) -> dict[str, str]:
    """Writes train/eval/test example files and a catalog; returns their paths."""
    rng = random.Random(seed)
    writers = {
        split: tf.io.TFRecordWriter(os.path.join(root, f"{split}.tfrecord.gz"), options="GZIP")
        for split in ("train", "eval", "test")
    }
    counts = {item_id(i): 0 for i in range(NUM_ITEMS)}
    categories = {item_id(i): (f"cat{i % 3}",) for i in range(NUM_ITEMS)}
    for u in range(num_users):
        start = rng.randrange(NUM_ITEMS)
        events = [
            Event(f"user{u}", item_id(start + k), "rating", 1_000_000 + 3600 * k, 4.0, "", f"u{u}-{k}")
            for k in range(WALK_LENGTH)
        ]
        for e in events[:-2]:
            counts[e.item_id] += 1
        for split, example in split_user_history(f"user{u}", events, 50, categories):
            writers[split].write(example)
    for w in writers.values():
        w.close()
    catalog = os.path.join(root, "catalog", "items.jsonl")
    entries = [CatalogEntry(Item(item, f"Item {item}", "", categories[item]), counts[item]) for item in sorted(counts)]
    entries.append(CatalogEntry(Item(COLD_ITEM, "A brand new item", "", ("cat0",)), 0))
    write_catalog(catalog, entries)
    return {split: os.path.join(root, f"{split}.tfrecord.gz") for split in writers} | {"catalog": catalog}


def random_text_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
