"""Reading interest-subgraph examples into batches of GraphTensors."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_gnn as tfgnn  # noqa: E402

from schemas import graph as g  # noqa: E402


def graph_tensor_spec() -> tfgnn.GraphTensorSpec:
    """The GraphTensorSpec of one interest subgraph, from the schema in `schemas/`."""
    return tfgnn.create_graph_spec_from_schema_pb(tfgnn.parse_schema(g.GRAPH_SCHEMA_PBTXT))


def parse_subgraphs(serialized: tf.Tensor, spec: tfgnn.GraphTensorSpec | None = None) -> tfgnn.GraphTensor:
    """Parses a [batch] of serialized subgraphs into one merged GraphTensor.

    Each input graph becomes one component, so one user node per input row, in
    order: row i of the model's output belongs to serialized[i].
    """
    graph = tfgnn.parse_example(spec or graph_tensor_spec(), serialized)
    return graph.merge_batch_to_components()


def training_dataset(
    file_patterns: Sequence[str], batch_size: int, shuffle: bool, seed: int = 0, repeat: bool = False
) -> tf.data.Dataset:
    """(merged GraphTensor, label item ids) batches from gzipped TFRecord files.

    Args:
      file_patterns: globs of TFRecord files written by the graph builder.
      batch_size: prediction points per batch.
      shuffle: shuffle examples (training) or keep file order (evaluation).
      seed: shuffle seed.
      repeat: repeat forever (for steps-based training).

    Returns:
      A dataset of (GraphTensor, tf.string [batch]) pairs.
    """
    files = sorted({f for p in file_patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no example files match {list(file_patterns)}")
    spec = graph_tensor_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)

    def parse(serialized: tf.Tensor) -> tuple[tfgnn.GraphTensor, tf.Tensor]:
        labels = tf.io.parse_example(serialized, {g.LABEL_ITEM_ID: tf.io.FixedLenFeature([], tf.string)})
        return parse_subgraphs(serialized, spec), labels[g.LABEL_ITEM_ID]

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def read_evaluation_points(example_files: Sequence[str]) -> tuple[list[bytes], list[str], list[list[str]]]:
    """(serialized subgraphs, target item ids, items to exclude) of evaluation examples."""
    files = sorted(f for p in example_files for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no evaluation examples match {list(example_files)}")
    serialized, targets, seen = [], [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        serialized.append(record)
        targets.append(features[g.LABEL_ITEM_ID].bytes_list.value[0].decode())
        seen.append([v.decode() for v in features[g.SEEN_ITEM_IDS].bytes_list.value])
    return serialized, targets, seen
