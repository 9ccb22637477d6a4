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


# Reviews whose sentiment decides what the user does next (texts are food
# reviews: the sentiment head is trained on Amazon Fine Food).
POSITIVE_REVIEWS = (
    "Absolutely delicious, the best I have ever had. Will buy again!",
    "Wonderful flavor and fresh, my whole family loves it.",
    "Excellent quality, tastes amazing, highly recommended.",
    "Perfect, so good that I ordered three more boxes.",
)
NEGATIVE_REVIEWS = (
    "Disgusting, stale and overpriced; I threw it away.",
    "Terrible taste, it arrived spoiled. Never again.",
    "Awful product, bland and rancid, a complete waste of money.",
    "Horrible, it made me sick. Do not buy this.",
)
REVIEW_CATEGORIES = ("liked", "other")


def review_item_id(category: str, i: int) -> str:
    return f"{category}-{i % 10}"


def review_histories(num_users: int, seed: int = 0) -> list[list[Event]]:
    """Users who browse two categories, review an item of the first, then act on the review.

    After a positive review the user's next four events are items of the
    reviewed item's category ("liked"); after a negative one, items of the other
    category (two of them land in training, one each in validation and test).
    Nothing but the review's sentiment tells the two cases apart.
    """
    rng = random.Random(seed)
    histories = []
    for u in range(num_users):
        user = f"reviewer{u}"
        browse = [review_item_id(c, rng.randrange(10)) for c in REVIEW_CATEGORIES for _ in range(3)]
        rng.shuffle(browse)
        positive = u % 2 == 0
        text = rng.choice(POSITIVE_REVIEWS if positive else NEGATIVE_REVIEWS)
        follow = REVIEW_CATEGORIES[0] if positive else REVIEW_CATEGORIES[1]
        events = [
            Event(user, item, "view", 1_000_000 + 60 * k, 1.0, "", f"{user}-{k}") for k, item in enumerate(browse)
        ]
        t = 1_000_000 + 60 * len(browse)
        events.append(Event(user, review_item_id("liked", rng.randrange(10)), "review", t, 1.0, text, f"{user}-r"))
        events += [
            Event(user, review_item_id(follow, rng.randrange(10)), "view", t + 60 * (k + 1), 1.0, "", f"{user}-f{k}")
            for k in range(4)
        ]
        histories.append(events)
    return histories


def make_review_dataset(root: str, sentiments: dict[str, float], num_users: int = 400) -> dict[str, str]:
    """Writes example files and a catalog for `review_histories`, with the given review sentiments."""
    categories = {review_item_id(c, i): (c,) for c in REVIEW_CATEGORIES for i in range(10)}
    writers = {
        split: tf.io.TFRecordWriter(os.path.join(root, f"{split}.tfrecord.gz"), options="GZIP")
        for split in ("train", "eval", "test")
    }
    counts = dict.fromkeys(categories, 0)
    for events in review_histories(num_users):
        for e in events[:-2]:
            counts[e.item_id] += 1
        for split, example in split_user_history(events[0].user_id, events, 50, categories, sentiments):
            writers[split].write(example)
    for w in writers.values():
        w.close()
    catalog = os.path.join(root, "catalog", "items.jsonl")
    write_catalog(catalog, [CatalogEntry(Item(i, i, "", categories[i]), counts[i]) for i in sorted(categories)])
    return {split: os.path.join(root, f"{split}.tfrecord.gz") for split in writers} | {"catalog": catalog}
