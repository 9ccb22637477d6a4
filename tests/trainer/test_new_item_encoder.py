"""The `encode_items` signature: items added after training, placed by text and categories alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

from schemas import signatures as s  # noqa: E402
from schemas.catalog import read_catalog  # noqa: E402
from schemas.events import Item  # noqa: E402
from tests.trainer import synthetic  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402
from trainer.export import WARMUP_FILE, export_serving_model  # noqa: E402
from trainer.graph_dataset import training_dataset  # noqa: E402
from trainer.new_item_encoder import NewItemEncoder, new_item_bias  # noqa: E402
from trainer.task import build_model  # noqa: E402
from trainer.text_encoder import ItemTextEncoder  # noqa: E402

NEW_ITEM = Item("brand-new", "Crème brûlée kit (2026)", "Everything for six ramekins.", ("cat1", "not-a-category"))
NEW_BIAS = -1.5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, bert_dir: str) -> dict:
    root = str(tmp_path_factory.mktemp("new_items"))
    paths = synthetic.make_dataset(root, num_users=40)
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(epochs=1, batch_size=32, num_sampled=8, event_dim=8, category_dim=8)
    text_encoder = ItemTextEncoder(bert_dir, sequence_length=config.text_sequence_length)
    text_vectors = text_encoder.encode([e.item.text for e in entries])
    tf.keras.utils.set_random_seed(1)
    model = build_model(entries, text_vectors, config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=False)
    model(next(iter(train))[0])
    model.fit(train, epochs=1, verbose=0)
    export_dir = os.path.join(root, "export", "1")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(2)]
    new_items = NewItemEncoder(model.item_tower, text_encoder, NEW_BIAS)
    export_serving_model(model, export_dir, warmup, new_items=new_items)
    return {"model": model, "entries": entries, "text_encoder": text_encoder, "export_dir": export_dir}


def _encode_with_only_tensorflow(export_dir: str, items: list[Item]) -> dict:
    rows = [[i.title, i.description, list(i.categories)] for i in items]
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        rows = json.loads({json.dumps(json.dumps(rows))})
        width = max(len(r[2]) for r in rows)
        loaded = tf.saved_model.load({export_dir!r})
        out = loaded.signatures["{s.ENCODE_ITEMS}"](
            {s.TITLES}=tf.constant([r[0] for r in rows]),
            {s.DESCRIPTIONS}=tf.constant([r[1] for r in rows]),
            {s.ITEM_CATEGORIES}=tf.constant([r[2] + [""] * (width - len(r[2])) for r in rows]),
        )
        print(json.dumps({{
            "signatures": sorted(loaded.signatures.keys()),
            "vectors": out["{s.ITEM_VECTORS}"].numpy().tolist(),
            "bias": out["{s.ITEM_BIAS}"].numpy().tolist(),
            "foreign": sorted(m for m in ("tensorflow_gnn", "keras_nlp", "tf_keras", "tensorflow_text")
                              if m in sys.modules),
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _text_and_category_views(model: object, text_vector: np.ndarray, categories: list[str]) -> np.ndarray:
    """What the item tower makes of a text vector and known categories (no id, no neighbours)."""
    tower = model.item_tower
    rows = [tower.category_names.index(c) + 1 for c in categories if c in tower.category_names]
    embeddings = tower.category_embedding.embeddings.numpy()
    category_vector = embeddings[rows].mean(axis=0) if rows else np.zeros(embeddings.shape[1], np.float32)
    vector = tower.category_projection(category_vector[None]) + tower.text_projection(text_vector[None])
    return vector.numpy()[0]


def test_encode_items_reads_text_and_categories_as_training_did(exported: dict) -> None:
    """Catalog items land where their text and category views put them; a new one is read by the same BERT."""
    model, entries = exported["model"], exported["entries"]
    tower = model.item_tower
    known = [e.item for e in entries[:3]]
    empty = Item("bare", "", "", ())
    r = _encode_with_only_tensorflow(exported["export_dir"], [*known, NEW_ITEM, empty])
    assert r["foreign"] == []
    assert s.ENCODE_ITEMS in r["signatures"]
    vectors = np.array(r["vectors"])
    assert vectors.shape == (5, s.INTEREST_DIM)
    for row, item in enumerate(known):
        text_vector = tower.text_vectors[tower.item_ids.index(item.item_id)]
        expected = _text_and_category_views(model, text_vector, list(item.categories))
        np.testing.assert_allclose(vectors[row], expected, atol=1e-4)
    # The new item: its text through BERT in this process, its unknown category left out.
    new_text = exported["text_encoder"].encode([NEW_ITEM.text])[0]
    np.testing.assert_allclose(vectors[3], _text_and_category_views(model, new_text, ["cat1"]), atol=1e-4)
    bare_text = exported["text_encoder"].encode([""])[0]
    np.testing.assert_allclose(vectors[4], _text_and_category_views(model, bare_text, []), atol=1e-4)
    assert r["bias"] == [NEW_BIAS] * 5


def test_warmup_covers_encode_items(exported: dict) -> None:
    path = os.path.join(exported["export_dir"], WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(x.numpy()) for x in tf.data.TFRecordDataset([path])]
    assert sorted(log.predict_log.request.model_spec.signature_name for log in logs) == sorted(s.SIGNATURES)


def test_unknown_categories_and_padding_are_ignored(exported: dict) -> None:
    model = exported["model"]
    encoder = NewItemEncoder(model.item_tower, exported["text_encoder"], NEW_BIAS)
    vectors, _ = encoder(
        tf.constant(["T", "T"]), tf.constant(["", ""]), tf.constant([["cat1", "", ""], ["cat1", "", "zzz"]])
    )
    # The text differs ("T. cat1" vs "T. cat1, zzz"); the category view must not.
    texts = encoder.item_texts(
        tf.constant(["T", "T"]), tf.constant(["", ""]), tf.constant([["cat1", ""], ["cat1", "zzz"]])
    )
    assert texts.numpy().astype(str).tolist() == [
        Item("a", "T", "", ("cat1",)).text,
        Item("b", "T", "", ("cat1", "zzz")).text,
    ]
    text_view = model.item_tower.text_projection(encoder.text_vectors(texts)).numpy()
    category_view = vectors.numpy() - text_view
    np.testing.assert_allclose(category_view[0], category_view[1], atol=1e-5)
    assert np.abs(category_view[0]).max() > 0


def test_a_text_model_needs_its_bert(exported: dict) -> None:
    with pytest.raises(ValueError, match="BERT"):
        NewItemEncoder(exported["model"].item_tower, None, 0.0)


def test_new_item_bias_is_that_of_barely_known_items_plus_the_offset() -> None:
    bias = np.array([2.0, 1.0, -1.0, -3.0], np.float32)
    assert new_item_bias(bias, [40, 9, 4, 0], offset=0.5) == pytest.approx(-2.0 + 0.5)
    # Every item well known: the mean of all.
    assert new_item_bias(bias, [40, 30, 20, 10]) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="training count"):
        new_item_bias(bias, [1, 2])
