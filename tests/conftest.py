"""Shared fixtures: the real bundled assets and small slices of real data."""

from __future__ import annotations

import csv
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402

from pipeline.assets import MINILM, MOVIELENS_100K, asset_dir  # noqa: E402


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
