"""Full-ranking validation metrics after every epoch, for early stopping.

The validation loss (full-softmax cross-entropy) and the metric users judge
the model by (NDCG@10 of the ranking with already-seen items removed) do not
peak at the same epoch. This callback ranks the whole catalog for every
validation point, as serving does, and adds `val_ndcg@10` (and the other
metrics of `trainer.metrics`) to the epoch logs, so early stopping keeps the
weights of the best-ranking epoch. The same rule as the SASRec baseline in
`bench/quality`, so both are tuned alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.graph_dataset import parse_subgraphs, read_evaluation_points  # noqa: E402
from trainer.metrics import MAX_CUTOFF, ranking_metrics  # noqa: E402

VALIDATION_METRIC = "val_ndcg@10"


class ValidationRanking(tf.keras.callbacks.Callback):
    """Adds `val_<metric>` full-ranking metrics of the validation points to the epoch logs.

    Args:
      eval_files: globs of the validation examples (with their seen items).
      batch_size: validation points per forward pass.
    """

    def __init__(self, eval_files: Sequence[str], batch_size: int = 256) -> None:
        super().__init__()
        self.eval_files = list(eval_files)
        self.batch_size = batch_size
        self._subgraphs, self._targets, self._seen = read_evaluation_points(self.eval_files)

    def _rankings(self) -> list[list[str]]:
        model = self.model
        item_ids = np.array([""] + list(model.item_tower.item_ids), dtype=object)
        index = {item_id: i for i, item_id in enumerate(item_ids) if item_id}
        rankings: list[list[str]] = []
        for start in range(0, len(self._subgraphs), self.batch_size):
            batch = self._subgraphs[start : start + self.batch_size]
            scores = model.all_scores(model(parse_subgraphs(tf.constant(batch)), training=False)).numpy()
            for row, seen in enumerate(self._seen[start : start + self.batch_size]):
                scores[row, [index[i] for i in seen if i in index]] = -np.inf
            top = np.argsort(-scores, axis=1)[:, :MAX_CUTOFF]
            rankings.extend([str(i) for i in item_ids[r]] for r in top)
        return rankings

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        metrics = ranking_metrics(self._rankings(), [[t] for t in self._targets])
        logs.update({f"val_{name}": value for name, value in metrics.items() if name != "count"})
