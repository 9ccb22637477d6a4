"""Interest encoder: message passing over a user's interest subgraph."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402
from tensorflow_gnn.models import gat_v2  # noqa: E402

from schemas import graph as g  # noqa: E402
from schemas.events import EVENT_TYPES  # noqa: E402
from trainer.event_context import EventContext  # noqa: E402
from trainer.item_tower import ItemTower  # noqa: E402
from trainer.long_term_memory import MemoryReadout, graph_memory, merge_memories  # noqa: E402
from trainer.multi_interest import MultiInterestAttention  # noqa: E402

# Time scales (days) of the fixed multi-scale recency encoding: within a
# session, a day, a week, a month, a year.
_AGE_SCALES_DAYS = (0.02, 1.0, 7.0, 30.0, 365.0)
_RECENCY_SCALES = (1.0, 5.0, 20.0)
TIME_FEATURES = 1 + len(_AGE_SCALES_DAYS) + len(_RECENCY_SCALES)


def event_time_features(age_days: tf.Tensor, recency: tf.Tensor) -> tf.Tensor:
    """Encodes how long ago (in days and in events) each event happened.

    Args:
      age_days: [num_events] float, days between the event and the prediction time.
      recency: [num_events] int, 0 for the most recent event of the window.

    Returns:
      [num_events, TIME_FEATURES] features: log-age plus exponential decays at
      several scales, so the model can learn how fast interest fades.
    """
    age = tf.maximum(tf.cast(age_days, tf.float32), 0.0)[:, None]
    rank = tf.cast(recency, tf.float32)[:, None]
    decays = [tf.exp(-age / s) for s in _AGE_SCALES_DAYS] + [tf.exp(-rank / s) for s in _RECENCY_SCALES]
    return tf.concat([tf.math.log1p(age)] + decays, axis=1)


class InterestEncoder(tf.keras.layers.Layer):
    """Computes a user's interest vectors from the user's interest subgraph.

    Heterogeneous message passing:
      0. (optional) items <- their categories: each item in the window is
         refined by what kind of item it is (items already carry their
         categories and co-interaction neighbours from the `ItemTower`);
      0b. (optional) events <-> events: each event's state (its item and its
         type, value, sentiment and time) attends to the other events of the
         window (`EventContext`), so an event is read in the context of what
         came around it; the user's state starts from the latest event's;
      1. user <- events: multi-head GATv2 attention over the user's events,
         where each message carries the item's state and the event's type,
         value, review sentiment and time encoding, so the model learns which events (recent,
         purchased, highly rated) say most about what the user wants next;
      2+. user <- events again, now with the user's state so far as the
         attention query: which past events matter depends on what the first
         round found (e.g. a recent burst of one genre re-weights older events
         of that genre). The last state is mapped to `num_interests` vectors.
    With several interests, each one also pools the window's events with its
    own attention query (`MultiInterestAttention`), so interests can follow
    different parts of the user's history.
    Then the long-term memory (the events older than the window, see
    `trainer.long_term_memory`) adds its learned readout to those vectors.

    The result is `num_interests` vectors in the item space: an item's score
    for the user is its best dot product over them.

    Args:
      item_tower: the shared `ItemTower` (item vectors and vocabularies).
      interest_dim: width of each interest vector.
      num_interests: interest vectors per user.
      event_dim: width of the event (edge) representation.
      attention_heads: GATv2 heads (interest_dim must be divisible by it).
      use_categories: run the category -> item round.
      use_time: give events their time encoding (off: no-time ablation).
      message_passing_rounds: user <- events rounds; 0 (with event context)
        is the sequence-only ablation: the latest event's contextual state,
        projected, is the user's state (no graph attention pooling).
      use_memory: add the long-term memory's readout to the interest vectors.
      event_context_blocks: event <-> event attention blocks (0: none).
      event_context_dropout: dropout of those blocks while training.
      shared_interest_core: with several interests, the user round, the
        sequence readout and the memory readout produce one core vector that
        every interest shares, and each interest adds its own attention
        pooling of the events to it (False: each produces its own slice of
        every interest).
    """

    def __init__(
        self,
        item_tower: ItemTower,
        interest_dim: int,
        num_interests: int,
        event_dim: int,
        attention_heads: int = 4,
        use_categories: bool = True,
        use_time: bool = True,
        message_passing_rounds: int = 1,
        use_memory: bool = True,
        event_context_blocks: int = 0,
        event_context_dropout: float = 0.0,
        shared_interest_core: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_tower = item_tower
        self.interest_dim = interest_dim
        self.num_interests = num_interests
        self.event_dim = event_dim
        self.attention_heads = attention_heads
        self.use_categories = use_categories
        self.use_time = use_time
        self.message_passing_rounds = message_passing_rounds
        self.use_memory = use_memory
        self.event_context_blocks = event_context_blocks
        self.event_context_dropout = event_context_dropout
        self.shared_interest_core = shared_interest_core
        # Interests the user round and the readouts produce: all of them, or one core that each interest's
        # own pooling is added to.
        self.core_interests = 1 if shared_interest_core else num_interests
        core_width = self.core_interests * interest_dim
        self.event_type_lookup = tf.keras.layers.StringLookup(vocabulary=list(EVENT_TYPES), num_oov_indices=1)
        self.event_type_embedding = tf.keras.layers.Embedding(len(EVENT_TYPES) + 1, event_dim)
        self.event_projection = tf.keras.layers.Dense(event_dim, activation="relu")
        # Layers of switched-off parts are not created: no untrained weights in the export.
        self.category_state = tf.keras.layers.Dense(interest_dim, activation="relu") if use_categories else None
        self.item_update = self._category_round() if use_categories else None
        self.event_context_input = tf.keras.layers.Dense(interest_dim) if event_context_blocks else None
        self.event_context = (
            EventContext(interest_dim, attention_heads, event_context_blocks, event_context_dropout)
            if event_context_blocks
            else None
        )
        self.memory_readout = MemoryReadout(core_width) if use_memory else None
        self.multi_interest = MultiInterestAttention(num_interests, interest_dim) if num_interests > 1 else None
        if message_passing_rounds == 0 and not event_context_blocks:
            raise ValueError("message_passing_rounds=0 needs event_context_blocks (the latest event's state)")
        # Without a user round the latest event's contextual state is the interest state (sequence only).
        self.sequence_readout = tf.keras.layers.Dense(core_width) if message_passing_rounds == 0 else None
        self.user_updates = [
            self._user_round(core_width if r == message_passing_rounds - 1 else interest_dim)
            for r in range(message_passing_rounds)
        ]

    def _category_round(self) -> tfgnn.keras.layers.GraphUpdate:
        """Items in the window receive from their categories (mean), with a residual update."""
        return tfgnn.keras.layers.GraphUpdate(
            node_sets={
                g.ITEM: tfgnn.keras.layers.NodeSetUpdate(
                    {
                        g.IN_CATEGORY: tfgnn.keras.layers.SimpleConv(
                            tf.keras.layers.Dense(self.interest_dim, activation="relu"),
                            reduce_type="mean",
                            receiver_tag=tfgnn.SOURCE,
                        )
                    },
                    tfgnn.keras.layers.ResidualNextState(tf.keras.layers.Dense(self.interest_dim)),
                )
            }
        )

    def _user_round(self, output_dim: int) -> tfgnn.keras.layers.GraphUpdate:
        """One round of GATv2 attention from the window's events to the user."""
        return tfgnn.keras.layers.GraphUpdate(
            node_sets={
                g.USER: tfgnn.keras.layers.NodeSetUpdate(
                    {
                        g.EVENT: gat_v2.GATv2Conv(
                            num_heads=self.attention_heads,
                            per_head_channels=self.interest_dim // self.attention_heads,
                            receiver_tag=tfgnn.TARGET,
                            sender_edge_feature=tfgnn.HIDDEN_STATE,
                        )
                    },
                    tfgnn.keras.layers.NextStateFromConcat(tf.keras.layers.Dense(output_dim)),
                )
            }
        )

    def call(self, graph: tfgnn.GraphTensor) -> tf.Tensor:
        """Interest vectors [num_users, num_interests, interest_dim] of a merged GraphTensor."""
        return self.encode(graph)[0]

    def encode(
        self,
        graph: tfgnn.GraphTensor,
        prior_memory: tf.Tensor | None = None,
        item_vectors: tf.Tensor | None = None,
        training: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Interest vectors and long-term memory of a merged GraphTensor.

        Args:
          graph: merged interest subgraphs, one user per component.
          prior_memory: [num_users, MEMORY_WIDTH] memory of events evicted
            before, at this graph's prediction time; the graph's `memory`
            nodes are merged into it (None: they are the whole memory).
          item_vectors: the item tower's `all_item_vectors()` when the caller
            has them already (a training step, the export's fixed table).
          training: a training step: the event-context dropout is on. It is
            passed explicitly because the model's custom `train_step` calls
            `encode` directly, outside any Keras call that would carry the flag.

        Returns:
          ([num_users, num_interests, interest_dim] interest vectors,
           [num_users, MEMORY_WIDTH] the updated long-term memory).
        """
        items = graph.node_sets[g.ITEM]
        if item_vectors is None:
            item_vectors = self.item_tower.all_item_vectors()
        memory = graph_memory(graph, self.item_tower(graph.node_sets[g.MEMORY][g.ITEM_ID], item_vectors))
        if prior_memory is not None:
            memory = merge_memories(prior_memory, memory)
        events = graph.edge_sets[g.EVENT]
        value = events[g.EVENT_VALUE][:, None]
        time_features = event_time_features(events[g.EVENT_AGE_DAYS], events[g.EVENT_RECENCY])
        if not self.use_time:
            time_features = tf.zeros_like(time_features)
        event_features = tf.concat(
            [
                self.event_type_embedding(self.event_type_lookup(events[g.EVENT_TYPE])),
                time_features,
                value,
                tf.math.log1p(tf.abs(value)),
                events[g.EVENT_SENTIMENT][:, None],
            ],
            axis=1,
        )
        num_users = graph.node_sets[g.USER].total_size
        node_states = {
            g.USER: {tfgnn.HIDDEN_STATE: tf.zeros([num_users, self.interest_dim])},
            g.ITEM: {tfgnn.HIDDEN_STATE: self.item_tower(items[g.ITEM_ID], item_vectors)},
        }
        if self.use_categories:
            categories = graph.node_sets[g.CATEGORY]
            category_vectors = self.item_tower.category_embedding(
                self.item_tower.category_lookup(categories[g.CATEGORY_NAME])
            )
            node_states[g.CATEGORY] = {tfgnn.HIDDEN_STATE: self.category_state(category_vectors)}
        graph = graph.replace_features(
            node_sets=node_states,
            edge_sets={g.EVENT: {tfgnn.HIDDEN_STATE: self.event_projection(event_features)}},
        )
        if self.use_categories:
            graph = self.item_update(graph)
        if self.event_context is not None:
            graph = self._events_in_context(graph, tf.equal(events[g.EVENT_RECENCY], 0), training)
        for user_update in self.user_updates:
            graph = user_update(graph)
        state = graph.node_sets[g.USER][tfgnn.HIDDEN_STATE]
        if self.sequence_readout is not None:
            state = self.sequence_readout(state)
        if self.use_memory:
            state += self.memory_readout(memory)
        state = tf.reshape(state, [-1, self.core_interests, self.interest_dim])
        if self.multi_interest is not None:
            # A shared core [users, 1, dim] broadcasts over the interests.
            state = state + self._interests_by_attention(graph, num_users)
        return state, memory

    def _interests_by_attention(self, graph: tfgnn.GraphTensor, num_users: tf.Tensor) -> tf.Tensor:
        """[users, interests, dim]: each interest's own attention pooling of the window's events."""
        events = graph.edge_sets[g.EVENT]
        adjacency = events.adjacency
        item_states = tf.gather(graph.node_sets[g.ITEM][tfgnn.HIDDEN_STATE], adjacency.source)
        event_keys = tf.concat([item_states, events[tfgnn.HIDDEN_STATE]], axis=1)
        return self.multi_interest(event_keys, adjacency.target, num_users)

    def _events_in_context(
        self, graph: tfgnn.GraphTensor, latest_event: tf.Tensor, training: bool
    ) -> tfgnn.GraphTensor:
        """Replaces event states by their in-window context and starts each user from its latest event.

        Args:
          graph: with item and event hidden states.
          latest_event: [num_events] bool, the most recent event of each window.
          training: dropout on (a training step).
        """
        events = graph.edge_sets[g.EVENT]
        adjacency = events.adjacency
        item_states = tf.gather(graph.node_sets[g.ITEM][tfgnn.HIDDEN_STATE], adjacency.source)
        event_states = self.event_context_input(tf.concat([item_states, events[tfgnn.HIDDEN_STATE]], axis=1))
        num_users = graph.node_sets[g.USER].total_size
        in_context = self.event_context(event_states, adjacency.target, num_users, training=training)
        latest = tf.cast(latest_event, in_context.dtype)[:, None]
        user_states = tf.math.unsorted_segment_sum(in_context * latest, adjacency.target, num_users)
        return graph.replace_features(
            node_sets={g.USER: {tfgnn.HIDDEN_STATE: user_states}},
            edge_sets={g.EVENT: {tfgnn.HIDDEN_STATE: in_context}},
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            item_tower=tf.keras.layers.serialize(self.item_tower),
            interest_dim=self.interest_dim,
            num_interests=self.num_interests,
            event_dim=self.event_dim,
            attention_heads=self.attention_heads,
            use_categories=self.use_categories,
            use_time=self.use_time,
            message_passing_rounds=self.message_passing_rounds,
            use_memory=self.use_memory,
            event_context_blocks=self.event_context_blocks,
            event_context_dropout=self.event_context_dropout,
            shared_interest_core=self.shared_interest_core,
        )
        return config
