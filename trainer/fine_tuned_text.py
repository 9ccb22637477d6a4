"""Item text vectors from BERT whose top layers train with the recommender (the GPU profile)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import keras_nlp  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.text_encoder import ItemTextEncoder, mean_pool_and_normalize  # noqa: E402


def _copy_layer(layer: keras_nlp.layers.TransformerEncoder, dtype: str) -> keras_nlp.layers.TransformerEncoder:
    """A trainable copy of a pretrained transformer layer, computing in `dtype` (a Keras dtype policy)."""
    copy = keras_nlp.layers.TransformerEncoder.from_config({**layer.get_config(), "dtype": dtype})
    # One call builds every sublayer (attention builds lazily), so the weight lists line up.
    copy(tf.zeros([1, 2, layer.get_weights()[0].shape[0]]), padding_mask=tf.ones([1, 2], tf.bool))
    copy.set_weights(layer.get_weights())
    return copy


class FineTunedText(tf.keras.layers.Layer):
    """BERT vectors of item texts, with the top transformer layers trainable.

    The frozen CPU profile reads each item's text once. Fine-tuning lets the
    text view learn what matters for *recommending* (a title's genre words
    rather than its syntax), at the cost of running BERT during training. To
    keep that cost to the top layers, the lower layers stay frozen and their
    output for every item is computed once, here; each training step then runs
    only the top `finetune_layers` on the unique items of its batch, followed by
    all-MiniLM's mean pooling and normalisation. With the copied layers
    untouched the vectors equal `ItemTextEncoder.encode`.

    Args:
      item_texts: one text per row; the row of the unknown item (index 0)
        gets a zero vector whatever its text.
      bert_dir: the pretrained BERT (config.json, model.safetensors, vocab.txt).
      finetune_layers: how many top transformer layers train.
      sequence_length: word pieces read per text.
      mixed_precision: the trainable layers compute in float16 (variables stay
        float32; the loss is scaled by the trainer); for GPUs.
    """

    def __init__(
        self,
        item_texts: Sequence[str],
        bert_dir: str,
        finetune_layers: int,
        sequence_length: int,
        mixed_precision: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_texts = list(item_texts)
        self.bert_dir = str(bert_dir)
        self.finetune_layers = int(finetune_layers)
        self.sequence_length = int(sequence_length)
        self.mixed_precision = bool(mixed_precision)
        encoder = ItemTextEncoder(self.bert_dir, sequence_length=self.sequence_length)
        states, mask = encoder.top_layer_inputs(self.item_texts, self.finetune_layers)
        self.hidden_dim = encoder.hidden_dim
        # Computed once, never trained: a non-trainable weight so it lives on the device with the layers.
        self.layer_inputs = self.add_weight(
            name="frozen_layer_outputs", shape=states.shape, initializer="zeros", trainable=False
        )
        self.layer_inputs.assign(states)
        self.padding_mask = tf.constant(mask)
        policy = "mixed_float16" if self.mixed_precision else "float32"
        self.top_layers = [_copy_layer(layer, policy) for layer in encoder.top_layers(self.finetune_layers)]

    def call(self, indices: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """[len(indices), hidden_dim] float32 unit vectors of the items at `indices`."""
        states = tf.gather(self.layer_inputs, indices)
        mask = tf.gather(self.padding_mask, indices)
        for layer in self.top_layers:
            states = layer(states, padding_mask=mask, training=training)
        known = tf.cast(tf.not_equal(indices, 0), tf.float32)[:, None]
        return mean_pool_and_normalize(states, mask) * known

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            item_texts=self.item_texts,
            bert_dir=self.bert_dir,
            finetune_layers=self.finetune_layers,
            sequence_length=self.sequence_length,
            mixed_precision=self.mixed_precision,
        )
        return config
