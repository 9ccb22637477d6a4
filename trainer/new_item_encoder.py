"""Vectors for items added to the catalog after training (the `encode_items` signature)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.core_ops_tokenizer import CoreOpsBertTokenizer  # noqa: E402
from trainer.item_tower import OOV_INDEX, ItemTower  # noqa: E402
from trainer.text_encoder import ItemTextEncoder, mean_pool_and_normalize  # noqa: E402

# An item with fewer training interactions than this counts as barely known
# (the cold-item slice's threshold in bench/quality).
BARELY_KNOWN_BELOW = 5


def new_item_bias(item_bias: np.ndarray, train_counts: Sequence[int], offset: float = 0.0) -> float:
    """The popularity bias of an item nobody has touched yet.

    A learned bias says how often an item is chosen regardless of who chooses;
    a new item has no history, so it gets the mean bias of the items the model
    barely knows (fewer than BARELY_KNOWN_BELOW training interactions; all
    items when there are none), plus the served offset a never-seen item gets
    (the rare-item lift at zero interactions).

    Args:
      item_bias: learned bias per item of the vocabulary (unknown row excluded).
      train_counts: training interactions per item, in the same order.
      offset: the served score offset of an item with no interactions.
    """
    bias = np.asarray(item_bias, np.float64)
    counts = np.asarray(train_counts)
    if bias.shape != counts.shape or not bias.size:
        raise ValueError(f"need one training count per item bias, got {counts.shape} for {bias.shape}")
    rare = counts < BARELY_KNOWN_BELOW
    return float((bias[rare] if rare.any() else bias).mean() + offset)


class NewItemEncoder(tf.Module):
    """Places items the model never saw in its item space, from text and categories alone.

    A trained item's vector is the sum of views (`ItemTower`): projected BERT
    text, projected mean category embedding, a learned id embedding and its
    co-interaction neighbours. A new item has no id embedding and no
    neighbours yet, so its vector is the first two views, computed exactly as
    training computed them: the item's text (`Item.text`: title, description
    and categories joined), tokenized with core ops (`CoreOpsBertTokenizer`,
    so the SavedModel still loads with only TensorFlow), read by the same BERT
    (with the fine-tuned top layers in the GPU profile), mean-pooled and
    projected. Categories the model does not know are left out: their
    embeddings never trained.

    Args:
      item_tower: the trained model's item tower.
      text_encoder: the BERT the tower's text vectors came from; None only
        for a tower without the text view.
      bias: the bias every new item gets (`new_item_bias`).
    """

    def __init__(
        self, item_tower: ItemTower, text_encoder: ItemTextEncoder | None, bias: float, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.item_tower = item_tower
        self.bias = float(bias)
        self.text_encoder = text_encoder
        if item_tower.use_text and text_encoder is None:
            raise ValueError("the item tower reads text: new items need its BERT (text_encoder)")
        self.tokenizer = None
        self.text_layers = None
        if item_tower.use_text:
            self.tokenizer = CoreOpsBertTokenizer(text_encoder.vocabulary(), text_encoder.sequence_length)
            fine_tuned = item_tower.fine_tuned_text
            if fine_tuned is None:
                self.text_layers = text_encoder.backbone
            else:
                self.text_layers = text_encoder.lower_layers(fine_tuned.finetune_layers)

    def item_texts(self, titles: tf.Tensor, descriptions: tf.Tensor, item_categories: tf.Tensor) -> tf.Tensor:
        """`Item.text` of each row: the non-empty parts joined with ". "."""
        categories = tf.ragged.boolean_mask(item_categories, tf.not_equal(item_categories, ""))
        parts = tf.stack([titles, descriptions, tf.strings.reduce_join(categories, axis=1, separator=", ")], axis=1)
        parts = tf.ragged.boolean_mask(parts, tf.not_equal(parts, ""))
        return tf.strings.reduce_join(parts, axis=1, separator=". ")

    def text_vectors(self, texts: tf.Tensor) -> tf.Tensor:
        """[n, hidden] BERT sentence vectors, as the tower's text view saw its items'."""
        token_ids, mask = self.tokenizer(texts)
        inputs = {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": mask}
        fine_tuned = self.item_tower.fine_tuned_text
        if fine_tuned is None:
            states = self.text_layers(inputs, training=False)["sequence_output"]
        else:
            states = self.text_layers(inputs, training=False)
            for layer in fine_tuned.top_layers:
                states = layer(states, padding_mask=mask, training=False)
        return mean_pool_and_normalize(states, mask)

    def __call__(
        self, titles: tf.Tensor, descriptions: tf.Tensor, item_categories: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(float32 [n, output_dim] item vectors, float32 [n] biases) of the described items."""
        tower = self.item_tower
        indices = tower.category_lookup(item_categories)
        known = (indices != OOV_INDEX) & tf.not_equal(item_categories, "") & bool(tower.category_names)
        known = tf.cast(known, tf.float32)
        embeddings = tf.gather(tower.category_embedding.embeddings, indices) * known[:, :, None]
        category_vectors = tf.math.divide_no_nan(
            tf.reduce_sum(embeddings, axis=1), tf.reduce_sum(known, axis=1)[:, None]
        )
        vectors = tower.category_projection(category_vectors)
        if tower.use_text:
            texts = self.item_texts(titles, descriptions, item_categories)
            vectors += tower.text_projection(self.text_vectors(texts))
        return vectors, tf.fill(tf.shape(titles), self.bias)
