"""GraphBuilder: validated events -> one interest subgraph per prediction point.

A Beam component (so `beam_pipeline_args` take it to Flink, Spark or Dataflow).
It groups events by user, orders each user's history in time and, per user,
makes the chronological leave-one-out split:

    test   the user's last event
    eval   the event before it (validation: early stopping and blessing)
    train  every earlier event

For each prediction point (u, t) it writes u's interest subgraph built from
events strictly before t (`schemas.graph`, the same code the online client
runs) plus the label (the item touched at t). Evaluation points also carry the
items the user had interacted with before t, which ranking must exclude.

It refuses to run on data that ExampleValidator found anomalous, and writes the
item catalog (with training-split interaction counts and item <-> item
co-interaction neighbours, both from the training split only) into its output.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from pipeline.components.co_interaction import co_interaction_pairs, top_neighbours
from pipeline.components.event_example_gen import example_to_event
from schemas import graph as g
from schemas.catalog import CatalogEntry, catalog_path, write_catalog
from schemas.events import Event, Item, read_items, reviews_with_text

SPLITS = ("train", "eval", "test")
# Files per split. Each is sorted in memory by one worker (see _WriteShard), so
# larger data wants more.
DEFAULT_EXAMPLE_SHARDS = 8


class DataAnomaliesError(RuntimeError):
    """ExampleValidator found anomalies; the message lists them."""


def split_user_history(
    user_id: str,
    events: Iterable[Event],
    max_events: int,
    item_categories: Mapping[str, Sequence[str]],
    review_sentiment: Mapping[str, float] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yields (split, serialized example) for each prediction point of one user.

    Args:
      user_id: the user.
      events: all of the user's events.
      max_events: the event window bound.
      item_categories: item_id -> categories, from the catalog.
      review_sentiment: event_id -> sentiment of the user's review events.

    Returns:
      An iterator over the user's training, validation and test examples.
      Training points with an empty window (nothing strictly earlier) are
      skipped; validation and test points are always kept, so cold users are
      evaluated too.
    """
    history = sorted(events, key=g.event_order)
    n = len(history)
    for i, target in enumerate(history):
        split = "test" if i == n - 1 else "eval" if i == n - 2 else "train"
        remembered, window = g.split_history(history[:i], target.timestamp, max_events)
        if split == "train" and not window:
            continue
        example = g.encode_interest_subgraph(window, target.timestamp, item_categories, review_sentiment, remembered)
        g.add_training_label(example, user_id, target)
        if split != "train":
            seen = sorted({e.item_id for e in history[:i]})
            example.features.feature[g.SEEN_ITEM_IDS].bytes_list.value.extend(s.encode() for s in seen)
        yield split, example.SerializeToString()


class MissingReviewSentimentError(RuntimeError):
    """Events carry review text but no review sentiment head was configured."""


class _BuildUserExamples(beam.DoFn):
    def __init__(self, items_path: str, max_events: int, review_sentiment_dir: str, bert_dir: str) -> None:
        self._items_path = items_path
        self._max_events = max_events
        self._review_sentiment_dir = review_sentiment_dir
        self._bert_dir = bert_dir

    def setup(self) -> None:
        # Each worker reads the catalog once; it is small next to the events.
        items, _ = read_items(self._items_path)
        self._categories = {i.item_id: i.categories for i in items}
        self._review_sentiment: Any = None

    def _sentiments(self, events: list[Event]) -> dict[str, float]:
        if not reviews_with_text(events):
            return {}
        if self._review_sentiment is None:
            if not self._review_sentiment_dir:
                raise MissingReviewSentimentError(
                    "events include review text, but no review sentiment head is configured: train one with "
                    "`interest-graph train-review-sentiment --output DIR` and pass --review-sentiment-dir DIR/head"
                )
            # Loaded only when a review appears: BERT costs seconds and memory.
            from trainer.review_sentiment import ReviewSentiment

            self._review_sentiment = ReviewSentiment.load(self._review_sentiment_dir, self._bert_dir or None)
        return self._review_sentiment.event_sentiments(events)

    def process(self, element: tuple[str, Iterable[Event]]) -> Iterator[beam.pvalue.TaggedOutput]:
        user_id, events = element
        events = list(events)
        sentiments = self._sentiments(events)
        examples = split_user_history(user_id, events, self._max_events, self._categories, sentiments)
        for position, (split, example) in enumerate(examples):
            yield beam.pvalue.TaggedOutput(split, (user_id, position, example))


def example_shard(user_id: str, num_shards: int) -> int:
    """The output file a user's examples go to: a stable hash, the same in every run."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % num_shards


def _shard_path(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.gz"


class _WriteShard(beam.DoFn):
    """Writes one shard's examples ordered by user, then by the user's own order.

    A runner hands a GroupByKey's output over in whatever order its bundles
    finish, so a plain file sink changes the example order from run to run,
    and with it the trainer's shuffled batches and the trained model. Sorting
    each shard (one worker holds 1/num_shards of the split) makes the files,
    and so training, the same in every run.
    """

    def __init__(self, prefix: str, num_shards: int) -> None:
        self._prefix = prefix
        self._num_shards = num_shards

    def process(self, element: tuple[int, Iterable[tuple[str, int, bytes]]]) -> Iterator[str]:
        shard, records = element
        path = _shard_path(self._prefix, shard, self._num_shards)
        # Written aside and renamed, so a retried bundle never leaves half a file.
        partial = f"{path}.partial"
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.TFRecordWriter(partial, options="GZIP") as writer:
            for _, _, example in sorted(records, key=lambda r: (r[0], r[1])):
                writer.write(example)
        tf.io.gfile.rename(partial, path, overwrite=True)
        yield path


class WriteInUserOrder(beam.PTransform):
    """Writes (user_id, position, serialized example) records as gzipped TFRecord shards.

    Every run writes the same files: a user's examples go to the shard of a
    stable hash of the user id, and each shard is ordered by user, then by
    position.

    Args:
      prefix: path prefix of the files (`<prefix>-00003-of-00008.gz`).
      num_shards: how many files.
    """

    def __init__(self, prefix: str, num_shards: int) -> None:
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        num_shards = self._num_shards
        return (
            records
            | "Shard" >> beam.Map(lambda r: (example_shard(r[0], num_shards), r))
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix, num_shards))
        )


def _write_empty_shards(prefix: str, num_shards: int) -> None:
    """Shards no user hashed to still exist, so every split has its num_shards files."""
    for shard in range(num_shards):
        path = _shard_path(prefix, shard, num_shards)
        if not tf.io.gfile.exists(path):
            with tf.io.TFRecordWriter(path, options="GZIP"):
                pass


def _training_items(element: tuple[str, Iterable[Event]]) -> list[str]:
    """The user's training-split items in time order (validation and test events removed)."""
    history = sorted(element[1], key=g.event_order)
    return [event.item_id for event in history[:-2]]


def read_anomalies(anomalies_uri: str) -> list[str]:
    """Readable descriptions of every anomaly ExampleValidator recorded."""
    problems = []
    for path in tf.io.gfile.glob(os.path.join(anomalies_uri, "*", "SchemaDiff.pb")):
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        split = os.path.basename(os.path.dirname(path)).removeprefix("Split-")
        for feature, info in anomalies.anomaly_info.items():
            problems.append(f"[{split}] feature '{feature}': {info.short_description} ({info.description})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            problems.append(f"[{split}] dataset: {info.short_description} ({info.description})")
    return problems


class GraphBuilderExecutor(base_beam_executor.BaseBeamExecutor):
    """Builds the graph examples and the item catalog."""

    def Do(  # noqa: N802
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        problems = read_anomalies(artifact_utils.get_single_uri(input_dict["anomalies"]))
        if problems:
            raise DataAnomaliesError(
                "ExampleValidator found anomalies in the events; fix the data or the schema "
                "(schemas/events_schema.pbtxt):\n  " + "\n  ".join(problems)
            )
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        output = artifact_utils.get_single_instance(output_dict["graph_examples"])
        output.split_names = artifact_utils.encode_split_names(list(SPLITS))
        items_path = exec_properties["items_path"]
        max_events = int(exec_properties["max_events"])
        review_sentiment_dir = exec_properties.get("review_sentiment_dir") or ""
        bert_dir = exec_properties.get("bert_dir") or ""
        patterns = [
            os.path.join(artifact_utils.get_split_uri([examples], split), "*")
            for split in artifact_utils.decode_split_names(examples.split_names)
        ]
        num_shards = int(exec_properties.get("example_shards") or DEFAULT_EXAMPLE_SHARDS)
        prefixes = {
            split: os.path.join(artifact_utils.get_split_uri([output], split), "data_tfrecord") for split in SPLITS
        }
        counts_path = os.path.join(output.uri, "train_item_counts")
        pairs_path = os.path.join(output.uri, "co_interaction_counts")
        with self._make_beam_pipeline() as p:
            by_user = (
                p
                | "EventFiles" >> beam.Create(patterns)
                | "ReadEvents" >> beam.io.ReadAllFromTFRecord()
                | "ToEvent" >> beam.Map(lambda b: example_to_event(tf.train.Example.FromString(b)))
                | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e))
                | "GroupByUser" >> beam.GroupByKey()
            )
            per_split = by_user | "BuildSubgraphs" >> beam.ParDo(
                _BuildUserExamples(items_path, max_events, review_sentiment_dir, bert_dir)
            ).with_outputs(*SPLITS)
            for split in SPLITS:
                _ = per_split[split] | f"Write{split}" >> WriteInUserOrder(prefixes[split], num_shards)
            training_items = by_user | "TrainingItems" >> beam.Map(_training_items)
            for name, path, keys in (
                ("Items", counts_path, beam.FlatMap(lambda sequence: sequence)),
                ("CoInteractions", pairs_path, beam.FlatMap(co_interaction_pairs)),
            ):
                _ = (
                    training_items
                    | f"{name}Keys" >> keys
                    | f"Count{name}" >> beam.combiners.Count.PerElement()
                    | f"{name}ToJson" >> beam.Map(json.dumps)
                    | f"Write{name}" >> beam.io.WriteToText(path, num_shards=1, shard_name_template="")
                )
        for prefix in prefixes.values():
            _write_empty_shards(prefix, num_shards)
        write_catalog(catalog_path(output.uri), _catalog_entries(items_path, counts_path, pairs_path))


def _read_counts(path: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    with tf.io.gfile.GFile(path) as f:
        for line in f:
            key, count = json.loads(line)
            counts[key] = count
    return counts


def _catalog_entries(items_path: str, counts_path: str, pairs_path: str) -> list[CatalogEntry]:
    counts = _read_counts(counts_path)
    neighbours = top_neighbours(_read_counts(pairs_path).items(), counts)
    items, _ = read_items(items_path)
    known = {i.item_id for i in items}
    # Items that occur in events but not in the catalog still get an entry
    # (no text, no categories) so the model can learn them from behaviour.
    extra = [Item(item_id, "", "", ()) for item_id in sorted(counts) if item_id not in known]
    return [CatalogEntry(item, counts.get(item.item_id, 0), neighbours.get(item.item_id, ())) for item in items + extra]


class GraphBuilderSpec(types.ComponentSpec):
    """Inputs: validated events and their anomalies; output: graph examples."""

    PARAMETERS = {
        "items_path": ExecutionParameter(type=str),
        "max_events": ExecutionParameter(type=int),
        "review_sentiment_dir": ExecutionParameter(type=str, optional=True),
        "bert_dir": ExecutionParameter(type=str, optional=True),
        "example_shards": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {"graph_examples": ChannelParameter(type=standard_artifacts.Examples)}


class GraphBuilder(base_beam_component.BaseBeamComponent):
    """TFX component that writes interest subgraphs per prediction point.

    Args:
      examples: the events from ExampleGen.
      anomalies: ExampleValidator's output; any anomaly stops the run.
      items_path: the item catalog file (CSV or JSONL).
      max_events: the event window bound.
      review_sentiment_dir: the review sentiment head (`ReviewSentiment.save`);
        needed only when events carry review text.
      bert_dir: the BERT folder the head reads review text with.
      example_shards: files per split; a split's examples are written in the
        same order in every run (by user, then time), so training repeats.
    """

    SPEC_CLASS = GraphBuilderSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(GraphBuilderExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        anomalies: types.BaseChannel,
        items_path: str,
        max_events: int,
        review_sentiment_dir: str = "",
        bert_dir: str = "",
        example_shards: int = DEFAULT_EXAMPLE_SHARDS,
    ):
        super().__init__(
            spec=GraphBuilderSpec(
                examples=examples,
                anomalies=anomalies,
                items_path=items_path,
                max_events=max_events,
                review_sentiment_dir=review_sentiment_dir,
                bert_dir=bert_dir,
                example_shards=example_shards,
                graph_examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
