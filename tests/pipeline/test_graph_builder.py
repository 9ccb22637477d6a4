from __future__ import annotations

import os
import random

import apache_beam as beam
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.components.graph_builder import (
    MissingReviewSentimentError,
    WriteInUserOrder,
    _BuildUserExamples,
    example_shard,
    read_anomalies,
    split_user_history,
)
from schemas import graph as g
from schemas.events import Event
from trainer.graph_dataset import parse_subgraphs


def _events() -> list[Event]:
    # Two events share a timestamp: neither may see the other.
    times = [100, 200, 200, 300, 400, 500]
    return [Event("u", f"i{k}", "rating", t, 3.0, "", f"e{k}") for k, t in enumerate(times)]


def _examples(max_events: int = 50) -> list[tuple[str, tf.train.Example]]:
    return [
        (split, tf.train.Example.FromString(data))
        for split, data in split_user_history("u", reversed(_events()), max_events, {"i1": ("A",)})
    ]


def test_chronological_leave_one_out_split() -> None:
    examples = _examples()
    labels = [(split, ex.features.feature[g.LABEL_ITEM_ID].bytes_list.value[0].decode()) for split, ex in examples]
    # i0 has nothing before it, so it is no training point.
    assert labels == [("train", "i1"), ("train", "i2"), ("train", "i3"), ("eval", "i4"), ("test", "i5")]


def test_no_subgraph_contains_an_event_at_or_after_its_prediction_time() -> None:
    for _, example in _examples():
        graph = parse_subgraphs(tf.constant([example.SerializeToString()]))
        label_time = example.features.feature[g.META_TIMESTAMP].int64_list.value[0]
        assert graph.context[g.PREDICTION_TIME].numpy()[0] == label_time
        assert (graph.edge_sets[g.EVENT][g.EVENT_AGE_DAYS].numpy() > 0).all()
    second_tie = dict(_examples())["train"]  # the last train point is i3 at t=300
    items = parse_subgraphs(tf.constant([second_tie.SerializeToString()])).node_sets[g.ITEM][g.ITEM_ID]
    assert sorted(items.numpy().tolist()) == [b"i0", b"i1", b"i2"]
    tie = _examples()[1][1]  # i2 at t=200 must not see i1 at t=200
    items = parse_subgraphs(tf.constant([tie.SerializeToString()])).node_sets[g.ITEM][g.ITEM_ID]
    assert items.numpy().tolist() == [b"i0"]


def test_evaluation_points_carry_every_earlier_item_to_exclude() -> None:
    split_examples = dict(_examples())
    seen = split_examples["test"].features.feature[g.SEEN_ITEM_IDS].bytes_list.value
    assert sorted(seen) == [b"i0", b"i1", b"i2", b"i3", b"i4"]
    assert g.SEEN_ITEM_IDS not in split_examples["train"].features.feature


def test_window_bound_applies() -> None:
    test_example = dict(_examples(max_events=2))["test"]
    graph = parse_subgraphs(tf.constant([test_example.SerializeToString()]))
    assert graph.edge_sets[g.EVENT].sizes.numpy().tolist() == [2]


def test_anomalies_are_read_into_readable_messages(tmp_path) -> None:
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["event_type"]
    info.short_description = "Unexpected string values"
    info.description = "Examples contain values missing from the schema: like (~1%)."
    (tmp_path / "Split-events").mkdir()
    (tmp_path / "Split-events" / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
    problems = read_anomalies(str(tmp_path))
    assert problems == [
        "[events] feature 'event_type': Unexpected string values "
        "(Examples contain values missing from the schema: like (~1%).)"
    ]


@pytest.mark.parametrize("n", [1, 2])
def test_short_histories_are_still_evaluated(n: int) -> None:
    events = _events()[:n]
    splits = [split for split, _ in split_user_history("u", events, 50, {})]
    assert splits == (["test"] if n == 1 else ["eval", "test"])


def test_memory_holds_exactly_the_events_older_than_the_window() -> None:
    examples = dict(_examples(max_events=2))
    memory = examples["test"].features.feature
    # The test point (i5 at 500) sees i3, i4 in its window; i0, i1, i2 are remembered.
    assert sorted(v.decode() for v in memory[f"nodes/{g.MEMORY}.{g.ITEM_ID}"].bytes_list.value) == ["i0", "i1", "i2"]
    log_weights = list(memory[f"nodes/{g.MEMORY}.{g.MEMORY_LOG_WEIGHT}"].float_list.value)
    assert all(w <= 0.0 for w in log_weights) and len(log_weights) == 3
    # The point of i2 at 200 sees only i0 (i1 is its tie): with a window of one, i0 is
    # in the window and nothing is left to remember (i1 must not be, nor i0 twice).
    train = [ex for split, ex in _examples(max_events=1) if split == "train"]
    tied = train[1].features.feature
    assert tied[g.LABEL_ITEM_ID].bytes_list.value == [b"i2"]
    assert list(tied[f"nodes/{g.MEMORY}.{g.ITEM_ID}"].bytes_list.value) == []


def _review_user(tmp_path) -> tuple[_BuildUserExamples, list[Event]]:
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "i1", "title": "Tea", "categories": ["drinks"]}\n')
    events = [Event("u", "i1", "view", 100 + k, 1.0, "", f"v{k}") for k in range(3)]
    events.insert(1, Event("u", "i1", "review", 100, 1.0, "Stale and disgusting, I threw it away.", "r"))
    return _BuildUserExamples(str(items), 50, "", ""), events


def test_review_text_without_a_sentiment_head_stops_with_a_clear_error(tmp_path) -> None:
    builder, events = _review_user(tmp_path)
    builder.setup()
    with pytest.raises(MissingReviewSentimentError, match="train-review-sentiment"):
        list(builder.process(("u", events)))


def test_review_events_carry_the_heads_sentiment(tmp_path, review_sentiment_run: dict, bert_dir: str) -> None:
    builder, events = _review_user(tmp_path)
    builder = _BuildUserExamples(builder._items_path, 50, review_sentiment_run["result"]["head_dir"], bert_dir)
    builder.setup()
    ((user, _, test_example),) = (out.value for out in builder.process(("u", events)) if out.tag == "test")
    assert user == "u"
    features = tf.train.Example.FromString(test_example).features.feature
    types = [v.decode() for v in features[f"edges/{g.EVENT}.{g.EVENT_TYPE}"].bytes_list.value]
    sentiment = list(features[f"edges/{g.EVENT}.{g.EVENT_SENTIMENT}"].float_list.value)
    assert types.count("review") == 1
    assert sentiment[types.index("review")] < -0.2
    assert all(v == 0.0 for t, v in zip(types, sentiment, strict=True) if t != "review")


def _written(prefix: str, records: list[tuple[str, int, bytes]], num_shards: int) -> dict[str, list[bytes]]:
    with beam.Pipeline() as p:
        _ = p | beam.Create(records, reshuffle=False) | WriteInUserOrder(prefix, num_shards)
    files = sorted(tf.io.gfile.glob(prefix + "*"))
    return {os.path.basename(f): [r.numpy() for r in tf.data.TFRecordDataset(f, "GZIP")] for f in files}


def test_examples_are_written_in_the_same_order_whatever_order_they_arrive_in(tmp_path) -> None:
    """The runner's bundle order must not reach the files: it would change the trained model."""
    records = [(f"u{u}", k, f"u{u}-example{k}".encode()) for u in range(20) for k in range(5)]
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    first = _written(str(tmp_path / "a" / "data"), records, 4)
    second = _written(str(tmp_path / "b" / "data"), shuffled, 4)
    assert first == second
    assert sorted(first) == [f"data-{k:05d}-of-00004.gz" for k in range(4)]
    written = [r for shard in first.values() for r in shard]
    assert sorted(written) == sorted(r[2] for r in records), "every example exactly once"
    for name, shard in first.items():
        users = [r.split(b"-")[0].decode() for r in shard]
        assert users == sorted(users), "a shard is ordered by user"
        assert {example_shard(u, 4) for u in users} == {int(name.split("-")[1])}
        for user in set(users):
            own = [r for r in shard if r.startswith(user.encode() + b"-")]
            assert own == [f"{user}-example{k}".encode() for k in range(5)], "a user's examples keep their order"
