"""The GPU profile's text view: BERT's top layers trained with the recommender, in mixed precision.

It runs here on CPU (slowly, on a small catalog): the profiles share their code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from schemas import signatures as s
from schemas.catalog import read_catalog
from tests.trainer import synthetic
from trainer.config import TrainerConfig
from trainer.fine_tuned_text import FineTunedText
from trainer.task import TrainingInputs, train
from trainer.text_encoder import ItemTextEncoder

TEXTS = ["", "Toy Story (1995) Animation Children's Comedy", "GoldenEye (1995) Action Adventure Thriller", "a"]


@pytest.mark.parametrize(
    ("layers", "mixed_precision", "tolerance"), [(1, False, 1e-5), (6, False, 1e-5), (2, True, 3e-3)]
)
def test_untrained_top_layers_reproduce_the_frozen_encoder(
    bert_dir: str, layers: int, mixed_precision: bool, tolerance: float
) -> None:
    """Splitting BERT into cached lower layers and trainable top layers changes nothing until training."""
    frozen = ItemTextEncoder(bert_dir, sequence_length=48).encode(TEXTS)
    text = FineTunedText(TEXTS, bert_dir, layers, 48, mixed_precision=mixed_precision)
    vectors = text(tf.constant([3, 2, 1, 0])).numpy()[::-1]
    np.testing.assert_allclose(vectors[1:], frozen[1:], atol=tolerance)
    assert not vectors[0].any(), "the unknown item's row must be zero"
    assert len(text.trainable_weights) == 16 * layers
    assert {layer.compute_dtype for layer in text.top_layers} == {"float16" if mixed_precision else "float32"}
    assert text.get_config()["finetune_layers"] == layers


@pytest.fixture(scope="module")
def gpu_profile_run(tmp_path_factory: pytest.TempPathFactory, bert_dir: str) -> dict:
    root = str(tmp_path_factory.mktemp("fine_tuned"))
    paths = synthetic.make_dataset(root, num_users=120)
    inputs = TrainingInputs(
        train_files=[paths["train"]],
        eval_files=[paths["eval"]],
        catalog_file=paths["catalog"],
        bert_dir=bert_dir,
        cache_dir=os.path.join(root, "cache"),
        serving_model_dir=os.path.join(root, "export", "1"),
        run_dir=os.path.join(root, "run"),
    )
    gpu = TrainerConfig.gpu()
    assert gpu.text_finetune_layers == 2 and gpu.mixed_precision
    # The GPU profile's text settings, with sizes for a 2-core CPU and a 31-item catalog.
    config = dataclasses.replace(gpu, epochs=3, batch_size=64, num_sampled=8, learning_rate=5e-3)
    result = train(inputs, config)
    return {"paths": paths, "inputs": inputs, "result": result}


def test_gpu_profile_trains_bert_top_layers_and_exports_a_tensorflow_only_model(
    gpu_profile_run: dict, bert_dir: str
) -> None:
    result = gpu_profile_run["result"]
    losses = result["history"]["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert result["config"]["text_finetune_layers"] == 2
    export_dir = gpu_profile_run["inputs"].serving_model_dir
    loaded = tf.saved_model.load(export_dir)
    # The exported text vectors come from the trained top layers: each still
    # close to its pretrained vector (BERT's own learning rate keeps it from
    # collapsing), none equal to it (gradients reached BERT).
    table = next(v for v in loaded.variables if v.name.startswith("fine_tuned_text_table")).numpy()
    texts = [e.item.text for e in read_catalog(gpu_profile_run["paths"]["catalog"])]
    frozen = ItemTextEncoder(bert_dir, sequence_length=48).encode(texts)
    similarity = table[1:] @ frozen.T
    nearest = similarity.argmax(axis=1)
    assert sorted(nearest) == list(range(len(texts))), "every item keeps its own text's place"
    moved = 1.0 - similarity.max(axis=1)
    print(f"cosine distance to the pretrained vector: min {moved.min():.2e}, max {moved.max():.2e}")
    assert moved.max() < 0.2 and moved.min() > 1e-6, moved

    subgraph = next(iter(tf.data.TFRecordDataset([gpu_profile_run["paths"]["test"]], "GZIP"))).numpy()
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({export_dir!r})
        updated = loaded.signatures["{s.UPDATE_INTEREST}"]({s.SUBGRAPH}=tf.constant([{subgraph!r}]))
        state = updated["{s.INTEREST_STATE}"]
        rec = loaded.signatures["{s.RECOMMEND}"](
            {s.INTEREST_STATE}=state,
            {s.RECENT_ITEM_IDS}=updated["{s.RECENT_ITEM_IDS}"],
            {s.EXCLUDE_ITEM_IDS}=tf.constant([[""]]), {s.K}=tf.constant([40], tf.int32)
        )
        print(json.dumps({{
            "items": [i for i in rec["{s.ITEM_IDS}"].numpy().astype(str).tolist()[0] if i],
            "finite": bool(tf.reduce_all(tf.math.is_finite(state))),
            "foreign": sorted(m for m in ("tensorflow_gnn", "keras_nlp", "tf_keras") if m in sys.modules),
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["foreign"] == [] and answer["finite"]
    # Every catalog item is rankable, the cold one (text and category only) included.
    assert len(answer["items"]) == synthetic.NUM_ITEMS + 1 and synthetic.COLD_ITEM in answer["items"]


def test_gpu_profile_encodes_new_items_with_its_fine_tuned_bert(gpu_profile_run: dict) -> None:
    """`encode_items` runs the frozen lower layers and the trained top layers, as the exported table did.

    The cold item's text is sent with its category folded into the title: the
    same text, and no category view, so the vector is the projected text alone.
    """
    entries = read_catalog(gpu_profile_run["paths"]["catalog"])
    loaded = tf.saved_model.load(gpu_profile_run["inputs"].serving_model_dir)
    (table,) = (v.numpy() for v in loaded.variables if v.name.startswith("fine_tuned_text_table"))
    # The text projection is the one [BERT width, interest width] weight.
    (projection,) = (v.numpy() for v in loaded.variables if tuple(v.shape) == (table.shape[1], s.INTEREST_DIM))
    vocabulary = [e.item.item_id for e in sorted(entries, key=lambda e: (-e.train_count, e.item.item_id))]
    cold = next(e.item for e in entries if e.item.item_id == synthetic.COLD_ITEM)
    out = loaded.signatures[s.ENCODE_ITEMS](
        **{
            s.TITLES: tf.constant([cold.text]),
            s.DESCRIPTIONS: tf.constant([""]),
            s.ITEM_CATEGORIES: tf.constant([[""]]),
        }
    )
    expected = table[vocabulary.index(cold.item_id) + 1] @ projection
    np.testing.assert_allclose(out[s.ITEM_VECTORS].numpy()[0], expected, atol=2e-3)
