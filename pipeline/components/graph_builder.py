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
        for split, example in split_user_history(user_id, events, self._max_events, self._categories, sentiments):
            yield beam.pvalue.TaggedOutput(split, example)


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
                _ = per_split[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
                    os.path.join(artifact_utils.get_split_uri([output], split), "data_tfrecord"),
                    file_name_suffix=".gz",
                )
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
    ):
        super().__init__(
            spec=GraphBuilderSpec(
                examples=examples,
                anomalies=anomalies,
                items_path=items_path,
                max_events=max_events,
                review_sentiment_dir=review_sentiment_dir,
                bert_dir=bert_dir,
                graph_examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
