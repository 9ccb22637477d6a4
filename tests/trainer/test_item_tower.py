from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.config import TrainerConfig
from trainer.item_tower import ItemTower

ITEMS = [f"item{i}" for i in range(40)]


def _tower(id_dropout: float) -> ItemTower:
    rng = np.random.default_rng(0)
    tower = ItemTower(
        item_ids=ITEMS,
        text_vectors=rng.normal(size=(len(ITEMS), 12)),
        category_names=["drama", "comedy"],
        item_category_ids=[[i % 2] for i in range(len(ITEMS))],
        output_dim=8,
        category_dim=4,
        id_dropout=id_dropout,
    )
    # Id embeddings as large as the other views, so leaving one out is visible.
    tower.id_embedding.embeddings.assign(rng.normal(size=(len(ITEMS) + 1, 8)))
    return tower


def test_id_dropout_leaves_out_whole_id_embeddings_in_training_only() -> None:
    tower = _tower(id_dropout=0.5)
    full = tower.all_item_vectors().numpy()
    without_ids = full - tower.id_embedding.embeddings.numpy()
    tf.random.set_seed(1)
    dropped = tower.all_item_vectors(training=True).numpy()
    kept_rows = np.all(np.isclose(dropped, full, atol=1e-5), axis=1)
    dropped_rows = np.all(np.isclose(dropped, without_ids, atol=1e-5), axis=1)
    # Every row is either the item's full vector or its vector from content alone.
    assert np.all(kept_rows | dropped_rows)
    assert 5 < dropped_rows.sum() < len(full) - 5
    np.testing.assert_allclose(tower.all_item_vectors().numpy(), full)


def test_no_id_dropout_trains_on_the_vectors_it_serves() -> None:
    tower = _tower(id_dropout=0.0)
    np.testing.assert_allclose(tower.all_item_vectors(training=True).numpy(), tower.all_item_vectors().numpy())


def test_id_dropout_is_kept_in_the_config_and_checked() -> None:
    assert ItemTower.from_config(_tower(id_dropout=0.3).get_config()).id_dropout == 0.3
    with pytest.raises(ValueError, match="id_dropout"):
        _tower(id_dropout=1.0)
    with pytest.raises(ValueError, match="item_id_dropout"):
        TrainerConfig(item_id_dropout=-0.1)
