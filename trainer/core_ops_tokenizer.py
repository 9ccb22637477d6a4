"""BERT's uncased WordPiece tokenization in core TensorFlow ops, for the SavedModel.

The trainer tokenizes item text with keras-nlp's `BertTokenizer`, whose ops
come from TF Text: a SavedModel holding them does not load with only
`tensorflow` imported, and TF Serving's embedded TF Text (2.12) lacks some
(STACK.md). The export's `encode_items` signature must read new items' text
anyway, so this module redoes keras-nlp's pipeline with ops every TensorFlow
has, and the tests hold the two to the same token ids:

1. CJK ideographs become words of their own; the text is NFD-decomposed and
   combining marks (Mn) are dropped (accents stripped);
2. whitespace, control (Cc) and format (Cf) characters split words;
   punctuation (ASCII symbols and Unicode P*) and CJK ideographs are words
   of their own;
3. each word is case-folded (NFKC_Casefold);
4. greedy longest-match-first WordPiece, "##" marking a word's continuation,
   `[UNK]` for a word with an unmatched rest or over 100 bytes;
5. `[CLS]` + the first `sequence_length - 2` pieces + `[SEP]`.

Steps 1-3 act on single characters, except for composition across
characters, which text reaching them rarely needs (combining marks are
dropped before case folding). So they are one table from code point to
replacement, built here with Python's `unicodedata`; word boundaries in it
are NUL characters (a NUL in the input is a control character: a boundary).
Step 4 is a `tf.while_loop` of vocabulary look-ups.

Known differences from TF Text, both outside what catalogs hold: TF Text
stops reading a text at its first NUL (here a NUL is a word boundary), and
it composes half-width Hangul jamo across characters.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import tensorflow as tf

WORD_BOUNDARY = "\x00"
UNKNOWN_TOKEN = "[UNK]"
START_TOKEN = "[CLS]"
END_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
CONTINUATION_PREFIX = "##"
MAX_BYTES_PER_WORD = 100

# keras-nlp's CJK_REGEX ranges (inclusive).
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Default-ignorable code points that are neither Cf (a boundary already) nor
# Mn (stripped already), unassigned ones included; NFKC_Casefold removes them.
_IGNORABLE = frozenset(
    [0x115F, 0x1160, 0x3164, 0xFFA0]
    + [c for r in (range(0x2060, 0x2070), range(0xFFF0, 0xFFF9), range(0xE0000, 0xE1000)) for c in r]
)


def _is_cjk(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in CJK_RANGES)


def _is_boundary(char: str) -> bool:
    # RE2's \s is ASCII whitespace only; other spaces are not boundaries in keras-nlp.
    return char in "\t\n\f\r " or unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    ascii_symbol = 0x21 <= code <= 0x2F or 0x3A <= code <= 0x40 or 0x5B <= code <= 0x60 or 0x7B <= code <= 0x7E
    return ascii_symbol or unicodedata.category(char).startswith("P")


def _case_fold(text: str) -> str:
    # Python has no NFKC_Casefold; this is its definition less the closure.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in folded if ord(c) not in _IGNORABLE)


def _replacement(code_point: int) -> str:
    """What steps 1-3 make of one character, word boundaries as WORD_BOUNDARY."""
    char = chr(code_point)
    if 0xAC00 <= code_point <= 0xD7A3:
        # A Hangul syllable: NFD splits it into jamo, which case folding joins again.
        return char
    stripped = "".join(c for c in unicodedata.normalize("NFD", char) if unicodedata.category(c) != "Mn")
    pieces, word = [], ""
    for c in stripped:
        if _is_boundary(c) or _is_punctuation(c) or _is_cjk(ord(c)):
            pieces.append(_case_fold(word))
            word = ""
            pieces.append(WORD_BOUNDARY)
            if not _is_boundary(c):
                pieces += [_case_fold(c), WORD_BOUNDARY]
        else:
            word += c
    pieces.append(_case_fold(word))
    return "".join(pieces)


@functools.lru_cache(maxsize=1)
def character_table() -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Code points whose replacement is not themselves, and their replacements.

    CJK ideographs are left out when only their word boundaries change: the
    graph adds those by range.
    """
    keys, values = [], []
    for code_point in range(0x110000):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        replacement = _replacement(code_point)
        if _is_cjk(code_point):
            replacement = replacement.strip(WORD_BOUNDARY)
        if replacement != chr(code_point):
            keys.append(code_point)
            values.append(replacement)
    return tuple(keys), tuple(values)


class CoreOpsBertTokenizer(tf.Module):
    """Packs texts into BERT inputs (token ids and padding mask) with core TF ops only.

    Args:
      vocabulary: the WordPiece vocabulary, one token per id (BERT's vocab.txt).
      sequence_length: the longest packed sequence, `[CLS]` and `[SEP]` included.
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.vocabulary = list(vocabulary)
        self.sequence_length = int(sequence_length)
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2, got {sequence_length}")
        token_id = {token: i for i, token in enumerate(self.vocabulary)}
        missing = [t for t in (UNKNOWN_TOKEN, START_TOKEN, END_TOKEN, PAD_TOKEN) if t not in token_id]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        self.unknown_id = token_id[UNKNOWN_TOKEN]
        self.start_id = token_id[START_TOKEN]
        self.end_id = token_id[END_TOKEN]
        self.pad_id = token_id[PAD_TOKEN]
        self._vocabulary_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.vocabulary), tf.range(len(self.vocabulary), dtype=tf.int64)
            ),
            default_value=-1,
        )
        keys, values = character_table()
        # The default marks "the character itself" (no replacement contains it).
        self._identity = "\x01"
        self._character_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.int64), tf.constant(values)),
            default_value=self._identity,
        )

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Steps 1-3: [n] texts -> [n, (words)] normalised words."""
        code_points = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
        flat = tf.cast(code_points.flat_values, tf.int64)
        replaced = self._character_table.lookup(flat)
        itself = tf.strings.unicode_encode(tf.cast(flat[:, None], tf.int32), "UTF-8")
        characters = tf.where(tf.equal(replaced, self._identity), itself, replaced)
        cjk = tf.zeros_like(flat, tf.bool)
        for low, high in CJK_RANGES:
            cjk |= (flat >= low) & (flat <= high)
        characters = tf.where(cjk, WORD_BOUNDARY + characters + WORD_BOUNDARY, characters)
        joined = tf.strings.reduce_join(code_points.with_flat_values(characters), axis=-1)
        words = tf.strings.split(joined, sep=WORD_BOUNDARY)
        return tf.ragged.boolean_mask(words, tf.not_equal(words, ""))

    def word_pieces(self, words: tf.Tensor) -> tf.RaggedTensor:
        """Step 4: [w] words -> [w, (pieces)] token ids (int64)."""
        # Over-long words are [UNK] whatever they hold; emptied first, so a hostile
        # megabyte-long word cannot size the look-up grid below.
        too_long = tf.strings.length(words) > MAX_BYTES_PER_WORD
        words = tf.where(too_long, "", words)
        characters = tf.strings.unicode_split(words, "UTF-8")
        lengths = characters.row_lengths()
        longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
        count = tf.shape(words, out_type=tf.int64)[0]
        span = tf.range(1, longest + 1)[None, :]

        def step(position: tf.Tensor, unknown: tf.Tensor, pieces: tf.TensorArray, t: tf.Tensor):  # noqa: ANN202
            active = (position < lengths) & ~unknown
            starts = tf.broadcast_to(position[:, None], [count, longest])
            candidates = tf.strings.substr(
                tf.broadcast_to(words[:, None], [count, longest]),
                starts,
                tf.broadcast_to(span, [count, longest]),
                unit="UTF8_CHAR",
            )
            candidates = tf.where(starts > 0, CONTINUATION_PREFIX + candidates, candidates)
            ids = self._vocabulary_table.lookup(candidates)
            fits = (ids >= 0) & (starts + span <= lengths[:, None])
            # The longest matching span; 0 when nothing matches.
            matched = tf.reduce_max(tf.where(fits, span, 0), axis=1)
            piece = tf.gather(ids, tf.maximum(matched - 1, 0), batch_dims=1)
            unknown |= active & tf.equal(matched, 0)
            emitted = tf.where(active & (matched > 0), piece, -1)
            return position + tf.where(active, matched, 0), unknown, pieces.write(t, emitted), t + 1

        def pending(position: tf.Tensor, unknown: tf.Tensor, pieces: tf.TensorArray, t: tf.Tensor) -> tf.Tensor:
            return tf.reduce_any((position < lengths) & ~unknown)

        # One column of nothing first: the stack is never empty, even without words.
        nothing = tf.fill([count], tf.constant(-1, tf.int64))
        _, unknown, pieces, steps = tf.while_loop(
            pending,
            step,
            (
                tf.zeros([count], tf.int64),
                too_long,
                tf.TensorArray(tf.int64, size=0, dynamic_size=True, element_shape=[None]).write(0, nothing),
                tf.constant(1),
            ),
        )
        emitted = tf.reshape(tf.transpose(pieces.stack()), tf.stack([count, tf.cast(steps, tf.int64)]))
        # A word with an unmatched rest is one [UNK], whatever matched before.
        emitted = tf.where(unknown[:, None], tf.constant(-1, tf.int64), emitted)
        first = tf.where(unknown, tf.constant(self.unknown_id, tf.int64), nothing)
        emitted = tf.concat([first[:, None], emitted], axis=1)
        return tf.ragged.boolean_mask(emitted, emitted >= 0)

    def __call__(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Steps 1-5 on [n] texts.

        Returns:
          (int32 token ids, bool padding mask), both [n, length] where length
          is the longest packed text (at most `sequence_length`).
        """
        words = self.words(texts)
        # Every word gives at least one piece: later words cannot fit.
        words = words[:, : self.sequence_length - 2]
        pieces = self.word_pieces(words.flat_values)
        per_text = tf.RaggedTensor.from_row_splits(pieces.flat_values, tf.gather(pieces.row_splits, words.row_splits))
        per_text = per_text[:, : self.sequence_length - 2]
        n = per_text.nrows()
        packed = tf.concat(
            [
                tf.fill([n, 1], tf.constant(self.start_id, tf.int64)),
                per_text,
                tf.fill([n, 1], tf.constant(self.end_id, tf.int64)),
            ],
            axis=1,
        )
        mask = tf.ones_like(packed, tf.bool).to_tensor(default_value=False)
        return tf.cast(packed.to_tensor(default_value=self.pad_id), tf.int32), mask
