"""Event <-> event attention stays within each user's window and reads the window as a set."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.event_context import EventContext

WIDTH = 8


def _layer() -> EventContext:
    tf.keras.utils.set_random_seed(3)
    return EventContext(WIDTH, num_heads=2, num_blocks=2, dropout=0.2)


def _events(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, WIDTH)).astype(np.float32)


def test_events_of_one_window_do_not_reach_another() -> None:
    layer = _layer()
    owners = tf.constant([0, 0, 0, 1, 1])
    events = _events(5, seed=0)
    before = layer(events, owners, 2).numpy()
    changed = events.copy()
    changed[3:] = _events(2, seed=9)
    after = layer(changed, owners, 2).numpy()
    np.testing.assert_allclose(after[:3], before[:3], atol=1e-6)
    assert np.abs(after[3:] - before[3:]).max() > 0.1


def test_an_event_is_read_in_the_context_of_its_window() -> None:
    layer = _layer()
    event = _events(1, seed=1)
    with_some = layer(np.concatenate([event, _events(3, seed=2)]), tf.zeros([4], tf.int32), 1).numpy()
    with_others = layer(np.concatenate([event, _events(3, seed=3)]), tf.zeros([4], tf.int32), 1).numpy()
    assert np.abs(with_some[0] - with_others[0]).max() > 0.1


def test_reordering_a_window_reorders_its_states_and_changes_nothing_else() -> None:
    layer = _layer()
    events = _events(4, seed=4)
    owners = tf.zeros([4], tf.int32)
    order = [2, 0, 3, 1]
    np.testing.assert_allclose(
        layer(events[order], owners, 1).numpy(), layer(events, owners, 1).numpy()[order], atol=1e-5
    )


def test_dropout_only_while_training() -> None:
    layer = _layer()
    events, owners = _events(6, seed=5), tf.constant([0, 0, 0, 0, 2, 2])
    np.testing.assert_array_equal(layer(events, owners, 3).numpy(), layer(events, owners, 3).numpy())
    assert not np.allclose(layer(events, owners, 3, training=True).numpy(), layer(events, owners, 3).numpy())


def test_windows_without_events_and_config_round_trip() -> None:
    layer = _layer()
    # Windows 0 and 2 are empty (a new user has no events yet).
    states = layer(_events(2, seed=6), tf.constant([1, 1]), 3).numpy()
    assert states.shape == (2, WIDTH) and np.isfinite(states).all()
    clone = EventContext.from_config(layer.get_config())
    assert (clone.width, clone.num_heads, clone.num_blocks, clone.dropout) == (WIDTH, 2, 2, 0.2)
    assert len(layer.trainable_weights) == 2 * (8 + 2 + 2 + 2 + 2) + 2
