"""Adapter: MovieLens-100k (RecBole's atomic files) -> the project's event format.

Each rating becomes a `rating` event whose value is the rating (1-5); each
movie becomes a catalog item whose title is the movie title, whose
description gives its release year, and whose categories are its genres.
"""

from __future__ import annotations

import csv
import os

from schemas.events import CATEGORY_SEPARATOR, EVENT_FIELDS, ITEM_FIELDS


def convert_movielens_100k(source_dir: str, output_dir: str) -> tuple[str, str]:
    """Writes `events.csv` and `items.csv` in the documented format.

    Args:
      source_dir: folder with `ml-100k.inter` and `ml-100k.item` (tab separated,
        RecBole headers such as `user_id:token`).
      output_dir: where to write.

    Returns:
      (events path, items path).
    """
    os.makedirs(output_dir, exist_ok=True)
    events_path = os.path.join(output_dir, "events.csv")
    items_path = os.path.join(output_dir, "items.csv")
    with (
        open(os.path.join(source_dir, "ml-100k.inter"), encoding="utf-8") as src,
        open(events_path, "w", newline="", encoding="utf-8") as dst,
    ):
        rows = csv.reader(src, delimiter="\t")
        header = [h.split(":")[0] for h in next(rows)]
        writer = csv.DictWriter(dst, fieldnames=EVENT_FIELDS)
        writer.writeheader()
        for number, row in enumerate(rows, start=1):
            record = dict(zip(header, row, strict=False))
            writer.writerow(
                {
                    "user_id": record["user_id"],
                    "item_id": record["item_id"],
                    "event_type": "rating",
                    "timestamp": int(float(record["timestamp"])),
                    "value": record["rating"],
                    "text": "",
                    "event_id": f"ml100k-{number}",
                }
            )
    with (
        open(os.path.join(source_dir, "ml-100k.item"), encoding="latin-1") as src,
        open(items_path, "w", newline="", encoding="utf-8") as dst,
    ):
        rows = csv.reader(src, delimiter="\t")
        header = [h.split(":")[0] for h in next(rows)]
        writer = csv.DictWriter(dst, fieldnames=ITEM_FIELDS)
        writer.writeheader()
        for row in rows:
            record = dict(zip(header, row, strict=False))
            year = record.get("release_year", "").strip()
            writer.writerow(
                {
                    "item_id": record["item_id"],
                    "title": record.get("movie_title", "").strip(),
                    "description": f"A movie released in {year}." if year else "",
                    "categories": CATEGORY_SEPARATOR.join(record.get("class", "").split()),
                }
            )
    return events_path, items_path
