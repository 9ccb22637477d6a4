from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.interest_model import best_interest_scores, multi_interest_sampled_softmax_loss


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
    np.testing.assert_allclose(best_interest_scores(state, items).numpy(), [[3.0, 2.0, -1.0]])
