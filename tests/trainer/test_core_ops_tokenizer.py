"""The core-ops tokenizer gives keras-nlp's BertTokenizer token ids, without TF Text."""

from __future__ import annotations

import os
import random

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.datasets.movielens import convert_movielens_100k  # noqa: E402
from schemas.events import read_items  # noqa: E402
from trainer.core_ops_tokenizer import CoreOpsBertTokenizer  # noqa: E402

SEQUENCE_LENGTH = 48

# What the catalog and hostile clients may send: accents, case, ligatures,
# full-width forms, CJK, Hangul, emoji, controls, zero-width and non-ASCII
# spaces, overlong words, and more words than fit. Not NUL: TF Text stops
# reading a text at its first NUL, the core-ops tokenizer reads on (a NUL is
# a word boundary there).
HOSTILE_TEXTS = (
    "",
    "   ",
    "Amélie (2001). Comedy, Romance",
    "ÉCOLE naïve café Straße İstanbul ΣΊΣΥΦΟΣ ǅ",
    "ﬁne Ⅷ ＡＢＣ！ ⑴",
    "日本語のテキスト 中文 豈 한국어 텍스트",
    "emoji 😀 ok\u200bzero\u200dwidth\u2065",
    "tab\there\nnew\rline\x01soh\x7fdel a\u00a0b",
    "Ünïcödé—dash…ellipsis «quotes» don't stop-believing",
    "x" * 120,
    "supercalifragilisticexpialidocious",
    "é" * 60,
    "word " * 80,
)


@pytest.fixture(scope="module")
def tokenizers(bert_dir: str) -> tuple[CoreOpsBertTokenizer, keras_nlp.models.BertPreprocessor]:
    vocab_path = os.path.join(bert_dir, "vocab.txt")
    with open(vocab_path, encoding="utf-8") as f:
        vocabulary = [line.rstrip("\n") for line in f]
    # As trainer.text_encoder.ItemTextEncoder tokenizes.
    reference = keras_nlp.models.BertPreprocessor(
        tokenizer=keras_nlp.models.BertTokenizer(vocabulary=vocab_path, lowercase=True, strip_accents=True),
        sequence_length=SEQUENCE_LENGTH,
    )
    return CoreOpsBertTokenizer(vocabulary, SEQUENCE_LENGTH), reference


def _differences(tokenizers: tuple, texts: list[str]) -> list[tuple[str, list[int], list[int]]]:
    ours, reference = tokenizers
    ids, mask = ours(tf.constant(texts))
    expected = reference(tf.constant(texts))
    ids, mask = ids.numpy(), mask.numpy()
    assert ids.shape[1] <= SEQUENCE_LENGTH
    found = []
    for i, text in enumerate(texts):
        got = ids[i][mask[i]].tolist()
        want = expected["token_ids"].numpy()[i][expected["padding_mask"].numpy()[i]].tolist()
        if got != want:
            found.append((text, got, want))
    return found


def test_movielens_item_texts_tokenize_as_keras_nlp_does(tokenizers: tuple, movielens_dir: str, tmp_path) -> None:
    _, items_path = convert_movielens_100k(movielens_dir, str(tmp_path))
    items, rejected = read_items(items_path)
    assert rejected == []
    texts = [item.text for item in items]
    assert len(texts) == 1682
    assert _differences(tokenizers, texts) == []


def test_hostile_texts_tokenize_as_keras_nlp_does(tokenizers: tuple) -> None:
    ours, _ = tokenizers
    assert _differences(tokenizers, list(HOSTILE_TEXTS)) == []
    ids, mask = ours(tf.constant(["word " * 80, ""]))
    # Truncated to the sequence length with [SEP] kept; an empty text is [CLS] [SEP].
    assert ids.shape == (2, SEQUENCE_LENGTH)
    assert ids[0, -1] == ours.end_id and ids[1, 1] == ours.end_id
    assert np.asarray(mask).sum(axis=1).tolist() == [SEQUENCE_LENGTH, 2]
    # A megabyte-long word is one [UNK], without a look-up grid as wide as the word.
    ids, mask = ours(tf.constant(["é" * 500_000 + " ok"]))
    assert ids.numpy()[0].tolist() == [ours.start_id, ours.unknown_id, ours.vocabulary.index("ok"), ours.end_id]


def test_random_unicode_tokenizes_as_keras_nlp_does(tokenizers: tuple) -> None:
    """A seeded fuzz over Latin, Greek, Cyrillic, Indic, CJK, symbols, marks and emoji.

    Left out: half-width Hangul jamo (U+FFA0-FFDC), which TF Text composes
    across characters; the core-ops table maps one character at a time.
    """
    rng = random.Random(7)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF), (0x900, 0x97F), (0x2000, 0x24FF)]
    blocks += [(0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFB00, 0xFB4F), (0xFF00, 0xFF9F)]
    blocks += [(0x1F300, 0x1F6FF), (0x1D400, 0x1D7FF)]
    texts = []
    for _ in range(1500):
        chars = []
        for _ in range(rng.randint(0, 30)):
            low, high = rng.choice(blocks) if rng.random() < 0.6 else (0x61, 0x7A)
            chars.append(chr(rng.randint(low, high)) + (" " if rng.random() < 0.15 else ""))
        texts.append("".join(chars))
    assert _differences(tokenizers, texts) == []


def test_vocabulary_without_special_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        CoreOpsBertTokenizer(["[PAD]", "[CLS]", "[SEP]", "a"], SEQUENCE_LENGTH)
