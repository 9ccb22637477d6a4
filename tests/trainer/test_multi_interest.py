"""Each interest pools the user's own events with its own attention."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from schemas import signatures as s
from schemas.catalog import read_catalog
from tests.trainer import synthetic
from trainer.config import TrainerConfig
from trainer.export import export_serving_model
from trainer.graph_dataset import training_dataset
from trainer.multi_interest import MultiInterestAttention
from trainer.task import build_model


def _layer(num_interests: int = 3) -> MultiInterestAttention:
    tf.keras.utils.set_random_seed(3)
    return MultiInterestAttention(num_interests, interest_dim=8, hidden_dim=8)


def _keys(rows: int) -> tf.Tensor:
    return tf.random.stateless_normal([rows, 5], seed=[1, 2])


def test_a_single_event_is_every_interest_and_a_user_without_events_gets_zeros() -> None:
    layer = _layer()
    keys = _keys(4)
    # User 0 owns events 0-2, user 1 owns event 3, user 2 owns none.
    interests = layer(keys, tf.constant([0, 0, 0, 1]), 3).numpy()
    assert interests.shape == (3, 3, 8)
    value = layer.event_values(keys[3:4]).numpy()[0]
    np.testing.assert_allclose(interests[1], np.tile(value, (3, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(interests[2], 0.0)


def test_interests_are_convex_mixtures_that_differ_and_ignore_event_order() -> None:
    layer = _layer()
    keys = _keys(5)
    owner = tf.constant([0, 0, 0, 0, 0])
    interests = layer(keys, owner, 1).numpy()[0]
    values = layer.event_values(keys).numpy()
    # Solve interests[m] = weights[m] @ values (8 equations, 5 unknowns): a distribution per interest.
    weights = np.linalg.lstsq(values.T, interests.T, rcond=None)[0].T
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    assert (weights > -1e-4).all()
    # Separate queries read the window differently.
    assert np.abs(interests[0] - interests[1]).max() > 1e-3
    order = [3, 1, 4, 0, 2]
    shuffled = layer(tf.gather(keys, order), owner, 1).numpy()[0]
    np.testing.assert_allclose(shuffled, interests, rtol=1e-5, atol=1e-6)


def test_config_round_trip() -> None:
    layer = _layer(num_interests=2)
    clone = MultiInterestAttention.from_config(layer.get_config())
    assert (clone.num_interests, clone.interest_dim, clone.hidden_dim) == (2, 8, 8)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_four_interest_model_trains_exports_and_serves_four_distinct_interests(temperature, tmp_path) -> None:
    paths = synthetic.make_dataset(str(tmp_path))
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(
        epochs=2, batch_size=64, num_sampled=8, learning_rate=3e-3, num_interests=4, interest_temperature=temperature
    )
    tf.keras.utils.set_random_seed(1)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=True, seed=1)
    model(next(iter(train))[0])
    history = model.fit(train, epochs=config.epochs, verbose=0).history["loss"]
    assert history[-1] < history[0], history
    assert model.encoder.multi_interest is not None
    export_dir = os.path.join(str(tmp_path), "export", "1")
    subgraphs = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(2)]
    export_serving_model(model, export_dir, subgraphs)
    loaded = tf.saved_model.load(export_dir)
    state = loaded.signatures[s.UPDATE_INTEREST](**{s.SUBGRAPH: tf.constant(subgraphs)})[s.INTEREST_STATE].numpy()
    assert state.shape == (2, 4, s.INTEREST_DIM) and np.isfinite(state).all()
    assert min(np.abs(state[0, 0] - state[0, m]).max() for m in (1, 2, 3)) > 1e-3
    # An item's served score is its best match over the four interests (or their soft maximum), plus its bias.
    item_ids = [e.item.item_id for e in entries[:5]]
    scores = loaded.signatures[s.SCORE](
        **{
            s.INTEREST_STATE: tf.constant(state[:1]),
            s.RECENT_ITEM_IDS: tf.constant([[s.PADDING_ITEM_ID] * s.RECENT_ITEMS]),
            s.ITEM_IDS: tf.constant([item_ids]),
        }
    )[s.SCORES].numpy()[0]
    tower = model.item_tower
    rows = [tower.item_ids.index(i) + 1 for i in item_ids]
    vectors = tower.all_item_vectors().numpy()[rows]
    per_interest = state[0] @ vectors.T
    combined = np.log(np.exp(per_interest).sum(axis=0)) if temperature else per_interest.max(axis=0)
    expected = combined + tower.bias.numpy()[rows]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def _interests_with_silent_poolings(shared_interest_core: bool, tmp_path) -> np.ndarray:
    """Interest states of a built model whose per-interest poolings are switched off (zero values)."""
    tmp_path.mkdir()
    paths = synthetic.make_dataset(str(tmp_path))
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(num_interests=4, shared_interest_core=shared_interest_core)
    tf.keras.utils.set_random_seed(2)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    graph, _ = next(iter(training_dataset([paths["train"]], 16, shuffle=False)))
    with_poolings = model(graph).numpy()
    assert with_poolings.shape == (16, 4, s.INTEREST_DIM)
    assert np.abs(with_poolings[:, 0] - with_poolings[:, 1]).max() > 1e-3
    for weight in model.encoder.multi_interest.event_values.weights:
        weight.assign(tf.zeros_like(weight))
    return model(graph).numpy()


def test_a_shared_core_makes_one_interest_the_case_whose_poolings_are_silent(tmp_path) -> None:
    # With a shared core, the interests differ only by their own poolings of the events ...
    shared = _interests_with_silent_poolings(True, tmp_path / "shared")
    np.testing.assert_allclose(shared, np.repeat(shared[:, :1], 4, axis=1), rtol=1e-6, atol=1e-6)
    # ... without it, each interest is also its own slice of the user round's output.
    sliced = _interests_with_silent_poolings(False, tmp_path / "sliced")
    assert np.abs(sliced[:, 0] - sliced[:, 1]).max() > 1e-3
