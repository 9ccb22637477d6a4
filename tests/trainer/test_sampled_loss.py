from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.interest_model import interest_scores, multi_interest_sampled_softmax_loss


def _sample(labels: tf.Tensor, num_classes: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    return tf.random.log_uniform_candidate_sampler(labels[:, None], 1, 8, unique=True, range_max=num_classes, seed=3)


def test_single_interest_loss_equals_tensorflows_sampled_softmax() -> None:
    rng = np.random.default_rng(0)
    state = tf.constant(rng.normal(size=(5, 1, 6)), tf.float32)
    vectors = tf.constant(rng.normal(size=(20, 6)), tf.float32)
    bias = tf.constant(rng.normal(size=(20,)), tf.float32)
    labels = tf.constant([0, 3, 7, 7, 19], tf.int64)
    sampled = _sample(labels, 20)
    ours = multi_interest_sampled_softmax_loss(state, labels, vectors, bias, sampled)
    reference = tf.nn.sampled_softmax_loss(
        weights=vectors,
        biases=bias,
        labels=labels[:, None],
        inputs=state[:, 0],
        num_sampled=8,
        num_classes=20,
        sampled_values=sampled,
        remove_accidental_hits=True,
    )
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_an_item_scores_by_its_best_matching_interest() -> None:
    state = tf.constant([[[1.0, 0.0], [0.0, 2.0]]])
    items = tf.constant([[3.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(interest_scores(state, items).numpy(), [[3.0, 2.0, -1.0]])


def test_a_soft_maximum_sums_the_interests_and_teaches_every_one_of_them() -> None:
    state = tf.Variable([[[1.0, 0.0], [0.0, 2.0]]])
    items = tf.constant([[3.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    per_interest = np.array([[3.0, 0.0], [0.0, 2.0], [-1.0, -2.0]])
    with tf.GradientTape(persistent=True) as tape:
        soft = interest_scores(state, items, temperature=1.0)
        best = interest_scores(state, items)
        first_soft, first_best = soft[0, 0], best[0, 0]
    np.testing.assert_allclose(soft.numpy()[0], np.log(np.exp(per_interest).sum(axis=1)), rtol=1e-6)
    # The best match learns alone; the soft maximum reaches the other interest too.
    soft_grad = tape.gradient(first_soft, state).numpy()[0]
    best_grad = tape.gradient(first_best, state).numpy()[0]
    np.testing.assert_array_equal(best_grad[1], 0.0)
    assert np.abs(soft_grad[1]).max() > 0.1
    # A cold soft maximum is the best match; one interest is itself at any temperature.
    np.testing.assert_allclose(interest_scores(state, items, temperature=1e-3).numpy(), best.numpy(), atol=1e-2)
    one = state[:, :1]
    np.testing.assert_allclose(interest_scores(one, items, 2.0).numpy(), interest_scores(one, items).numpy(), rtol=1e-6)
