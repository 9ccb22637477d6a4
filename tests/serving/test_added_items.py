"""Items added after training, through the client and a real model server: encoded, stored, recommended."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from schemas.catalog import read_catalog
from schemas.events import Event, Item
from serving.client import InterestClient
from serving.interest_store import InterestStore, ItemEncoding, SqliteInterestStore
from tests.serving.backends import StoreSpec
from tests.serving.served_model import MODEL_NAME, ModelServer
from tests.serving.test_client import _cli

NEW_ITEMS = [
    Item("new-0", "Item item3, the sequel", "Much like item3.", ("cat0",)),
    Item("new-1", "Something else entirely", "", ("cat2", "a-category-the-model-never-saw")),
]


def _views(user: str, items: list[str]) -> list[Event]:
    return [Event(user, item, "view", 1_000_000 + 3600 * k, 1.0, "", f"{user}-{k}") for k, item in enumerate(items)]


@pytest.fixture
def client(model_server: ModelServer, store: InterestStore, tiny_model: dict[str, str]) -> InterestClient:
    store.upsert_items(entry.item for entry in read_catalog(tiny_model["catalog"]))
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        yield client


def test_added_items_are_encoded_scored_and_recommended(client: InterestClient, store: InterestStore) -> None:
    client.record(_views("shopper", ["item3", "item6", "item9"]))
    result = client.add_items([*NEW_ITEMS, {"title": "no id"}, Item("item2", "Item item2", "", ("cat2",))])
    # The model was trained on item2: stored, not encoded. The record without an id is rejected, with its place.
    assert (result.stored, result.encoded, result.model_version) == (3, ["new-0", "new-1"], 1)
    assert [(r.line, r.reason) for r in result.rejected] == [(3, "missing required field: item_id")]
    encodings = store.item_encodings(1)
    assert encodings["item2"] is None and encodings["new-0"].vector.shape == (64,)

    state = client.interest_state("shopper").state
    scores = client.score("shopper", ["new-0", "new-1", "item2", "nope"])
    for item_id in ("new-0", "new-1"):
        encoding = encodings[item_id]
        assert scores[item_id] == pytest.approx(float((state @ encoding.vector).max() + encoding.bias), rel=1e-5)
    assert np.isfinite(scores["item2"]) and scores["nope"] == float("-inf")

    everything = client.recommend("shopper", k=100)
    ids = [r.item_id for r in everything]
    assert {"new-0", "new-1"} <= set(ids) and not {"item3", "item6", "item9"} & set(ids)
    assert [r.score for r in everything] == sorted((r.score for r in everything), reverse=True)
    assert {r.item_id: r.score for r in everything}["new-0"] == pytest.approx(scores["new-0"], rel=1e-5)
    # Top-k is the head of the merged ranking; an added item the user touched is excluded like any other.
    assert [r.item_id for r in client.recommend("shopper", k=5)] == ids[:5]
    client.record(_views("shopper", ["item3", "item6", "item9", "new-0"]))
    assert "new-0" not in [r.item_id for r in client.recommend("shopper", k=100)]


def test_the_new_items_shelf_ranks_only_the_added_items(client: InterestClient) -> None:
    client.record(_views("shopper", ["item3", "item6", "item9"]))
    assert client.recommend_new_items("shopper") == []
    client.add_items([*NEW_ITEMS, Item("item2", "Item item2", "", ("cat2",))])
    shelf = client.recommend_new_items("shopper", k=10)
    # Only the two items the model was not trained on (item2 it knows), with the scores the full ranking gives them.
    full = {r.item_id: r.score for r in client.recommend("shopper", k=100)}
    assert sorted(r.item_id for r in shelf) == ["new-0", "new-1"]
    assert [r.score for r in shelf] == sorted((r.score for r in shelf), reverse=True)
    for r in shelf:
        assert r.score == pytest.approx(full[r.item_id], rel=1e-5)
    assert [r.item_id for r in client.recommend_new_items("shopper", k=1)] == [shelf[0].item_id]
    # The caller's exclusions and the user's own items are left out, as in `recommend`.
    assert [r.item_id for r in client.recommend_new_items("shopper", exclude=[shelf[0].item_id])] == [shelf[1].item_id]
    client.record(_views("shopper", ["item3", "item6", "item9", "new-1"]))
    assert [r.item_id for r in client.recommend_new_items("shopper")] == ["new-0"]
    with pytest.raises(TypeError, match="not one id"):
        client.recommend_new_items("shopper", exclude="new-0")
    with pytest.raises(ValueError, match="k must be positive"):
        client.recommend_new_items("shopper", k=0)


def test_a_new_model_version_encodes_added_items_again(tiny_model: dict[str, str], tmp_path: Path) -> None:
    # One backend: both keep encodings per version alike (test_interest_store); this is about the client.
    store = SqliteInterestStore(str(tmp_path / "state.sqlite"))
    models = tmp_path / "models"
    shutil.copytree(Path(tiny_model["models_dir"]) / "1", models / "1")
    server = ModelServer(str(models), tmp_path / "server.log")
    server.start()
    try:
        with InterestClient(server.target, store, MODEL_NAME) as client:
            assert client.add_items(NEW_ITEMS[:1]).model_version == 1
    finally:
        server.stop()
    # Version 2 (here the same weights) is pushed; the next recommendation encodes the item for it.
    shutil.copytree(models / "1", models / "2")
    server.start()
    try:
        with InterestClient(server.target, store, MODEL_NAME) as client:
            assert store.item_encodings(2) == {}
            assert "new-0" in [r.item_id for r in client.recommend("newcomer", k=100)]
    finally:
        server.stop()
    np.testing.assert_allclose(store.item_encodings(2)["new-0"].vector, store.item_encodings(1)["new-0"].vector)
    store.close()


def test_items_added_by_another_client_are_ranked_on_the_next_call(
    client: InterestClient, model_server: ModelServer, open_test_store
) -> None:
    """A client keeps the added items it read until the store's revision moves, so it never misses a new one."""
    client.record(_views("shopper", ["item3", "item6"]))
    client.add_items(NEW_ITEMS[:1])
    assert "new-0" in [r.item_id for r in client.recommend("shopper", k=100)]
    with InterestClient(model_server.target, open_test_store(), MODEL_NAME) as other:
        other.add_items(NEW_ITEMS[1:])
    ids = [r.item_id for r in client.recommend("shopper", k=100)]
    assert {"new-0", "new-1"} <= set(ids)
    assert np.isfinite(client.score("shopper", ["new-1"])["new-1"])


class _CountingEncodingReads(SqliteInterestStore):
    """The SQLite store, counting how often the added items' encodings are read."""

    encoding_reads = 0

    def item_encodings(self, model_version: int) -> dict[str, ItemEncoding | None]:
        self.encoding_reads += 1
        return super().item_encodings(model_version)


def test_recommend_reads_the_encodings_again_only_after_a_write(
    model_server: ModelServer, tiny_model: dict[str, str], tmp_path: Path
) -> None:
    store = _CountingEncodingReads(str(tmp_path / "state.sqlite"))
    store.upsert_items(entry.item for entry in read_catalog(tiny_model["catalog"]))
    with InterestClient(model_server.target, store, MODEL_NAME) as client:
        client.add_items(NEW_ITEMS[:1])
        first = client.recommend("newcomer", k=100)
        reads = store.encoding_reads
        assert client.recommend("newcomer", k=100) == first and "new-0" in [r.item_id for r in first]
        assert store.encoding_reads == reads, "nothing was written: the client's copy is current"
        client.add_items(NEW_ITEMS[1:])
        assert "new-1" in [r.item_id for r in client.recommend("newcomer", k=100)]
        assert store.encoding_reads > reads
    store.close()


def test_cli_add_items_then_recommend(
    client: InterestClient, model_server: ModelServer, store_spec: StoreSpec, tmp_path: Path, capsys
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"item_id": "cli-new", "title": "Brand new (2026)", "categories": "cat1|cat2"}\n'
        '{"item_id": "cli-bad", "categories": {"not": "a list"}}\n'
    )
    where = ["--target", model_server.target, "--model-name", MODEL_NAME, "--store", store_spec.url]
    where += ["--redis-prefix", store_spec.prefix]
    code, out = _cli(["add-items", str(items), *where], capsys)
    assert code == 0
    assert json.loads(out) == {"stored": 1, "encoded": 1, "rejected": 1, "model_version": 1}
    code, out = _cli(["recommend", "--user", "cli-user", "--k", "100", *where], capsys)
    assert code == 0 and "cli-new" in out and "Brand new (2026)" in out
    code, out = _cli(["recommend", "--user", "cli-user", "--new-items", *where], capsys)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["1.", "cli-new"] and len(out.splitlines()) == 1
