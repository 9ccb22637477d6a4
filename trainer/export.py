"""Exports the trained interest model as a SavedModel for TensorFlow Serving.

The SavedModel's signatures are the serving contract of `schemas/signatures`.
They take plain tensors (serialized subgraphs, float states, string ids), so
the model loads with only `tensorflow` imported, as TF Serving's C++ loader
sees it: the GraphTensor parsing is inside the graph, made of core parse ops.
Warmup requests go to `assets.extra/tf_serving_warmup_requests` so the first
real request does not pay for graph initialisation.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # noqa: E402

from schemas import signatures as s  # noqa: E402
from trainer.co_interaction_channel import CoInteractionChannel, recent_item_ids  # noqa: E402
from trainer.graph_dataset import graph_tensor_spec, parse_subgraphs  # noqa: E402
from trainer.interest_model import (  # noqa: E402
    InterestModel,
    combine_interests,
    interest_scores,
    readable_interest_graph,
)
from trainer.item_tower import OOV_INDEX  # noqa: E402
from trainer.new_item_encoder import NewItemEncoder  # noqa: E402

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _spec(contract: s.SignatureContract) -> list[tf.TensorSpec]:
    return [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in contract.inputs]


def export_serving_model(
    model: InterestModel,
    export_dir: str,
    warmup_subgraphs: Sequence[bytes],
    score_offsets: np.ndarray | None = None,
    new_items: NewItemEncoder | None = None,
    co_interaction: CoInteractionChannel | None = None,
) -> None:
    """Writes the SavedModel with the update, fold, recommend and score signatures.

    And `encode_items` when `new_items` is given: the trainer always gives
    it; it needs the BERT the item text vectors came from, which models
    trained on stand-in text vectors (unit tests) do not have.

    Args:
      model: the trained model.
      export_dir: the directory to write (e.g. TFX's serving_model_dir).
      warmup_subgraphs: a few serialized subgraphs used to build warmup
        requests for every signature.
      score_offsets: per item of `model.item_tower.item_ids`, a constant added
        to its learned bias in every score the export serves (e.g.
        `trainer.rare_item_boost.rare_item_lift`); None adds nothing. The
        nonzero ones are also written to `SCORE_OFFSETS_FILE`.
      new_items: encodes items added after training (`encode_items`).
      co_interaction: the channel `recommend` and `score` add, over the
        user's `recent_item_ids`; None adds nothing (the inputs stay, so the
        contract does not depend on it).
    """
    spec = graph_tensor_spec()
    tower = model.item_tower
    # Training may have restored earlier weights (early stopping): the fine-tuned
    # text rows must come from the weights being exported.
    tower.refresh_text_table()
    # Item vectors are fixed after training: compute them once at export time
    # instead of on every request (scoring and encoding alike).
    item_vectors = tf.Variable(tower.all_item_vectors(), trainable=False, name="item_vectors")
    offsets = np.zeros(tower.vocabulary_size, np.float32)
    if score_offsets is not None:
        if len(score_offsets) != len(tower.item_ids):
            raise ValueError(f"score_offsets has {len(score_offsets)} values for {len(tower.item_ids)} items")
        offsets[OOV_INDEX + 1 :] = score_offsets
    item_bias = tf.Variable(
        tower.bias + offsets + tf.one_hot(OOV_INDEX, tower.vocabulary_size, on_value=-1e9, off_value=0.0),
        trainable=False,
        name="item_bias",
    )
    vocabulary = tf.constant([s.PADDING_ITEM_ID] + tower.item_ids)
    if co_interaction is None:
        co_interaction = CoInteractionChannel(tower.item_ids, {}, half_life=1.0)

    archive = tf.keras.export.ExportArchive()
    archive.track(model)
    archive.item_vectors = item_vectors
    archive.item_bias = item_bias
    archive.co_interaction = co_interaction

    def all_scores(interest_state: tf.Tensor, recent_items: tf.Tensor) -> tf.Tensor:
        channel = co_interaction.scores(tower.indices(recent_items))
        return interest_scores(interest_state, item_vectors, model.interest_temperature) + item_bias + channel

    def interest_outputs(subgraph: tf.Tensor, prior_memory: tf.Tensor | None) -> dict[str, tf.Tensor]:
        graph = parse_subgraphs(subgraph, spec)
        state, memory = model.encoder.encode(graph, prior_memory, item_vectors)
        readable = readable_interest_graph(
            model, graph, state, s.TOP_INTEREST_ITEMS, s.TOP_INTEREST_CATEGORIES, item_vectors
        )
        return {
            s.INTEREST_STATE: state,
            s.LONG_TERM_MEMORY: memory,
            s.INTEREST_ITEM_IDS: readable["item_ids"],
            s.INTEREST_ITEM_WEIGHTS: readable["item_weights"],
            s.INTEREST_CATEGORIES: readable["categories"],
            s.INTEREST_CATEGORY_WEIGHTS: readable["category_weights"],
            s.RECENT_ITEM_IDS: recent_item_ids(graph, s.RECENT_ITEMS),
        }

    @tf.function(input_signature=_spec(s.SIGNATURES[s.UPDATE_INTEREST]))
    def update_interest(subgraph: tf.Tensor) -> dict[str, tf.Tensor]:
        return interest_outputs(subgraph, None)

    @tf.function(input_signature=_spec(s.SIGNATURES[s.FOLD_INTEREST]))
    def fold_interest(subgraph: tf.Tensor, long_term_memory: tf.Tensor) -> dict[str, tf.Tensor]:
        return interest_outputs(subgraph, long_term_memory)

    @tf.function(input_signature=_spec(s.SIGNATURES[s.RECOMMEND]))
    def recommend(
        interest_state: tf.Tensor, recent_item_ids: tf.Tensor, exclude_item_ids: tf.Tensor, k: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        scores = all_scores(interest_state, recent_item_ids)
        excluded = tower.indices(exclude_item_ids)
        rows = tf.broadcast_to(tf.range(tf.shape(excluded)[0], dtype=excluded.dtype)[:, None], tf.shape(excluded))
        positions = tf.reshape(tf.stack([rows, excluded], axis=-1), [-1, 2])
        scores = tf.tensor_scatter_nd_update(scores, positions, tf.fill([tf.shape(positions)[0]], -1e9))
        k = tf.clip_by_value(k, 0, tower.vocabulary_size - 1)
        top = tf.math.top_k(scores, k=tf.reduce_max(tf.concat([k, [0]], axis=0)))
        # Items still at -1e9 are excluded or unknown: never recommend them;
        # past its own k a row is padding.
        within_k = tf.range(tf.shape(top.values)[1])[None, :] < k[:, None]
        keep = (top.values > -1e8) & within_k
        ids = tf.where(keep, tf.gather(vocabulary, top.indices), s.PADDING_ITEM_ID)
        return {s.ITEM_IDS: ids, s.SCORES: tf.where(keep, top.values, float("-inf"))}

    @tf.function(input_signature=_spec(s.SIGNATURES[s.SCORE]))
    def score(interest_state: tf.Tensor, recent_item_ids: tf.Tensor, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tower.indices(item_ids)
        vectors = tf.gather(item_vectors, rows)
        bias = tf.gather(item_bias, rows)
        channel = tf.gather(co_interaction.scores(tower.indices(recent_item_ids)), rows, batch_dims=1)
        per_interest = tf.einsum("bmd,bnd->bmn", interest_state, vectors)
        values = combine_interests(per_interest, model.interest_temperature) + bias + channel
        # Unknown items get -inf: ranked last, and visibly not a real score.
        return {s.SCORES: tf.where(bias < -1e8, float("-inf"), values)}

    archive.add_endpoint(s.UPDATE_INTEREST, update_interest)
    archive.add_endpoint(s.DEFAULT_SIGNATURE, update_interest)
    archive.add_endpoint(s.FOLD_INTEREST, fold_interest)
    archive.add_endpoint(s.RECOMMEND, recommend)
    archive.add_endpoint(s.SCORE, score)
    if new_items is not None:
        # An attribute, so the SavedModel keeps its BERT weights and look-up tables.
        archive.new_items = new_items

        @tf.function(input_signature=_spec(s.SIGNATURES[s.ENCODE_ITEMS]))
        def encode_items(
            titles: tf.Tensor, descriptions: tf.Tensor, item_categories: tf.Tensor
        ) -> dict[str, tf.Tensor]:
            vectors, bias = new_items(titles, descriptions, item_categories)
            return {s.ITEM_VECTORS: vectors, s.ITEM_BIAS: bias}

        archive.add_endpoint(s.ENCODE_ITEMS, encode_items)
    # write_out prints every endpoint's full signature to stdout; the log keeps it instead.
    interactive = tf.keras.utils.is_interactive_logging_enabled()
    tf.keras.utils.disable_interactive_logging()
    try:
        archive.write_out(export_dir)
    finally:
        if interactive:
            tf.keras.utils.enable_interactive_logging()
    write_warmup_requests(export_dir, update_interest, warmup_subgraphs, tower.item_ids[:3], new_items is not None)
    nonzero = {item_id: float(v) for item_id, v in zip(tower.item_ids, offsets[OOV_INDEX + 1 :], strict=True) if v}
    with tf.io.gfile.GFile(os.path.join(export_dir, s.SCORE_OFFSETS_FILE), "w") as f:
        json.dump(nonzero, f)


def write_warmup_requests(
    export_dir: str,
    update_interest: tf.types.experimental.GenericFunction,
    subgraphs: Sequence[bytes],
    sample_item_ids: Sequence[str],
    encode_items: bool = False,
) -> None:
    """Writes one PredictionLog per signature, as TF Serving's warmup expects (`encode_items`: it is one)."""
    subgraph_batch = tf.constant(list(subgraphs), tf.string)
    outputs = update_interest(subgraph_batch)
    state = outputs[s.INTEREST_STATE].numpy()
    recent = outputs[s.RECENT_ITEM_IDS]
    n = len(subgraphs)
    requests = {
        s.UPDATE_INTEREST: {s.SUBGRAPH: subgraph_batch},
        s.FOLD_INTEREST: {s.SUBGRAPH: subgraph_batch, s.LONG_TERM_MEMORY: outputs[s.LONG_TERM_MEMORY]},
        s.RECOMMEND: {
            s.INTEREST_STATE: state,
            s.RECENT_ITEM_IDS: recent,
            s.EXCLUDE_ITEM_IDS: tf.constant([[sample_item_ids[0], s.PADDING_ITEM_ID]] * n),
            s.K: tf.constant([10] * n, tf.int32),
        },
        s.SCORE: {
            s.INTEREST_STATE: state,
            s.RECENT_ITEM_IDS: recent,
            s.ITEM_IDS: tf.constant([list(sample_item_ids)] * n),
        },
    }
    if encode_items:
        requests[s.ENCODE_ITEMS] = {
            s.TITLES: tf.constant(["A new item", "Café crème (2024)"]),
            s.DESCRIPTIONS: tf.constant(["", "Its description."]),
            s.ITEM_CATEGORIES: tf.constant([["", ""], ["drama", "comedy"]]),
        }
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
