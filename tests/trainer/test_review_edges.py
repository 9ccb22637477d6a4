"""A review's sentiment reaches the interest state: a bad review turns the user away."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from schemas.catalog import read_catalog  # noqa: E402
from schemas.events import Event  # noqa: E402
from schemas.graph import encode_interest_subgraph  # noqa: E402
from tests.trainer import synthetic  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402
from trainer.graph_dataset import parse_subgraphs, training_dataset  # noqa: E402
from trainer.review_sentiment import ReviewSentiment  # noqa: E402
from trainer.task import build_model  # noqa: E402

# Held out: the model never saw these texts, only their sentiment can carry over.
PROBE_POSITIVE = "Delicious and fresh, really great snack, I love it."
PROBE_NEGATIVE = "Gross, stale and tasteless. I want my money back."


@pytest.fixture(scope="module")
def head(review_sentiment_head: ReviewSentiment) -> ReviewSentiment:
    return review_sentiment_head


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, head: ReviewSentiment) -> dict:
    root = str(tmp_path_factory.mktemp("reviews"))
    events = [e for history in synthetic.review_histories(400) for e in history]
    paths = synthetic.make_review_dataset(root, head.event_sentiments(events))
    entries = read_catalog(paths["catalog"])
    # At a learning rate of 1e-2 several seeds (with one interest and with four) ended up blind
    # to the sentiment (equal margins after either review); at 3e-3, near the trainer's default,
    # every seed tried (1, 3, 5 with four interests; 1, 4 with one) learned it, margins above 2.
    config = TrainerConfig(epochs=30, batch_size=64, num_sampled=8, learning_rate=3e-3, use_text=False)
    tf.keras.utils.set_random_seed(3)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=True, seed=3)
    model.fit(train, epochs=config.epochs, verbose=0)
    return {"model": model, "entries": entries}


def _category_margin(trained: dict, head: ReviewSentiment, review_text: str) -> float:
    """Mean score of the reviewed item's category minus the other category's, after the review."""
    user = "probe"
    window = [
        Event(user, synthetic.review_item_id(c, i), "view", 2_000_000 + 60 * k, 1.0, "", f"p{k}")
        for k, (c, i) in enumerate([("liked", 1), ("other", 2), ("liked", 3), ("other", 4)])
    ]
    window.append(Event(user, synthetic.review_item_id("liked", 5), "review", 2_000_300, 1.0, review_text, "p-r"))
    categories = {e.item.item_id: e.item.categories for e in trained["entries"]}
    example = encode_interest_subgraph(window, 2_000_400, categories, head.event_sentiments(window))
    model = trained["model"]
    scores = model.all_scores(model(parse_subgraphs(tf.constant([example.SerializeToString()]))))[0].numpy()
    index = {item_id: i + 1 for i, item_id in enumerate(model.item_tower.item_ids)}

    def mean_score(category: str) -> float:
        return float(np.mean([scores[index[synthetic.review_item_id(category, i)]] for i in range(10)]))

    return mean_score("liked") - mean_score("other")


def test_review_sentiment_is_the_edge_feature(head: ReviewSentiment) -> None:
    events = [
        Event("u", "i", "review", 1, 1.0, PROBE_NEGATIVE, "neg"),
        Event("u", "i", "review", 2, 1.0, PROBE_POSITIVE, "pos"),
        Event("u", "i", "view", 3, 1.0, "", "view"),
        Event("u", "i", "review", 4, 1.0, "", "no-text"),
    ]
    sentiments = head.event_sentiments(events)
    assert set(sentiments) == {"neg", "pos"}
    assert sentiments["neg"] < 0.0 < sentiments["pos"], sentiments
    example = encode_interest_subgraph(events, 5, {}, sentiments)
    encoded = example.features.feature["edges/event.sentiment"].float_list.value
    np.testing.assert_allclose(encoded, [sentiments["neg"], sentiments["pos"], 0.0, 0.0], rtol=1e-6)


def test_negative_review_lowers_the_reviewed_category(trained: dict, head: ReviewSentiment) -> None:
    after_positive = _category_margin(trained, head, PROBE_POSITIVE)
    after_negative = _category_margin(trained, head, PROBE_NEGATIVE)
    # Same window, same reviewed item, only the text differs: the reviewed item's
    # category must score higher after the positive review than after the negative one.
    assert after_positive > 0.0 > after_negative, (after_positive, after_negative)
