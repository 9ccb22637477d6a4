"""A serving-time lift for items with little training history (fresh-item exposure).

A learned recommender ranks an item by how well its vector matches the user's
interest state. Items with a handful of training interactions have vectors
made mostly of their text and categories, and the state of a user who lives
among established items rarely points their way: new items are almost never
recommended, so they never collect the interactions that would fix that.
Production recommenders answer this with a deliberate exposure rule; this is
one, as an additive score offset fixed at export time:

    lift(n) = strength * max(0, ln(below) - ln(1 + n))

for an item with `n` training interactions. Items with at least `below - 1`
interactions are untouched; rarer ones rise by `strength` per e-fold of
rarity, so never-seen items rise most. It trades ranking quality on the items
users already engage with for exposure of new ones; `bench/quality` measures
both sides (the sweep in `bench/results/rare_item_boost.json`, which chose the
default strength, `TrainerConfig.rare_item_boost`, on validation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rare_item_lift(train_counts: Sequence[int] | np.ndarray, strength: float, below: int) -> np.ndarray:
    """Score offsets that lift items with few training interactions.

    Args:
      train_counts: per item, its interactions in the training split.
      strength: lift per e-fold of rarity (0 turns the rule off).
      below: interaction count from which an item gets no lift (`n + 1 >= below`).

    Returns:
      float32 offsets, one per item, >= 0, non-increasing in the count.
    """
    if strength < 0:
        raise ValueError("strength must be >= 0")
    if below < 1:
        raise ValueError("below must be >= 1")
    counts = np.asarray(train_counts, dtype=np.float64)
    if (counts < 0).any():
        raise ValueError("train_counts must be >= 0")
    return (strength * np.maximum(0.0, np.log(below) - np.log1p(counts))).astype(np.float32)
