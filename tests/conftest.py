"""Shared fixtures: the real bundled assets and small slices of real data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402

from pipeline.assets import AMAZON_FINE_FOOD, MINILM, MOVIELENS_100K, asset_dir  # noqa: E402
from tests.built_once import built_once  # noqa: E402
from tests.trainer.fine_food import TEST_LIMIT, TRAIN_LIMIT  # noqa: E402


def _require(path: str) -> str:
    if not os.path.isdir(path):
        pytest.fail(f"{path} is missing: run `make setup` (it fetches the bundled data and weights)")
    return path


@pytest.fixture(scope="session")
def movielens_dir() -> str:
    return _require(asset_dir(MOVIELENS_100K))


@pytest.fixture(scope="session")
def bert_dir() -> str:
    return _require(asset_dir(MINILM))


@pytest.fixture(scope="session")
def movielens_slice(tmp_path_factory: pytest.TempPathFactory, movielens_dir: str) -> dict[str, str]:
    """The first 30 users of MovieLens-100k in the project's format, plus three bad rows."""
    from pipeline.datasets.movielens import convert_movielens_100k

    root = tmp_path_factory.mktemp("movielens_slice")
    events_path, items_path = convert_movielens_100k(movielens_dir, str(root / "full"))
    with open(events_path, newline="") as f:
        rows = list(csv.DictReader(f))
    users = set(sorted({r["user_id"] for r in rows}, key=int)[:30])
    events_dir = root / "events"
    events_dir.mkdir()
    with open(events_dir / "events.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["user_id"] in users)
        good_rows = sum(1 for r in rows if r["user_id"] in users)
        f.write("1,50,like,881250949,,,bad-type\n")
        f.write(",50,rating,881250949,3,,bad-user\n")
        f.write("1,50,rating,yesterday,3,,bad-time\n")
    return {
        "events_dir": str(events_dir),
        "items_path": items_path,
        "good_rows": str(good_rows),
        "first_bad_line": str(good_rows + 2),
    }


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
    from trainer import review_sentiment as rs

    def build(root: Path) -> dict:
        cache_dir = str(root / "cache")
        result = rs.train_review_sentiment(
            os.path.dirname(fine_food_dir),
            str(root / "out"),
            seed=0,
            train_limit=TRAIN_LIMIT,
            test_limit=TEST_LIMIT,
            cache_dir=cache_dir,
        )
        return {"result": result, "cache_dir": cache_dir}

    run = built_once(tmp_path_factory, "review_sentiment", build)
    train_texts, train_labels = rs._load_split(fine_food_dir, "train", TRAIN_LIMIT)
    test_texts, test_labels = rs._load_split(fine_food_dir, "test", TEST_LIMIT)
    return {**run, "train": (train_texts, train_labels), "test": (test_texts, test_labels)}


@pytest.fixture(scope="session")
def review_sentiment_head(review_sentiment_run: dict, bert_dir: str):  # noqa: ANN201
    """The trained review sentiment head, loaded as the pipeline and the client load it."""
    from trainer.review_sentiment import ReviewSentiment

    return ReviewSentiment.load(review_sentiment_run["result"]["head_dir"], bert_dir=bert_dir)
