"""The item catalog that travels with the graph examples.

The graph builder writes it next to the examples it builds (training
interaction counts included, computed from the training split only) and the
trainer reads it to build the model's item vocabulary, item text vectors and
item <-> item co-interaction graph (also from the training split only).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable

from schemas.events import Item

CATALOG_DIR = "catalog"
CATALOG_FILE = "items.jsonl"


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """An item, how often it was interacted with in the training split, and what with.

    Attributes:
      co_interactions: the item's strongest co-interaction neighbours in the
        training split, ((item_id, weight), ...), strongest first.
    """

    item: Item
    train_count: int
    co_interactions: tuple[tuple[str, float], ...] = ()


def catalog_path(examples_uri: str) -> str:
    """Where the catalog lives inside a graph-examples artifact."""
    return os.path.join(examples_uri, CATALOG_DIR, CATALOG_FILE)


def write_catalog(path: str, entries: Iterable[CatalogEntry]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            record = dataclasses.asdict(entry.item)
            record["categories"] = list(entry.item.categories)
            record["train_count"] = entry.train_count
            record["co_interactions"] = [list(pair) for pair in entry.co_interactions]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_catalog(path: str) -> list[CatalogEntry]:
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            count = int(record.pop("train_count"))
            neighbours = tuple((str(i), float(w)) for i, w in record.pop("co_interactions", []))
            record["categories"] = tuple(record["categories"])
            entries.append(CatalogEntry(Item(**record), count, neighbours))
    return entries
