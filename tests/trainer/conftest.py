"""Fixtures shared by the trainer tests: one review sentiment head on real reviews."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402

from pipeline.assets import AMAZON_FINE_FOOD, asset_dir  # noqa: E402
from tests.trainer.fine_food import TEST_LIMIT, TRAIN_LIMIT  # noqa: E402
from trainer import review_sentiment as rs  # noqa: E402


@pytest.fixture(scope="session")
def fine_food_dir() -> str:
    path = asset_dir(AMAZON_FINE_FOOD)
    missing = [f for f in AMAZON_FINE_FOOD.expected_files if not os.path.isfile(os.path.join(path, f))]
    if missing:
        pytest.fail(f"{path} lacks {missing}: run `make setup` (it fetches the bundled data and weights)")
    return path


@pytest.fixture(scope="session")
def review_sentiment_run(tmp_path_factory: pytest.TempPathFactory, fine_food_dir: str, bert_dir: str) -> dict:
    """One training run of the sentiment head on the review subsets; its result, folders and data."""
    root = tmp_path_factory.mktemp("review_sentiment")
    cache_dir = str(root / "cache")
    result = rs.train_review_sentiment(
        os.path.dirname(fine_food_dir),
        str(root / "out"),
        seed=0,
        train_limit=TRAIN_LIMIT,
        test_limit=TEST_LIMIT,
        cache_dir=cache_dir,
    )
    train_texts, train_labels = rs._load_split(fine_food_dir, "train", TRAIN_LIMIT)
    test_texts, test_labels = rs._load_split(fine_food_dir, "test", TEST_LIMIT)
    return {
        "result": result,
        "root": root,
        "cache_dir": cache_dir,
        "train": (train_texts, train_labels),
        "test": (test_texts, test_labels),
    }
