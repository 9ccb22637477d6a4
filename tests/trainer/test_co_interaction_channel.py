"""The co-interaction channel scores what is consumed next to the user's latest items."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from schemas import signatures as s
from schemas.events import Event
from schemas.graph import encode_interest_subgraph, recent_item_ids, select_event_window
from trainer.co_interaction_channel import CoInteractionChannel, choose_weight
from trainer.co_interaction_channel import recent_item_ids as graph_recent_item_ids
from trainer.config import TrainerConfig
from trainer.graph_dataset import parse_subgraphs

VOCABULARY = ["a", "b", "c", "d", "e"]
NEIGHBOURS = {
    "a": (("b", 0.5), ("c", 0.25)),
    "b": (("a", 0.5), ("c", 0.75), ("unknown", 0.9)),
    "c": (("b", 0.75),),
}


def _brute_force(recent: list[list[str]], half_life: float) -> np.ndarray:
    """The channel's sum written out item by item: rows are users, columns vocabulary rows."""
    column = {item_id: i + 1 for i, item_id in enumerate(VOCABULARY)}
    out = np.zeros((len(recent), len(VOCABULARY) + 1), np.float32)
    for user, items in enumerate(recent):
        for r, item_id in enumerate(items):
            for neighbour, strength in NEIGHBOURS.get(item_id, ()):
                if neighbour in column:
                    out[user, column[neighbour]] += 0.5 ** (r / half_life) * strength
    return out


def test_scores_sum_each_recent_items_neighbours_weighted_by_recency() -> None:
    channel = CoInteractionChannel(VOCABULARY, NEIGHBOURS, half_life=2.0, weight=3.0)
    # "a" and "b" both neighbour "c" and each other; padding and unknown items add nothing.
    recent = [["a", "b", "", ""], ["b", "nope", "a", "c"], ["", "", "", ""]]
    rows = tf.constant([[VOCABULARY.index(i) + 1 if i in VOCABULARY else 0 for i in r] for r in recent])
    expected = _brute_force(recent, 2.0)
    np.testing.assert_allclose(channel.unweighted_scores(rows).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(channel.scores(rows).numpy(), 3.0 * expected, rtol=1e-6)
    assert expected[0, 3] == pytest.approx(0.25 + 0.5**0.5 * 0.75)
    assert not expected[2].any()


def test_the_graph_and_the_client_read_the_same_recent_items() -> None:
    # Ties on the timestamp are ordered by event id, as everywhere (event_order).
    history = [
        Event("u", item, "rating", ts, 4.0, "", event_id)
        for item, ts, event_id in (("a", 10, "e1"), ("b", 20, "e3"), ("c", 20, "e2"), ("d", 30, "e4"), ("a", 40, "e5"))
    ]
    short = [history[0]]
    windows = [select_event_window(h, 41, 50) for h in (history, short, [])]
    subgraphs = [encode_interest_subgraph(w, 41, {}).SerializeToString() for w in windows]
    from_graph = graph_recent_item_ids(parse_subgraphs(tf.constant(subgraphs)), 4).numpy().astype(str).tolist()
    from_events = [recent_item_ids(w, 4) for w in windows]
    assert from_graph == from_events == [["a", "d", "b", "c"], ["a", "", "", ""], ["", "", "", ""]]


def test_the_weight_is_the_one_that_ranks_validation_targets_best() -> None:
    # Four points over five items; the model alone ranks each target second, behind item 0.
    model = np.tile(np.array([[3.0, 1.0, 1.0, 1.0, 1.0]]), (4, 1))
    targets = [1, 2, 3, 4]
    for point, target in enumerate(targets):
        model[point, target] = 2.0
    helpful = np.zeros_like(model)
    helpful[np.arange(4), targets] = 1.0
    weight, by_weight = choose_weight(model, helpful, [[]] * 4, targets, grid=(0.0, 0.5, 2.0, 4.0))
    # 0.5 does not lift the targets past item 0 (2.5 < 3); 2 and 4 both do: the smaller is kept.
    assert weight == 2.0
    assert by_weight[0.0] == pytest.approx(1 / np.log2(3))
    assert by_weight[2.0] == by_weight[4.0] == pytest.approx(1.0)
    misleading = np.zeros_like(model)
    misleading[:, 0] = 1.0
    assert choose_weight(model, misleading, [[]] * 4, targets, grid=(0.0, 1.0))[0] == 0.0
    # Seen items never win, whatever the channel says.
    assert choose_weight(model, misleading, [[0]] * 4, targets, grid=(0.0, 1.0))[1][0.0] == pytest.approx(1.0)


def test_no_recent_items_pad_to_the_contract_width_and_the_half_life_must_be_positive() -> None:
    assert s.RECENT_ITEMS >= 1
    assert recent_item_ids([], s.RECENT_ITEMS) == [s.PADDING_ITEM_ID] * s.RECENT_ITEMS
    with pytest.raises(ValueError, match="half_life"):
        TrainerConfig(co_interaction_half_life=0.0)
