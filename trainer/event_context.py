"""Event context: event <-> event attention within each user's event window."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402


class EventContext(tf.keras.layers.Layer):
    """Lets each event of a window read the other events of the same window.

    Attention from events to the user weighs each event on its own: it cannot
    tell that a thriller watched right after two other thrillers says more than
    one watched between comedies. Here the events of one window form a
    complete graph and exchange messages by multi-head self-attention
    (transformer blocks, pre-layer-norm, as sequential recommenders such as
    SASRec use), so each event's state carries its context before the events
    are pooled into the user. Every event of a window is strictly before the
    prediction time, so attending in both directions leaks nothing.

    Args:
      width: width of the event states (input and output).
      num_heads: attention heads (width must be divisible by it).
      num_blocks: stacked attention + feed-forward blocks.
      dropout: dropout rate on attention weights and block outputs while
        training.
    """

    def __init__(self, width: int, num_heads: int, num_blocks: int = 1, dropout: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.width = width
        self.num_heads = num_heads
        self.num_blocks = num_blocks
        self.dropout = dropout
        self.blocks = [
            {
                "attention_norm": tf.keras.layers.LayerNormalization(epsilon=1e-6),
                "attention": tf.keras.layers.MultiHeadAttention(num_heads, width // num_heads, dropout=dropout),
                "feed_forward_norm": tf.keras.layers.LayerNormalization(epsilon=1e-6),
                "feed_forward": tf.keras.layers.Dense(width, activation="relu"),
                "feed_forward_out": tf.keras.layers.Dense(width),
            }
            for _ in range(num_blocks)
        ]
        self.output_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.output_dropout = tf.keras.layers.Dropout(dropout)

    def call(
        self, event_states: tf.Tensor, owners: tf.Tensor, num_windows: tf.Tensor, training: Any = None
    ) -> tf.Tensor:
        """Event states in the context of their windows.

        Args:
          event_states: [num_events, width], the events of all windows.
          owners: [num_events] int, the window (user) of each event, in
            non-decreasing order (a merged GraphTensor's edges are).
          num_windows: number of windows (users).
          training: Keras training flag (dropout).

        Returns:
          [num_events, width], in the order of `event_states`.
        """
        windows = tf.RaggedTensor.from_value_rowids(
            event_states, tf.cast(owners, tf.int64), nrows=tf.cast(num_windows, tf.int64)
        )
        states = windows.to_tensor()
        present = tf.sequence_mask(windows.row_lengths(), tf.shape(states)[1])
        attention_mask = present[:, :, None] & present[:, None, :]
        for block in self.blocks:
            normed = block["attention_norm"](states)
            attended = block["attention"](normed, normed, attention_mask=attention_mask, training=training)
            states += self.output_dropout(attended, training=training)
            normed = block["feed_forward_norm"](states)
            transformed = block["feed_forward_out"](block["feed_forward"](normed))
            states += self.output_dropout(transformed, training=training)
        return tf.boolean_mask(self.output_norm(states), present)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(width=self.width, num_heads=self.num_heads, num_blocks=self.num_blocks, dropout=self.dropout)
        return config
