"""The co-interaction channel: what is consumed next to the user's latest items.

The interest vectors summarise a user in a 64-dimensional space, and a dot
product in that space cannot hold every pairwise "people who watched this
watched that" fact of a catalog. The co-interaction edges of the graph (item
<-> item, counted over the training events only,
`pipeline/components/co_interaction.py`) hold exactly those facts. This
channel reads them at scoring time: a candidate item j gains

    weight * sum_r 0.5 ** (r / half_life) * s(i_r, j)

where i_r is the user's r-th most recent item (r = 0 the latest) and s the
cosine co-interaction strength of j among i_r's strongest neighbours. The
half-life makes the channel short-range: the next item follows most from the
last few. `weight` is not trained with the model (the training targets are the
very events the co-interaction counts came from, so the model would learn to
trust them too much); it is chosen after training on the validation points,
which took no part in the counts (`choose_weight`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402

from schemas import graph as g  # noqa: E402
from schemas.signatures import PADDING_ITEM_ID  # noqa: E402
from trainer.metrics import ranking_metrics  # noqa: E402

# Validation NDCG@10 is read at these weights (0: the channel off).
WEIGHT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


class CoInteractionChannel(tf.Module):
    """Scores every item by its co-interactions with the user's latest items.

    Args:
      vocabulary: the model's item ids; row i + 1 of the tables is item i (row
        0 is the out-of-vocabulary row, which has no neighbours).
      neighbours: item id -> ((neighbour id, strength), ...), strongest first,
        from the training events only; neighbours outside `vocabulary` are
        left out.
      half_life: recent items r steps back weigh 0.5 ** (r / half_life).
      weight: the channel's share of the score (0: off).
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        neighbours: Mapping[str, Sequence[tuple[str, float]]],
        half_life: float,
        weight: float = 0.0,
    ) -> None:
        super().__init__(name="co_interaction_channel")
        self.half_life = float(half_life)
        index = {item_id: i + 1 for i, item_id in enumerate(vocabulary)}
        width = max([len(v) for v in neighbours.values()] + [1])
        rows = np.zeros((len(vocabulary) + 1, width), np.int32)
        strengths = np.zeros((len(vocabulary) + 1, width), np.float32)
        for item_id, row in index.items():
            known = [(index[n], s) for n, s in neighbours.get(item_id, ()) if n in index]
            for column, (neighbour, strength) in enumerate(known):
                rows[row, column] = neighbour
                strengths[row, column] = strength
        self.vocabulary_size = len(vocabulary) + 1
        self.neighbour_rows = tf.constant(rows)
        self.strengths = tf.constant(strengths)
        self.weight = tf.Variable(float(weight), trainable=False, name="co_interaction_weight")

    def recency_weights(self, count: int) -> tf.Tensor:
        """[count] weights of the latest `count` items, the latest first."""
        return tf.pow(0.5, tf.range(count, dtype=tf.float32) / self.half_life)

    def unweighted_scores(self, recent_rows: tf.Tensor) -> tf.Tensor:
        """[users, vocabulary_size] channel scores before `weight`.

        Args:
          recent_rows: [users, recent] vocabulary rows of the users' latest
            items, the latest first (0 for padding or unknown items).
        """
        neighbours = tf.gather(self.neighbour_rows, recent_rows)
        values = tf.gather(self.strengths, recent_rows) * self.recency_weights(tf.shape(recent_rows)[1])[None, :, None]
        users = tf.broadcast_to(tf.range(tf.shape(recent_rows)[0])[:, None, None], tf.shape(neighbours))
        positions = tf.reshape(tf.stack([users, neighbours], axis=-1), [-1, 2])
        # scatter_nd adds up repeated positions: an item next to several recent items gains from each.
        return tf.scatter_nd(
            positions, tf.reshape(values, [-1]), tf.stack([tf.shape(recent_rows)[0], self.vocabulary_size])
        )

    def scores(self, recent_rows: tf.Tensor) -> tf.Tensor:
        """[users, vocabulary_size] what the channel adds to each item's score."""
        return self.weight * self.unweighted_scores(recent_rows)


def recent_item_ids(graph: tfgnn.GraphTensor, count: int) -> tf.Tensor:
    """[users, count] the items of each user's latest events, the latest first, padded with "".

    Read from the merged subgraphs: an event's `recency` is its rank from the
    most recent (0), and its source node carries the item id.
    """
    events = graph.edge_sets[g.EVENT]
    sizes = events.sizes
    users = tf.shape(sizes)[0]
    owner = tf.repeat(tf.range(users), sizes)
    recency = tf.cast(events[g.EVENT_RECENCY], tf.int32)
    item_ids = tf.gather(graph.node_sets[g.ITEM][g.ITEM_ID], events.adjacency.source)
    kept = recency < count
    padding = tf.size(item_ids)
    slots = tf.fill([users, count], padding)
    slots = tf.tensor_scatter_nd_update(
        slots,
        tf.stack([tf.boolean_mask(owner, kept), tf.boolean_mask(recency, kept)], axis=1),
        tf.boolean_mask(tf.range(padding), kept),
    )
    return tf.gather(tf.concat([item_ids, [PADDING_ITEM_ID]], axis=0), slots)


def choose_weight(
    model_scores: np.ndarray,
    channel_scores: np.ndarray,
    seen: Sequence[Sequence[int]],
    targets: Sequence[int],
    grid: Sequence[float] = WEIGHT_GRID,
) -> tuple[float, dict[float, float]]:
    """The channel weight with the best validation NDCG@10.

    Args:
      model_scores: [points, items] the trained model's scores of the
        validation points.
      channel_scores: [points, items] `unweighted_scores` of the same points.
      seen: per point, the item columns excluded from its ranking.
      targets: per point, the column of the held-out item.
      grid: the weights tried.

    Returns:
      (best weight, {weight: validation NDCG@10}); ties go to the smaller
      weight.
    """
    by_weight: dict[float, float] = {}
    for weight in grid:
        scores = model_scores + weight * channel_scores
        for row, columns in enumerate(seen):
            scores[row, list(columns)] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        by_weight[weight] = ranking_metrics(top.tolist(), [[t] for t in targets])["ndcg@10"]
    best = max(grid, key=lambda w: (by_weight[w], -w))
    return best, by_weight
