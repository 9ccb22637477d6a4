"""The rare-item lift: who is lifted, by how much, and what is left alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.config import TrainerConfig
from trainer.rare_item_boost import rare_item_lift


def test_lift_grows_with_rarity_and_stops_at_the_threshold() -> None:
    counts = [0, 1, 3, 8, 18, 19, 20, 500]
    lift = rare_item_lift(counts, strength=1.5, below=20)
    assert lift.dtype == np.float32 and lift.shape == (8,)
    assert lift[0] == pytest.approx(1.5 * math.log(20))
    assert lift[2] == pytest.approx(1.5 * (math.log(20) - math.log(4)))
    # n + 1 >= below: no lift at all.
    assert lift[5:].tolist() == [0.0, 0.0, 0.0]
    assert lift[4] > 0
    assert np.all(np.diff(lift) <= 0)


def test_zero_strength_changes_nothing() -> None:
    assert rare_item_lift([0, 2, 7], strength=0.0, below=20).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("counts", "strength", "below", "message"),
    [([1], -0.5, 20, "strength"), ([1], 1.0, 0, "below"), ([-1], 1.0, 20, "train_counts")],
)
def test_bad_arguments_are_rejected(counts: list[int], strength: float, below: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rare_item_lift(counts, strength, below)


def test_trainer_config_checks_and_keeps_the_lift_settings() -> None:
    config = TrainerConfig(rare_item_boost=1.5, rare_item_boost_below=10)
    assert TrainerConfig.from_dict(config.to_dict()) == config
    assert TrainerConfig(rare_item_boost=0.0).rare_item_boost == 0.0
    with pytest.raises(ValueError, match="rare_item_boost must"):
        TrainerConfig(rare_item_boost=-1.0)
    with pytest.raises(ValueError, match="rare_item_boost_below"):
        TrainerConfig(rare_item_boost_below=0)
