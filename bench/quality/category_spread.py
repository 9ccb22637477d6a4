"""Prediction points by how widely the user's input spreads over categories.

The interest model keeps several interest vectors and scores an item by its
best match among them, so that a user who watches both horror films and
musicals is not averaged into a taste for neither. On the spine's split one
interest vector ranks as well as four (bench/quality/README, sessions 16-23).
If the several interests help anywhere, it should be where a user's recent
events span many categories. This module sorts the points by that spread, from
the model's input only (the window, strictly before the target), so the slice
knows nothing of what is predicted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from bench.quality.data import PredictionPoint
from schemas.events import Event, Item

THIRDS = ("narrowest third", "middle third", "widest third")


def category_spread(window: Sequence[Event], items: Mapping[str, Item]) -> float:
    """How evenly a window's events spread over categories: the entropy of their category shares.

    Args:
      window: the events a model sees for a point.
      items: the catalog, item id -> Item.

    Returns:
      The Shannon entropy, in bits, of the category distribution in which each event spreads a weight of
      one evenly over its item's categories (a film that is both comedy and romance counts half to each).
      Events of items without categories weigh nothing; 0.0 when no event has a category. One category
      gives 0, two equally weighted ones 1.
    """
    weights: Counter[str] = Counter()
    for event in window:
        item = items.get(event.item_id)
        categories = item.categories if item else ()
        for category in categories:
            weights[category] += 1.0 / len(categories)
    total = sum(weights.values())
    return -sum(w / total * math.log2(w / total) for w in weights.values()) if total else 0.0


def spread_thirds(points: Sequence[PredictionPoint], items: Mapping[str, Item]) -> dict[str, np.ndarray]:
    """The points' indices in three near-equal groups by `category_spread` of their windows.

    Args:
      points: the prediction points, in the order their target positions are kept.
      items: the catalog.

    Returns:
      THIRDS' names -> sorted point indices; the groups partition the points, their sizes differ by at most
      one, and no point of a narrower group has a wider spread than one of a wider group (equal spreads are
      ordered by point order).
    """
    spreads = np.array([category_spread(p.window, items) for p in points])
    order = np.argsort(spreads, kind="stable")
    return {name: np.sort(part) for name, part in zip(THIRDS, np.array_split(order, len(THIRDS)), strict=True)}
