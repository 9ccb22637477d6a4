"""SASRec-style self-attentive sequential recommender (tf_keras), full-softmax cross-entropy.

Architecture (written for this benchmark):

- item embedding (index 0 = padding) scaled by sqrt(hidden), plus a learned
  positional embedding; sequences are left-padded to `max_len` (= the window
  size) so the most recent item always sits in the last position;
- `blocks` pre-layer-norm transformer blocks: causal multi-head self-attention
  (padding keys masked) and a point-wise two-layer feed-forward network, each
  with dropout and a residual connection; padded positions are zeroed after
  every block; a final layer norm;
- output: the hidden state at a position scored against every item's embedding
  (tied input/output embeddings), softmax over all items.

Training: every position of every user's training sequence is a target. A
long sequence is cut into windows of `max_len` inputs that end at the last
event and step back by `stride`; each target position is put in the loss of
exactly one window, the one where it sees the most history (at least
`max_len - stride` earlier items unless the user has fewer). Adam, full-softmax
cross-entropy, early stopping on validation NDCG@10 with `patience` epochs,
restoring the best weights.

Prediction: the input is the point's window (`select_event_window`): for the
validation point the user's training events, for the test point the training
events plus the validation event (unless it shares the test event's timestamp,
in which case the protocol leaves it out).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import schemas  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from bench.quality import FitInfo, model_config, top_k_from_scores
from bench.quality.data import LeaveOneOutSplit, PredictionPoint
from trainer.metrics import ranking_metrics

DEFAULTS: dict[str, Any] = {
    "hidden": 64,
    "blocks": 2,
    "heads": 1,
    "dropout": 0.2,
    "lr": 1e-3,
    "batch_size": 128,
    "max_len": None,  # None: the split's window size
    "stride": None,  # None: max_len // 2
    "max_epochs": 200,
    "patience": 10,
    "min_delta": 0.0,
}


def _import_tf() -> tuple[Any, Any]:
    import tensorflow as tf
    import tf_keras

    return tf, tf_keras


def training_windows(
    sequences: Sequence[Sequence[int]], max_len: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cuts item-index sequences into left-padded (inputs, targets, loss mask) windows.

    Args:
      sequences: per user, item indices (>= 1) in time order.
      max_len: inputs per window.
      stride: how far consecutive windows are apart (1 <= stride <= max_len).

    Returns:
      int32 inputs [W, max_len], int32 targets [W, max_len] (input position p
      predicts target p, the next item), float32 mask [W, max_len] with exactly
      one 1 per target of every sequence.
    """
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride must be in [1, {max_len}], got {stride}")
    xs, ys, ms = [], [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int32)
        inputs, targets = seq[:-1], seq[1:]
        n = inputs.size
        if n == 0:
            continue
        ends = {min(max_len, n)}
        end = n
        while end > max_len:
            ends.add(end)
            end -= stride
        covered = 0
        for end in sorted(ends):
            start = max(0, end - max_len)
            width = end - start
            x = np.zeros(max_len, np.int32)
            y = np.zeros(max_len, np.int32)
            m = np.zeros(max_len, np.float32)
            x[max_len - width :] = inputs[start:end]
            y[max_len - width :] = targets[start:end]
            first_new = max(covered, start)
            m[max_len - (end - first_new) :] = 1.0
            covered = end
            xs.append(x)
            ys.append(y)
            ms.append(m)
    if not xs:
        empty = np.zeros((0, max_len), np.int32)
        return empty, empty, np.zeros((0, max_len), np.float32)
    return np.stack(xs), np.stack(ys), np.stack(ms)


def _build_network(n_items: int, max_len: int, hidden: int, blocks: int, heads: int, dropout: float) -> Any:
    tf, tf_keras = _import_tf()
    layers = tf_keras.layers

    class SASRecNetwork(tf_keras.Model):
        def __init__(self) -> None:
            super().__init__(name="sasrec")
            self.item_embedding = layers.Embedding(n_items + 1, hidden, name="item_embedding")
            self.position_embedding = layers.Embedding(max_len, hidden, name="position_embedding")
            self.input_dropout = layers.Dropout(dropout)
            self.attention_norms = [layers.LayerNormalization(epsilon=1e-6) for _ in range(blocks)]
            self.attentions = [
                layers.MultiHeadAttention(heads, hidden // heads, dropout=dropout, name=f"attention_{b}")
                for b in range(blocks)
            ]
            self.attention_dropouts = [layers.Dropout(dropout) for _ in range(blocks)]
            self.ffn_norms = [layers.LayerNormalization(epsilon=1e-6) for _ in range(blocks)]
            self.ffn_inner = [layers.Dense(hidden, activation="relu", name=f"ffn_inner_{b}") for b in range(blocks)]
            self.ffn_inner_dropouts = [layers.Dropout(dropout) for _ in range(blocks)]
            self.ffn_outer = [layers.Dense(hidden, name=f"ffn_outer_{b}") for b in range(blocks)]
            self.ffn_dropouts = [layers.Dropout(dropout) for _ in range(blocks)]
            self.final_norm = layers.LayerNormalization(epsilon=1e-6)
            self._causal = tf.cast(tf.linalg.band_part(tf.ones([max_len, max_len]), -1, 0), tf.bool)

        def call(self, sequence: Any, training: bool = False) -> Any:
            present = sequence > 0  # [B, L]
            keep = tf.cast(present, tf.float32)[:, :, None]
            x = self.item_embedding(sequence) * math.sqrt(hidden)
            x = x + self.position_embedding(tf.range(max_len))[None]
            x = self.input_dropout(x, training=training) * keep
            mask = tf.logical_and(self._causal[None], present[:, None, :])  # [B, query, key]
            for b in range(blocks):
                h = self.attention_norms[b](x)
                h = self.attentions[b](h, h, attention_mask=mask, training=training)
                x = x + self.attention_dropouts[b](h, training=training)
                h = self.ffn_norms[b](x)
                h = self.ffn_inner_dropouts[b](self.ffn_inner[b](h), training=training)
                x = x + self.ffn_dropouts[b](self.ffn_outer[b](h), training=training)
                x = x * keep
            return self.final_norm(x)

        def item_table(self) -> Any:
            return self.item_embedding.embeddings[1:]

    return SASRecNetwork()


class SASRec:
    """Self-attentive sequential recommender with tied embeddings and full-softmax CE."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = model_config("sasrec", DEFAULTS, config)
        self.log: Callable[[str], None] | None = None
        self._net: Any = None
        self._item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._max_len = 0

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _encode(self, points: Sequence[PredictionPoint]) -> np.ndarray:
        x = np.zeros((len(points), self._max_len), np.int32)
        for row, point in enumerate(points):
            ids = [self._index[e.item_id] for e in point.window if e.item_id in self._index][-self._max_len :]
            if ids:
                x[row, self._max_len - len(ids) :] = ids
        return x

    def fit(self, split: LeaveOneOutSplit, seed: int) -> FitInfo:
        tf, tf_keras = _import_tf()
        started = time.perf_counter()
        c = self.config
        tf_keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        self._item_ids = list(split.item_ids)
        self._index = {item: i + 1 for i, item in enumerate(self._item_ids)}
        self._max_len = int(c["max_len"] or split.window)
        stride = int(c["stride"] or max(1, self._max_len // 2))
        sequences = [[self._index[e.item_id] for e in split.train[u]] for u in split.users]
        x_all, y_all, m_all = training_windows(sequences, self._max_len, stride)
        hidden, heads = int(c["hidden"]), int(c["heads"])
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        net = _build_network(len(self._item_ids), self._max_len, hidden, int(c["blocks"]), heads, float(c["dropout"]))
        net(tf.zeros([1, self._max_len], tf.int32))
        optimizer = tf_keras.optimizers.Adam(learning_rate=float(c["lr"]))
        self._net = net
        spec = tf.TensorSpec([None, self._max_len], tf.int32)

        @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, self._max_len], tf.float32)])
        def train_step(x: Any, y: Any, m: Any) -> Any:
            with tf.GradientTape() as tape:
                hidden_states = net(x, training=True)
                selected = m > 0
                h = tf.boolean_mask(hidden_states, selected)
                labels = tf.boolean_mask(y, selected) - 1
                logits = tf.matmul(h, net.item_table(), transpose_b=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            grads = tape.gradient(loss, net.trainable_variables)
            optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            return loss

        self._scores_fn = tf.function(
            lambda x: tf.matmul(net(x, training=False)[:, -1, :], net.item_table(), transpose_b=True),
            input_signature=[spec],
        )
        eval_points = split.eval_points
        eval_targets = [[p.target_item] for p in eval_points]
        batch = int(c["batch_size"])
        best, best_epoch, best_weights, waited = -1.0, 0, net.get_weights(), 0
        history: list[dict[str, float]] = []
        epoch = 0
        for epoch in range(1, int(c["max_epochs"]) + 1):
            t0 = time.perf_counter()
            order = rng.permutation(len(x_all))
            losses = []
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                losses.append(float(train_step(x_all[idx], y_all[idx], m_all[idx])))
            record = {"epoch": float(epoch), "loss": float(np.mean(losses)) if losses else float("nan")}
            if eval_points:
                val = ranking_metrics(self.rank(eval_points, 10), eval_targets)["ndcg@10"]
                record["val_ndcg@10"] = val
                if val > best + float(c["min_delta"]):
                    best, best_epoch, best_weights, waited = val, epoch, net.get_weights(), 0
                else:
                    waited += 1
            history.append(record)
            self._say(
                f"epoch {epoch} loss={record['loss']:.4f} val_ndcg@10={record.get('val_ndcg@10', float('nan')):.4f} "
                f"best={best:.4f}@{best_epoch} ({time.perf_counter() - t0:.1f}s)"
            )
            if eval_points and waited >= int(c["patience"]):
                break
        if eval_points:
            net.set_weights(best_weights)
        else:
            best_epoch = epoch
        return FitInfo(
            train_s=time.perf_counter() - started,
            params=self.params,
            epochs=epoch,
            best_epoch=best_epoch,
            history=history,
        )

    def scores(self, points: Sequence[PredictionPoint]) -> np.ndarray:
        """[len(points), n_items] logits, before exclusions."""
        if self._net is None:
            raise RuntimeError("fit first")
        return (
            np.concatenate(
                [self._scores_fn(self._encode(points[s : s + 1024])).numpy() for s in range(0, len(points), 1024)]
            )
            if points
            else np.zeros((0, len(self._item_ids)), np.float32)
        )

    def rank(self, points: Sequence[PredictionPoint], k: int = 20) -> list[list[str]]:
        return top_k_from_scores(self.scores(points), self._item_ids, points, k)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def params(self) -> int:
        if self._net is None:
            return 0
        return int(sum(int(np.prod(v.shape)) for v in self._net.trainable_variables))
