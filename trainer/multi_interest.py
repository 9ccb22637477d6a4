"""Several interests: each interest vector attends to the window's events with its own query."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402


class MultiInterestAttention(tf.keras.layers.Layer):
    """Pools a user's events into `num_interests` vectors, one attention query per interest.

    A person who watches both thrillers and children's films is poorly served
    by one vector between the two. Here interest m weighs the user's events by
    `softmax_over_the_user's_events(q_m . tanh(W key_e))` and pools their
    values, so different interests can read different parts of the window
    (the self-attentive extractor of multi-interest recommenders such as
    ComiRec-SA). Scored by the best match over interests, training pulls the
    interest nearest to the next item towards it, which lets the queries
    specialise instead of each repeating one linear map of the same pooled
    state.

    Args:
      num_interests: interest vectors per user (the number of queries).
      interest_dim: width of each pooled interest vector.
      hidden_dim: width of the attention's hidden layer.
    """

    def __init__(self, num_interests: int, interest_dim: int, hidden_dim: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.interest_dim = interest_dim
        self.hidden_dim = hidden_dim
        self.attention_hidden = tf.keras.layers.Dense(
            hidden_dim, activation="tanh", use_bias=False, name="attention_hidden"
        )
        self.interest_queries = tf.keras.layers.Dense(num_interests, use_bias=False, name="interest_queries")
        self.event_values = tf.keras.layers.Dense(interest_dim, name="event_values")

    def call(self, event_keys: tf.Tensor, owner: tf.Tensor, num_users: tf.Tensor) -> tf.Tensor:
        """Interest vectors of each user.

        Args:
          event_keys: [num_events, width] what each event says (its item and context).
          owner: [num_events] int, the user each event belongs to.
          num_users: how many users the batch holds.

        Returns:
          [num_users, num_interests, interest_dim]; zero for a user without events.
        """
        logits = self.interest_queries(self.attention_hidden(event_keys))
        # Softmax over each user's own events, separately for every interest.
        peak = tf.gather(tf.math.unsorted_segment_max(logits, owner, num_users), owner)
        weights = tf.exp(logits - tf.stop_gradient(peak))
        weights /= tf.gather(tf.math.unsorted_segment_sum(weights, owner, num_users), owner)
        pooled = weights[:, :, None] * self.event_values(event_keys)[:, None, :]
        return tf.math.unsorted_segment_sum(pooled, owner, num_users)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_interests=self.num_interests, interest_dim=self.interest_dim, hidden_dim=self.hidden_dim)
        return config
