"""EventExampleGen: behaviour event files (CSV/JSONL) -> validated tf.Examples.

A FileBasedExampleGen with our own executor: every row goes through
`schemas.events.parse_event`, so a malformed row (missing field, unknown event
type, non-numeric timestamp, ...) is rejected with its file, line and reason,
kept in `rejected_events.jsonl` next to the run, and never stops the good rows.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import executor_spec
from tfx.v1.proto import Input, Output, SplitConfig

from schemas.events import Event, RejectedRecord, read_events

REJECTED_PATH_KEY = "rejected_path"
EVENT_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


def event_to_example(event: Event) -> tf.train.Example:
    """One validated event as a tf.Example (features named as the event fields)."""

    def b(v: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "user_id": b(event.user_id),
                "item_id": b(event.item_id),
                "event_type": b(event.event_type),
                "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=[event.timestamp])),
                "value": tf.train.Feature(float_list=tf.train.FloatList(value=[event.value])),
                "text": b(event.text),
                "event_id": b(event.event_id),
            }
        )
    )


def example_to_event(example: tf.train.Example) -> Event:
    """The inverse of `event_to_example`."""
    f = example.features.feature

    def b(name: str) -> str:
        return f[name].bytes_list.value[0].decode()

    return Event(
        user_id=b("user_id"),
        item_id=b("item_id"),
        event_type=b("event_type"),
        timestamp=int(f["timestamp"].int64_list.value[0]),
        value=float(f["value"].float_list.value[0]),
        text=b("text"),
        event_id=b("event_id"),
    )


def _event_files(pattern: str) -> list[str]:
    files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p) and p.endswith(EVENT_FILE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no event files ({', '.join(EVENT_FILE_SUFFIXES)}) match {pattern}")
    return files


def _read_file(path: str) -> Iterator[beam.pvalue.TaggedOutput | Event]:
    for result in read_events(path):
        if isinstance(result, RejectedRecord):
            yield beam.pvalue.TaggedOutput("rejected", result)
        else:
            yield result


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _EventsToExample(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str) -> beam.PCollection:  # noqa: N802
    input_base = exec_properties["input_base"]
    custom = json.loads(exec_properties.get("custom_config") or "{}")
    files = _event_files(os.path.join(input_base, split_pattern))
    parsed = (
        pipeline
        | "EventFiles" >> beam.Create(files)
        | "ParseRows" >> beam.FlatMap(_read_file).with_outputs("rejected", main="events")
    )
    rejected_path = custom.get(REJECTED_PATH_KEY)
    if rejected_path:
        _ = (
            parsed.rejected
            | "RejectedToJson" >> beam.Map(lambda r: json.dumps(r.to_dict(), ensure_ascii=False))
            | "WriteRejected" >> beam.io.WriteToText(rejected_path, num_shards=1, shard_name_template="")
        )
    return parsed.events | "ToExample" >> beam.Map(event_to_example)


class EventExampleGenExecutor(BaseExampleGenExecutor):
    """ExampleGen executor that validates rows with the shared event contract."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802
        return _EventsToExample


def event_example_gen(events_dir: str, rejected_path: str) -> FileBasedExampleGen:
    """The pipeline's ExampleGen over a directory of event files.

    All events go to one split, `events`: the split that matters (per-user
    chronological leave-one-out) is made by the graph builder, which needs each
    user's whole history.

    Args:
      events_dir: directory holding the event files (CSV with header, JSONL).
      rejected_path: where rejected rows are written (JSON lines, with source
        file, line number and reason).
    """
    return FileBasedExampleGen(
        input_base=events_dir,
        input_config=Input(splits=[Input.Split(name="events", pattern="*")]),
        output_config=Output(split_config=SplitConfig(splits=[SplitConfig.Split(name="events", hash_buckets=1)])),
        custom_config={REJECTED_PATH_KEY: rejected_path},
        custom_executor_spec=executor_spec.BeamExecutorSpec(EventExampleGenExecutor),
    )
