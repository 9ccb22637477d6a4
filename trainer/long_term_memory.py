"""The long-term memory: what falls out of the bounded event window is not forgotten.

A user's interest subgraph holds only the most recent events (the window), so
an update costs the same for a user with ten events as for one with ten
thousand. Older events go into one memory per user: the recency-weighted mean
of their item vectors,

    memory(t) = sum_e w_e(t) v_e / sum_e w_e(t),   w_e(t) = exp(-(t - t_e) / tau),

kept as (mean vector, log of the total weight). The log-mass says how much and
how recent the remembered history is; as t moves on, every weight shrinks by
the same factor, so the mean stays and the log-mass drops by (t' - t) / tau.
That makes the memory foldable: the memory of all old events equals the
memory of a stored memory merged with the newly evicted events, which is what
the `fold_interest` signature computes incrementally and what a full
recomputation (`update_interest` with every old event in the subgraph's
`memory` node set) computes from scratch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402

from schemas import graph as g  # noqa: E402
from schemas.signatures import NO_MEMORY_LOG_MASS  # noqa: E402

# Log-masses below this mean "nothing remembered" (merging with it is exact).
_EMPTY = NO_MEMORY_LOG_MASS / 2
# The log-mass feature is clipped: beyond e^-20 the memory is effectively gone.
_LOG_MASS_FLOOR = -20.0


def empty_memory(num_users: tf.Tensor, dim: int) -> tf.Tensor:
    """[num_users, dim + 1] memories of nothing."""
    return tf.concat([tf.zeros([num_users, dim]), tf.fill([num_users, 1], NO_MEMORY_LOG_MASS)], axis=1)


def merge_memories(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The memory of the union of two disjoint sets of events (both at the same prediction time).

    Args:
      a: [users, dim + 1] (mean vector, log-mass).
      b: the same shape.

    Returns:
      [users, dim + 1]: means weighted by their masses, log-masses added in
      log space.
    """
    log_a, log_b = a[:, -1:], b[:, -1:]
    log_total = tf.maximum(log_a, log_b) + tf.math.log1p(tf.exp(-tf.abs(log_a - log_b)))
    mean = tf.exp(log_a - log_total) * a[:, :-1] + tf.exp(log_b - log_total) * b[:, :-1]
    log_total = tf.where(tf.maximum(log_a, log_b) < _EMPTY, NO_MEMORY_LOG_MASS, log_total)
    return tf.concat([mean, log_total], axis=1)


def graph_memory(graph: tfgnn.GraphTensor, item_vectors: tf.Tensor) -> tf.Tensor:
    """The memory of the `memory` node set of each component (user) of a merged GraphTensor.

    Args:
      graph: merged interest subgraphs (one user per component).
      item_vectors: [memory nodes, dim] vectors of the memory nodes' items.

    Returns:
      [users, dim + 1]; users with no memory nodes get `empty_memory`.
    """
    memory = graph.node_sets[g.MEMORY]
    num_users = graph.node_sets[g.USER].total_size
    owner = tf.repeat(tf.range(tf.shape(memory.sizes)[0]), memory.sizes)
    log_weight = memory[g.MEMORY_LOG_WEIGHT]
    peak = tf.math.unsorted_segment_max(log_weight, owner, num_users)
    peak = tf.where(tf.math.is_finite(peak), peak, 0.0)
    weight = tf.exp(log_weight - tf.gather(peak, owner))
    total = tf.math.unsorted_segment_sum(weight, owner, num_users)
    weighted = tf.math.unsorted_segment_sum(weight[:, None] * item_vectors, owner, num_users)
    mean = tf.math.divide_no_nan(weighted, total[:, None])
    log_mass = tf.where(total > 0.0, peak + tf.math.log(tf.maximum(total, 1e-30)), NO_MEMORY_LOG_MASS)
    return tf.concat([mean, log_mass[:, None]], axis=1)


class MemoryReadout(tf.keras.layers.Layer):
    """What the memory adds to the interest vectors.

    The memory vector and how much of it there is (a presence flag and the
    clipped log-mass) go through one linear map into the flat interest
    state, so the model learns how much the long-ago history should count
    next to the window. Initialised at zero: training starts from the
    window-only model and adds memory where it helps.

    Args:
      output_dim: width of the flat interest state (interests x dim).
    """

    def __init__(self, output_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.projection = tf.keras.layers.Dense(output_dim, kernel_initializer="zeros", name="memory_projection")

    def call(self, memory: tf.Tensor) -> tf.Tensor:
        log_mass = memory[:, -1:]
        present = tf.cast(log_mass > _EMPTY, tf.float32)
        features = tf.concat(
            [memory[:, :-1], present, present * tf.maximum(log_mass, _LOG_MASS_FLOOR) / -_LOG_MASS_FLOOR], axis=1
        )
        return self.projection(features)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_dim=self.output_dim)
        return config
