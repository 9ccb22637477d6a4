"""The interest subgraph of one user at one moment: schema and encoder.

A prediction point (user u, time t) is represented by u's bounded window of
recent events strictly before t, as a small heterogeneous graph:

    user      one node: whose interest state is computed
    item      one node per distinct item in the window (feature `item_id`)
    category  one node per distinct category of those items (feature `name`)
    memory    the long-term memory: one node per distinct item of the events
              that fell out of the window (older than its oldest event), with
              `log_weight` = log sum over those events of exp(-age / tau),
              tau = MEMORY_TIME_SCALE_DAYS; the model folds them into one
              memory vector (a recency-weighted mean of their item vectors)
    event     item -> user, one edge per event: `event_type`, `value`,
              `age_days` (how long before t it happened), `recency`
              (0 for the most recent event of the window) and `sentiment`
              (a review's sentiment in [-1, 1]; 0 for other events)
    in_category  item -> category

The graph carries raw ids and strings, not vocabulary indices: the model owns
its vocabularies, so a client needs nothing but this module to build a request.
The pipeline's graph builder and the online client both call
`encode_interest_subgraph`, so training and serving see identical inputs.

The encoding is TF-GNN's tf.Example format (`tfgnn.parse_example` with
`GRAPH_SCHEMA_PBTXT` reads it), written with plain protobuf so the client does
not need tensorflow_gnn.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from tensorflow.core.example import example_pb2, feature_pb2

from schemas.events import Event

USER = "user"
ITEM = "item"
CATEGORY = "category"
MEMORY = "memory"
EVENT = "event"
IN_CATEGORY = "in_category"

ITEM_ID = "item_id"
CATEGORY_NAME = "name"
EVENT_TYPE = "event_type"
EVENT_VALUE = "value"
EVENT_AGE_DAYS = "age_days"
EVENT_RECENCY = "recency"
EVENT_SENTIMENT = "sentiment"
MEMORY_LOG_WEIGHT = "log_weight"
PREDICTION_TIME = "prediction_time"

# Features of a training example that are not part of the graph: what the user
# touched at the prediction time, and where the example comes from.
LABEL_ITEM_ID = "label/item_id"
META_USER_ID = "meta/user_id"
META_TIMESTAMP = "meta/timestamp"
# Evaluation examples only: the items the user touched before t, which a
# ranking must exclude.
SEEN_ITEM_IDS = "meta/seen_item_ids"

SECONDS_PER_DAY = 86_400.0
# How fast the long-term memory forgets: an event's weight is exp(-age / tau).
MEMORY_TIME_SCALE_DAYS = 60.0

GRAPH_SCHEMA_PBTXT = f"""
context {{
  features {{
    key: "{PREDICTION_TIME}"
    value {{ dtype: DT_INT64 description: "Unix seconds of the prediction point t" }}
  }}
}}
node_sets {{
  key: "{USER}"
  value {{ description: "The user whose interest state is computed (one node)." }}
}}
node_sets {{
  key: "{ITEM}"
  value {{
    description: "Distinct items of the user's event window."
    features {{ key: "{ITEM_ID}" value {{ dtype: DT_STRING }} }}
  }}
}}
node_sets {{
  key: "{CATEGORY}"
  value {{
    description: "Categories of the window's items."
    features {{ key: "{CATEGORY_NAME}" value {{ dtype: DT_STRING }} }}
  }}
}}
node_sets {{
  key: "{MEMORY}"
  value {{
    description: "Items of the events older than the window: the long-term memory."
    features {{ key: "{ITEM_ID}" value {{ dtype: DT_STRING }} }}
    features {{ key: "{MEMORY_LOG_WEIGHT}" value {{ dtype: DT_FLOAT }} }}
  }}
}}
edge_sets {{
  key: "{EVENT}"
  value {{
    description: "One behaviour event strictly before t."
    source: "{ITEM}"
    target: "{USER}"
    features {{ key: "{EVENT_TYPE}" value {{ dtype: DT_STRING }} }}
    features {{ key: "{EVENT_VALUE}" value {{ dtype: DT_FLOAT }} }}
    features {{ key: "{EVENT_AGE_DAYS}" value {{ dtype: DT_FLOAT }} }}
    features {{ key: "{EVENT_RECENCY}" value {{ dtype: DT_INT64 }} }}
    features {{ key: "{EVENT_SENTIMENT}" value {{ dtype: DT_FLOAT }} }}
  }}
}}
edge_sets {{
  key: "{IN_CATEGORY}"
  value {{
    description: "Item belongs to category."
    source: "{ITEM}"
    target: "{CATEGORY}"
  }}
}}
"""


@dataclasses.dataclass(frozen=True)
class EventWindowConfig:
    """How much of a user's history forms the interest subgraph.

    Attributes:
      max_events: the bounded window: only the most recent events before the
        prediction time are kept, so the cost of an update does not grow with
        the length of a user's history.
    """

    max_events: int = 50


def event_order(event: Event) -> tuple[int, str]:
    """The canonical time order of events (ties broken by event id)."""
    return (event.timestamp, event.event_id)


def select_event_window(events: Iterable[Event], prediction_time: int, max_events: int) -> list[Event]:
    """The user's most recent events strictly before `prediction_time`, oldest first.

    Args:
      events: the user's events, in any order.
      prediction_time: Unix seconds of the prediction point; events at or after
        it are excluded, so nothing from the predicted moment leaks in.
      max_events: the window bound.

    Returns:
      At most `max_events` events, sorted by time.
    """
    return split_history(events, prediction_time, max_events)[1]


def recent_item_ids(events: Iterable[Event], count: int) -> list[str]:
    """The items of the user's latest `count` events, the latest first, padded with "".

    What the served model's `recent_item_ids` input holds (the co-interaction
    channel reads it); `update_interest` returns the same list for the window
    it was given.
    """
    latest = sorted(events, key=event_order)[-count:] if count else []
    return [e.item_id for e in reversed(latest)] + [""] * (count - len(latest))


def split_history(events: Iterable[Event], prediction_time: int, max_events: int) -> tuple[list[Event], list[Event]]:
    """The user's events strictly before `prediction_time`: (remembered, window), both oldest first.

    The window is `select_event_window`; the remembered events are the older
    ones, which go into the long-term memory. Together they are exactly the
    events before the prediction time.
    """
    before = sorted((e for e in events if e.timestamp < prediction_time), key=event_order)
    cut = max(len(before) - max_events, 0)
    return before[:cut], before[cut:]


def memory_log_weights(remembered: Iterable[Event], prediction_time: int) -> dict[str, float]:
    """item_id -> log sum over the item's remembered events of exp(-age_days / tau).

    Computed in float64 with a running log-sum-exp, so very old events
    underflow gracefully instead of becoming log(0).
    """
    weights: dict[str, float] = {}
    for event in remembered:
        log_weight = -(prediction_time - event.timestamp) / SECONDS_PER_DAY / MEMORY_TIME_SCALE_DAYS
        previous = weights.get(event.item_id)
        weights[event.item_id] = log_weight if previous is None else _log_add(previous, log_weight)
    return weights


def _log_add(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _bytes(values: Iterable[str]) -> feature_pb2.Feature:
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[v.encode() for v in values]))


def _int64(values: Iterable[int]) -> feature_pb2.Feature:
    return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=list(values)))


def _float(values: Iterable[float]) -> feature_pb2.Feature:
    return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=list(values)))


def encode_interest_subgraph(
    event_window: Sequence[Event],
    prediction_time: int,
    item_categories: Mapping[str, Sequence[str]],
    review_sentiment: Mapping[str, float] | None = None,
    remembered: Sequence[Event] = (),
) -> example_pb2.Example:
    """Encodes a user's event window as a GraphTensor tf.Example.

    Args:
      event_window: the events of the window (see `select_event_window`), all
        strictly before `prediction_time`.
      prediction_time: Unix seconds of the prediction point.
      item_categories: item_id -> its categories; items not in it simply have
        no category edges (a cold item still gets a node).
      review_sentiment: event_id -> sentiment in [-1, 1] of `review` events'
        text (see `trainer.review_sentiment`); events not in it get 0.
      remembered: events older than the window to fold into the long-term
        memory (`split_history`); all of them for a full
        recomputation, only the newly evicted ones for an incremental update
        on top of a stored memory (the `fold_interest` signature).

    Returns:
      A tf.Example that `tfgnn.parse_example(GraphTensorSpec of
      GRAPH_SCHEMA_PBTXT)` turns into one GraphTensor.

    Raises:
      ValueError: if an event is not strictly before `prediction_time`.
    """
    item_index: dict[str, int] = {}
    for event in event_window:
        if event.timestamp >= prediction_time:
            raise ValueError(
                f"event {event.event_id} at {event.timestamp} is not before the prediction time {prediction_time}"
            )
        item_index.setdefault(event.item_id, len(item_index))
    late = [e.event_id for e in remembered if e.timestamp >= prediction_time]
    if late:
        raise ValueError(f"remembered events {late[:3]} are not before the prediction time {prediction_time}")
    memory = memory_log_weights(remembered, prediction_time)
    category_index: dict[str, int] = {}
    category_sources: list[int] = []
    category_targets: list[int] = []
    for item_id, i in item_index.items():
        for name in dict.fromkeys(item_categories.get(item_id, ())):
            category_sources.append(i)
            category_targets.append(category_index.setdefault(name, len(category_index)))
    n = len(event_window)
    sentiment = review_sentiment or {}
    f: dict[str, feature_pb2.Feature] = {
        f"context/{PREDICTION_TIME}": _int64([prediction_time]),
        f"nodes/{USER}.#size": _int64([1]),
        f"nodes/{ITEM}.#size": _int64([len(item_index)]),
        f"nodes/{ITEM}.{ITEM_ID}": _bytes(item_index),
        f"nodes/{CATEGORY}.#size": _int64([len(category_index)]),
        f"nodes/{CATEGORY}.{CATEGORY_NAME}": _bytes(category_index),
        f"nodes/{MEMORY}.#size": _int64([len(memory)]),
        f"nodes/{MEMORY}.{ITEM_ID}": _bytes(memory),
        f"nodes/{MEMORY}.{MEMORY_LOG_WEIGHT}": _float(memory.values()),
        f"edges/{EVENT}.#size": _int64([n]),
        f"edges/{EVENT}.#source": _int64(item_index[e.item_id] for e in event_window),
        f"edges/{EVENT}.#target": _int64([0] * n),
        f"edges/{EVENT}.{EVENT_TYPE}": _bytes(e.event_type for e in event_window),
        f"edges/{EVENT}.{EVENT_VALUE}": _float(e.value for e in event_window),
        f"edges/{EVENT}.{EVENT_AGE_DAYS}": _float(
            (prediction_time - e.timestamp) / SECONDS_PER_DAY for e in event_window
        ),
        f"edges/{EVENT}.{EVENT_RECENCY}": _int64(range(n - 1, -1, -1)),
        f"edges/{EVENT}.{EVENT_SENTIMENT}": _float(sentiment.get(e.event_id, 0.0) for e in event_window),
        f"edges/{IN_CATEGORY}.#size": _int64([len(category_sources)]),
        f"edges/{IN_CATEGORY}.#source": _int64(category_sources),
        f"edges/{IN_CATEGORY}.#target": _int64(category_targets),
    }
    return example_pb2.Example(features=feature_pb2.Features(feature=f))


def add_training_label(example: example_pb2.Example, user_id: str, label: Event) -> example_pb2.Example:
    """Adds what the user touched at the prediction time (the training target)."""
    features = example.features.feature
    features[LABEL_ITEM_ID].CopyFrom(_bytes([label.item_id]))
    features[META_USER_ID].CopyFrom(_bytes([user_id]))
    features[META_TIMESTAMP].CopyFrom(_int64([label.timestamp]))
    return example
