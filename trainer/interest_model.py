"""The interest model: interest encoder + item tower, trained on next-item prediction."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402

from trainer.interest_encoder import InterestEncoder  # noqa: E402
from trainer.item_tower import OOV_INDEX, ItemTower  # noqa: E402


class InterestModel(tf.keras.Model):
    """Scores items for a user as `interest_state . item_vector + item_bias`.

    Training minimises a sampled-softmax loss: for each prediction point the
    item the user touched next must outscore `num_sampled` negatives drawn
    log-uniformly over the popularity-ordered vocabulary (accidental hits
    removed). This is the standard retrieval objective of two-tower
    recommenders, and it costs O(num_sampled) per example instead of O(items).

    Args:
      item_tower: item vectors and vocabularies.
      interest_dim: width of the interest state.
      event_dim: width of event features.
      attention_heads: GATv2 heads.
      num_sampled: negatives per step.
    """

    def __init__(
        self,
        item_tower: ItemTower,
        interest_dim: int,
        event_dim: int,
        attention_heads: int,
        num_sampled: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_tower = item_tower
        self.interest_dim = interest_dim
        self.event_dim = event_dim
        self.attention_heads = attention_heads
        self.num_sampled = num_sampled
        self.encoder = InterestEncoder(item_tower, interest_dim, event_dim, attention_heads)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    def call(self, graph: tfgnn.GraphTensor) -> tf.Tensor:
        """Interest states of a merged (scalar) GraphTensor, one row per user."""
        return self.encoder(graph)

    def all_scores(self, interest_state: tf.Tensor) -> tf.Tensor:
        """[batch, vocabulary_size] scores of every item; unknown-item column is -inf."""
        scores = tf.matmul(interest_state, self.item_tower.all_item_vectors(), transpose_b=True)
        scores += self.item_tower.bias
        unknown = tf.one_hot(OOV_INDEX, self.item_tower.vocabulary_size, on_value=float("-inf"), off_value=0.0)
        return scores + unknown

    def _loss(self, graph: tfgnn.GraphTensor, label_ids: tf.Tensor, training: bool) -> tf.Tensor:
        interest_state = self.encoder(graph, training=training)
        labels = tf.cast(tf.reshape(self.item_tower.indices(label_ids), [-1, 1]), tf.int64)
        num_classes = self.item_tower.vocabulary_size
        sampled = tf.random.log_uniform_candidate_sampler(
            labels, 1, min(self.num_sampled, num_classes - 1), unique=True, range_max=num_classes
        )
        losses = tf.nn.sampled_softmax_loss(
            weights=self.item_tower.all_item_vectors(),
            biases=self.item_tower.bias,
            labels=labels,
            inputs=interest_state,
            num_sampled=min(self.num_sampled, num_classes - 1),
            num_classes=num_classes,
            sampled_values=sampled,
            remove_accidental_hits=True,
        )
        return tf.reduce_mean(losses)

    def train_step(self, data: tuple[tfgnn.GraphTensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        graph, label_ids = data
        with tf.GradientTape() as tape:
            loss = self._loss(graph, label_ids, training=True)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data: tuple[tfgnn.GraphTensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Full-softmax cross-entropy on validation: no sampling noise in early stopping."""
        graph, label_ids = data
        logits = self.all_scores(self.encoder(graph, training=False))
        labels = self.item_tower.indices(label_ids)
        logits = tf.where(tf.math.is_inf(logits), tf.fill(tf.shape(logits), -1e9), logits)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_tracker]

    def get_config(self) -> dict[str, Any]:
        return {
            "item_tower": tf.keras.layers.serialize(self.item_tower),
            "interest_dim": self.interest_dim,
            "event_dim": self.event_dim,
            "attention_heads": self.attention_heads,
            "num_sampled": self.num_sampled,
        }
