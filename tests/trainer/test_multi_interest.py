"""Each interest pools the user's own events with its own attention."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.multi_interest import MultiInterestAttention


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
