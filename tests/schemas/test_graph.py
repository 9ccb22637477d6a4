from __future__ import annotations

import pytest
import tensorflow as tf

from schemas import graph as g
from schemas.events import Event
from trainer.graph_dataset import parse_subgraphs


def _event(item: str, ts: int, event_type: str = "rating", value: float = 4.0) -> Event:
    return Event("u", item, event_type, ts, value, "", f"{item}@{ts}")


def test_window_keeps_only_events_strictly_before_and_bounds_length() -> None:
    events = [_event("a", 10), _event("b", 20), _event("c", 30), _event("d", 30), _event("e", 40)]
    window = g.select_event_window(reversed(events), 30, max_events=50)
    assert [e.item_id for e in window] == ["a", "b"]
    assert [e.item_id for e in g.select_event_window(events, 41, max_events=2)] == ["d", "e"]
    assert g.select_event_window(events, 10, max_events=5) == []


def test_encoded_subgraph_parses_with_tfgnn_into_the_documented_graph() -> None:
    window = [_event("i1", 0), _event("i2", 43_200, "view", 1.0), _event("i1", 86_400, "purchase", 1.0)]
    example = g.encode_interest_subgraph(window, 172_800, {"i1": ["A", "B"], "i2": ["B"]})
    empty = g.encode_interest_subgraph([], 5, {})
    graph = parse_subgraphs(tf.constant([example.SerializeToString(), empty.SerializeToString()]))
    assert graph.node_sets[g.USER].sizes.numpy().tolist() == [1, 1]
    assert graph.node_sets[g.ITEM][g.ITEM_ID].numpy().tolist() == [b"i1", b"i2"]
    assert graph.node_sets[g.CATEGORY][g.CATEGORY_NAME].numpy().tolist() == [b"A", b"B"]
    events = graph.edge_sets[g.EVENT]
    assert events.adjacency.source.numpy().tolist() == [0, 1, 0]
    assert events.adjacency.target.numpy().tolist() == [0, 0, 0]
    assert events[g.EVENT_TYPE].numpy().tolist() == [b"rating", b"view", b"purchase"]
    assert events[g.EVENT_AGE_DAYS].numpy().tolist() == pytest.approx([2.0, 1.5, 1.0])
    assert events[g.EVENT_RECENCY].numpy().tolist() == [2, 1, 0]
    in_category = graph.edge_sets[g.IN_CATEGORY].adjacency
    assert list(zip(in_category.source.numpy(), in_category.target.numpy(), strict=False)) == [(0, 0), (0, 1), (1, 1)]
    assert graph.context[g.PREDICTION_TIME].numpy().tolist() == [172_800, 5]


def test_encoder_refuses_events_at_or_after_the_prediction_time() -> None:
    with pytest.raises(ValueError, match="not before the prediction time"):
        g.encode_interest_subgraph([_event("i1", 100)], 100, {})
