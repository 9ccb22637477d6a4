"""The interest model: interest encoder + item tower, trained on next-item prediction."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402

from schemas import graph as g  # noqa: E402
from trainer.interest_encoder import InterestEncoder  # noqa: E402
from trainer.item_tower import OOV_INDEX, ItemTower  # noqa: E402

_MASKED = -1e9


def combine_interests(per_interest: tf.Tensor, temperature: float = 0.0, axis: int = 1) -> tf.Tensor:
    """An item's score for a user from its scores against each of the user's interests.

    With temperature 0 the item scores by its best-matching interest (a hard
    maximum), so in training only that interest learns from the item. With a
    temperature t > 0 the score is the soft maximum `t * log sum_m exp(s_m / t)`:
    at t = 1 the user's preference for an item is the sum of what each interest
    gives it (`exp(score) = sum_m exp(s_m)`), and every interest learns from
    every item in proportion to how well it matches. With one interest both
    are that interest's score.

    Args:
      per_interest: scores with the interests along `axis`.
      temperature: 0 for the best match, > 0 for the soft maximum.
      axis: the interests' axis.

    Returns:
      The scores with `axis` reduced.
    """
    if temperature <= 0.0:
        return tf.reduce_max(per_interest, axis=axis)
    return temperature * tf.reduce_logsumexp(per_interest / temperature, axis=axis)


def interest_scores(interest_state: tf.Tensor, item_vectors: tf.Tensor, temperature: float = 0.0) -> tf.Tensor:
    """Scores of items for users, over each user's interests (see `combine_interests`).

    Args:
      interest_state: [batch, interests, dim].
      item_vectors: [items, dim] shared by the batch.
      temperature: 0 for the best match, > 0 for the soft maximum.

    Returns:
      [batch, items] scores.
    """
    return combine_interests(tf.einsum("bmd,nd->bmn", interest_state, item_vectors), temperature)


def multi_interest_sampled_softmax_loss(
    interest_state: tf.Tensor,
    labels: tf.Tensor,
    item_vectors: tf.Tensor,
    item_bias: tf.Tensor,
    sampled_values: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    temperature: float = 0.0,
) -> tf.Tensor:
    """Sampled-softmax loss where an item's logit combines its matches over the user's interests.

    With one interest it equals `tf.nn.sampled_softmax_loss` (logits corrected
    by the log expected sample count, accidental hits removed).

    Args:
      interest_state: [batch, interests, dim].
      labels: [batch] int64 vocabulary indices of the next items.
      item_vectors: [vocabulary, dim].
      item_bias: [vocabulary].
      sampled_values: (sampled ids [S], true expected counts [batch, 1],
        sampled expected counts [S]) from a candidate sampler.
      temperature: how the interests combine (`combine_interests`).

    Returns:
      [batch] losses.
    """
    sampled, true_expected, sampled_expected = sampled_values
    true_logits = combine_interests(
        tf.einsum("bmd,bd->bm", interest_state, tf.gather(item_vectors, labels)), temperature
    )
    true_logits += tf.gather(item_bias, labels) - tf.math.log(true_expected[:, 0])
    sampled_logits = interest_scores(interest_state, tf.gather(item_vectors, sampled), temperature)
    sampled_logits += tf.gather(item_bias, sampled) - tf.math.log(sampled_expected)
    # A sampled negative that is the label itself is no negative.
    accidental = tf.equal(labels[:, None], tf.cast(sampled, labels.dtype)[None, :])
    sampled_logits = tf.where(accidental, _MASKED, sampled_logits)
    logits = tf.concat([true_logits[:, None], sampled_logits], axis=1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros_like(labels), logits=logits)


class InterestModel(tf.keras.Model):
    """Scores items for a user as `max_m interest_m . item_vector + item_bias`.

    The maximum over interests is the best match, or a soft maximum with
    `interest_temperature` > 0 (`combine_interests`).

    Training minimises a sampled-softmax loss: for each prediction point the
    item the user touched next must outscore `num_sampled` negatives drawn
    log-uniformly over the popularity-ordered vocabulary (accidental hits
    removed, logits corrected by the sampling probability). This is the
    standard retrieval objective of two-tower recommenders, and it costs
    O(num_sampled) per example instead of O(items). With `num_sampled` <= 0
    (or at least the catalog size) the loss is the exact full softmax.

    Args:
      item_tower: item vectors and vocabularies.
      interest_dim: width of each interest vector.
      num_interests: interest vectors per user.
      event_dim: width of event features.
      attention_heads: GATv2 heads.
      num_sampled: negatives per step.
      use_categories: category -> item message passing (ablation switch).
      use_time: event time encoding (ablation switch).
      message_passing_rounds: attention rounds from events to the user.
      use_memory: the long-term memory adds to the interest vectors.
      event_context_blocks: event <-> event attention blocks within the window.
      event_context_dropout: dropout of those blocks while training.
      shared_interest_core: the interests share one core vector plus each
        one's own attention pooling (see `InterestEncoder`).
      interest_temperature: how an item's matches with the interests combine
        into its score: 0 the best match, > 0 a soft maximum
        (`combine_interests`).
    """

    def __init__(
        self,
        item_tower: ItemTower,
        interest_dim: int,
        num_interests: int,
        event_dim: int,
        attention_heads: int,
        num_sampled: int,
        use_categories: bool = True,
        use_time: bool = True,
        message_passing_rounds: int = 1,
        use_memory: bool = True,
        event_context_blocks: int = 0,
        event_context_dropout: float = 0.0,
        shared_interest_core: bool = False,
        interest_temperature: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_tower = item_tower
        self.interest_dim = interest_dim
        self.num_interests = num_interests
        self.event_dim = event_dim
        self.attention_heads = attention_heads
        self.num_sampled = num_sampled
        self.use_categories = use_categories
        self.use_time = use_time
        self.message_passing_rounds = message_passing_rounds
        self.use_memory = use_memory
        self.event_context_blocks = event_context_blocks
        self.event_context_dropout = event_context_dropout
        self.shared_interest_core = shared_interest_core
        self.interest_temperature = interest_temperature
        self.encoder = InterestEncoder(
            item_tower,
            interest_dim,
            num_interests,
            event_dim,
            attention_heads=attention_heads,
            use_categories=use_categories,
            use_time=use_time,
            message_passing_rounds=message_passing_rounds,
            use_memory=use_memory,
            event_context_blocks=event_context_blocks,
            event_context_dropout=event_context_dropout,
            shared_interest_core=shared_interest_core,
        )
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    def call(self, graph: tfgnn.GraphTensor) -> tf.Tensor:
        """Interest states [users, interests, dim] of a merged (scalar) GraphTensor."""
        return self.encoder(graph)

    def all_scores(self, interest_state: tf.Tensor, item_vectors: tf.Tensor | None = None) -> tf.Tensor:
        """[batch, vocabulary_size] scores of every item; the unknown-item column is masked."""
        if item_vectors is None:
            item_vectors = self.item_tower.all_item_vectors()
        scores = interest_scores(interest_state, item_vectors, self.interest_temperature) + self.item_tower.bias
        unknown = tf.one_hot(OOV_INDEX, self.item_tower.vocabulary_size, on_value=_MASKED, off_value=0.0)
        return scores + unknown

    def _batch_items(self, graph: tfgnn.GraphTensor, *candidates: tf.Tensor) -> tf.Tensor:
        """Unique vocabulary indices of a batch's items: its windows, memories and candidates."""
        tower = self.item_tower
        window = tower.indices(graph.node_sets[g.ITEM][g.ITEM_ID])
        memory = tower.indices(graph.node_sets[g.MEMORY][g.ITEM_ID])
        indices = [tf.cast(x, tf.int64) for x in (window, memory, *candidates)]
        return tf.unique(tf.concat(indices, axis=0))[0]

    def _loss(self, graph: tfgnn.GraphTensor, label_ids: tf.Tensor, training: bool) -> tf.Tensor:
        tower = self.item_tower
        labels = tf.cast(tower.indices(label_ids), tf.int64)
        num_classes = tower.vocabulary_size
        exact = self.num_sampled <= 0 or self.num_sampled >= num_classes - 1
        sampled_values = None
        candidates = [labels]
        if not exact:
            sampled_values = tf.random.log_uniform_candidate_sampler(
                labels[:, None], 1, min(self.num_sampled, num_classes - 1), unique=True, range_max=num_classes
            )
            candidates.append(sampled_values[0])
        fresh = self._batch_items(graph, *candidates) if training and tower.fine_tuned_text is not None else None
        item_vectors = tower.all_item_vectors(fresh_items=fresh)
        interest_state, _ = self.encoder.encode(graph, item_vectors=item_vectors, training=training)
        if exact:
            # Small catalogs can afford the exact softmax over every item.
            logits = self.all_scores(interest_state, item_vectors)
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        losses = multi_interest_sampled_softmax_loss(
            interest_state, labels, item_vectors, tower.bias, sampled_values, self.interest_temperature
        )
        return tf.reduce_mean(losses)

    def compile(self, optimizer: Any, text_optimizer: Any = None, **kwargs: Any) -> None:
        """Keras compile, plus the optimizer of the fine-tuned BERT layers.

        Args:
          optimizer: for every weight except the fine-tuned BERT layers; a
            `LossScaleOptimizer` switches on loss scaling (mixed precision).
          text_optimizer: for the fine-tuned BERT layers (pretrained weights
            need a far smaller learning rate than the recommender's own);
            required when the item tower fine-tunes text.
        """
        super().compile(optimizer=optimizer, **kwargs)
        text = self.item_tower.fine_tuned_text
        if text is not None and text_optimizer is None:
            raise ValueError("the item tower fine-tunes BERT: compile needs a text_optimizer")
        self.text_optimizer = text_optimizer
        if text is not None:
            # Slots exist before tracing, so the step can apply them conditionally.
            text_optimizer.build(text.trainable_variables)

    def train_step(self, data: tuple[tfgnn.GraphTensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        graph, label_ids = data
        # With mixed precision the loss is scaled so float16 gradients do not underflow.
        scaling = isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            loss = self._loss(graph, label_ids, training=True)
            scaled_loss = self.optimizer.get_scaled_loss(loss) if scaling else loss
        # Listed after the first forward pass, which builds layers that build lazily.
        text = self.item_tower.fine_tuned_text
        text_variables = text.trainable_variables if text is not None else []
        text_ids = {id(v) for v in text_variables}
        variables = [v for v in self.trainable_variables if id(v) not in text_ids]
        gradients = tape.gradient(scaled_loss, variables + text_variables)
        if scaling:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        main_gradients, text_gradients = gradients[: len(variables)], gradients[len(variables) :]
        self.optimizer.apply_gradients(zip(main_gradients, variables, strict=True))
        if text_variables:
            # The loss scale overflowed: the LossScaleOptimizer skipped this step, so must BERT.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in text_gradients if g is not None])
            tf.cond(
                finite,
                lambda: self.text_optimizer.apply_gradients(zip(text_gradients, text_variables, strict=True)),
                lambda: self.text_optimizer.iterations,
            )
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data: tuple[tfgnn.GraphTensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Full-softmax cross-entropy on validation: no sampling noise in early stopping."""
        graph, label_ids = data
        # One item table serves the encoder and the scores.
        item_vectors = self.item_tower.all_item_vectors()
        interest_state, _ = self.encoder.encode(graph, item_vectors=item_vectors)
        logits = self.all_scores(interest_state, item_vectors)
        labels = self.item_tower.indices(label_ids)
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
            "num_interests": self.num_interests,
            "event_dim": self.event_dim,
            "attention_heads": self.attention_heads,
            "num_sampled": self.num_sampled,
            "use_categories": self.use_categories,
            "use_time": self.use_time,
            "message_passing_rounds": self.message_passing_rounds,
            "use_memory": self.use_memory,
            "event_context_blocks": self.event_context_blocks,
            "event_context_dropout": self.event_context_dropout,
            "shared_interest_core": self.shared_interest_core,
            "interest_temperature": self.interest_temperature,
        }


def _top_per_component(values: tf.RaggedTensor, labels: tf.RaggedTensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-k (labels, values) per row of ragged inputs, padded with ("", 0)."""
    dense_values = values.to_tensor(default_value=-1.0)
    dense_labels = labels.to_tensor(default_value="")
    missing = tf.maximum(0, k - tf.shape(dense_values)[1])
    dense_values = tf.pad(dense_values, [[0, 0], [0, missing]], constant_values=-1.0)
    dense_labels = tf.pad(dense_labels, [[0, 0], [0, missing]], constant_values="")
    top = tf.math.top_k(dense_values, k=k)
    present = top.values >= 0.0
    top_labels = tf.gather(dense_labels, top.indices, batch_dims=1)
    return tf.where(present, top_labels, ""), tf.where(present, top.values, 0.0)


def readable_interest_graph(
    model: InterestModel,
    graph: tfgnn.GraphTensor,
    interest_state: tf.Tensor,
    top_items: int,
    top_categories: int,
    item_vectors: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """The weights of the window's items and categories in the user's current interests.

    An item's weight is the softmax, over the items of the user's window, of
    its best match with the user's interest vectors: how much of what the
    model now believes about the user that item accounts for. A category's
    weight is the sum of its items' weights (an item's weight split evenly over
    its categories). Both sum to 1 over the window, so they can be compared
    from one event to the next.

    Args:
      model: the trained model (its item tower).
      graph: the merged GraphTensor of the users' subgraphs.
      interest_state: [users, interests, dim] from `model(graph)`.
      top_items: how many items to return per user.
      top_categories: how many categories to return per user.
      item_vectors: the item tower's `all_item_vectors()`, if already computed.

    Returns:
      item ids/weights [users, top_items] and category names/weights
      [users, top_categories], padded with "" and 0.
    """
    items = graph.node_sets[g.ITEM]
    item_sizes = items.sizes
    owner = tf.repeat(tf.range(tf.shape(item_sizes)[0]), item_sizes)
    affinity = combine_interests(
        tf.einsum("nmd,nd->nm", tf.gather(interest_state, owner), model.item_tower(items[g.ITEM_ID], item_vectors)),
        model.interest_temperature,
    )
    affinity = tf.RaggedTensor.from_row_lengths(affinity, item_sizes)
    weights = tf.exp(affinity - tf.reduce_max(affinity, axis=1, keepdims=True))
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    item_ids = tf.RaggedTensor.from_row_lengths(items[g.ITEM_ID], item_sizes)
    top_item_ids, top_item_weights = _top_per_component(weights, item_ids, top_items)

    membership = graph.edge_sets[g.IN_CATEGORY].adjacency
    flat_weights = weights.flat_values
    categories_per_item = tf.math.unsorted_segment_sum(
        tf.ones_like(membership.source, tf.float32), membership.source, tf.shape(flat_weights)[0]
    )
    share = tf.gather(flat_weights / tf.maximum(categories_per_item, 1.0), membership.source)
    categories = graph.node_sets[g.CATEGORY]
    category_weights = tf.math.unsorted_segment_sum(share, membership.target, categories.total_size)
    category_weights = tf.RaggedTensor.from_row_lengths(category_weights, categories.sizes)
    names = tf.RaggedTensor.from_row_lengths(categories[g.CATEGORY_NAME], categories.sizes)
    top_names, top_category_weights = _top_per_component(category_weights, names, top_categories)
    return {
        "item_ids": top_item_ids,
        "item_weights": top_item_weights,
        "categories": top_names,
        "category_weights": top_category_weights,
    }
