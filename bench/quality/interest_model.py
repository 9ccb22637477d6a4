"""The project's interest model as a benchmark `Recommender`.

It is trained and ranked exactly as in the pipeline: the graph examples are
written by the GraphBuilder's own `split_user_history`, training is
`trainer.task.train` (frozen BERT item text, TF-GNN message passing, sampled
softmax, early stopping on validation), and ranking goes through the exported
serving signatures, as TF Serving would run them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from bench import REPO_ROOT
from bench.quality import FitInfo
from bench.quality.data import LeaveOneOutSplit, PredictionPoint
from pipeline.assets import MINILM, asset_dir
from pipeline.components.co_interaction import neighbours_of_histories
from pipeline.components.graph_builder import split_user_history
from pipeline.components.ranking_evaluator import served_scores, signature_rankings
from schemas.catalog import CatalogEntry, write_catalog
from schemas.events import Item
from schemas.graph import encode_interest_subgraph, split_history
from trainer.config import TrainerConfig
from trainer.task import TrainingInputs, train
from trainer.validation_ranking import VALIDATION_METRIC

TEXT_CACHE_DIR = os.path.join(REPO_ROOT, ".cache", "cache")


def _write_examples(split: LeaveOneOutSplit, root: str) -> dict[str, str]:
    categories = {item_id: item.categories for item_id, item in split.items.items()}
    writers = {
        name: tf.io.TFRecordWriter(os.path.join(root, f"{name}.tfrecord.gz"), options="GZIP")
        for name in ("train", "eval")
    }
    # The user's whole history goes through the pipeline's own splitter; the
    # test examples it makes are dropped (the harness ranks test points itself).
    targets = {p.user_id: [p.target] for p in split.eval_points}
    for p in split.test_points:
        targets.setdefault(p.user_id, []).append(p.target)
    for user_id in split.users:
        events = list(split.train.get(user_id, [])) + targets.get(user_id, [])
        for name, example in split_user_history(user_id, events, split.window, categories):
            if name in writers:
                writers[name].write(example)
    for writer in writers.values():
        writer.close()
    items = [split.items.get(i, Item(i, "", "", ())) for i in split.item_ids]
    catalog = os.path.join(root, "catalog", "items.jsonl")
    neighbours = neighbours_of_histories([e.item_id for e in split.train.get(u, [])] for u in split.users)
    write_catalog(
        catalog,
        [
            CatalogEntry(item, split.train_item_counts.get(item.item_id, 0), neighbours.get(item.item_id, ()))
            for item in items
        ],
    )
    return {name: os.path.join(root, f"{name}.tfrecord.gz") for name in writers} | {"catalog": catalog}


def point_subgraph(
    point: PredictionPoint, window: int, item_categories: Mapping[str, Sequence[str]], remember: bool = True
) -> tf.train.Example:
    """The interest subgraph the served model reads for a prediction point.

    As the GraphBuilder writes it for validation and test, and as the client
    sends it: the window (`point.window`) and, in the long-term memory node
    set, every older event of the user (the events that fell out of the
    window, which the client's stored memory holds).

    Args:
      point: a validation or test point.
      window: the split's window bound.
      item_categories: item_id -> its categories.
      remember: False leaves the memory empty (the window only).

    Returns:
      The subgraph as a tf.Example.
    """
    remembered, recent = split_history(point.history, point.timestamp, window)
    return encode_interest_subgraph(recent, point.timestamp, item_categories, remembered=remembered if remember else ())


class InterestGraphModel:
    """Adapter: `TrainerConfig` fields as the benchmark config.

    Its scoring variants rank the same fit differently:
      - "no_co_interaction_channel": the exported model's co-interaction
        channel weight set to 0;
      - "no_long_term_memory": the subgraphs carry no remembered events, so
        the model sees the window only (how this harness ranked every
        interest_graph entry before session 15, while training and the
        served client always had the memory).

    Args:
      config: TrainerConfig overrides (e.g. {"use_text": False} for an ablation).
    """

    scoring_variants = ("no_co_interaction_channel", "no_long_term_memory")

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self._dir = tempfile.mkdtemp(prefix="interest_graph_bench_")
        # Examples and exported models of every fit (about 25 MB each) go when the adapter does.
        weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._loaded: Any = None
        self._categories: dict[str, tuple[str, ...]] = {}
        self._params = 0
        self._channel_weight = 0.0
        self._window = 0
        self._remember = True

    @property
    def params(self) -> int:
        return self._params

    @property
    def settings(self) -> dict[str, Any]:
        """The whole `TrainerConfig` the fit trains with (its defaults with the overrides), less the seed."""
        settings = dataclasses.asdict(TrainerConfig(**self.config))
        del settings["seed"]
        return settings

    def fit(self, split: LeaveOneOutSplit, seed: int) -> FitInfo:
        start = time.time()
        run_dir = tempfile.mkdtemp(dir=self._dir)
        paths = _write_examples(split, run_dir)
        inputs = TrainingInputs(
            train_files=[paths["train"]],
            eval_files=[paths["eval"]],
            catalog_file=paths["catalog"],
            bert_dir=asset_dir(MINILM),
            cache_dir=TEXT_CACHE_DIR,
            serving_model_dir=os.path.join(run_dir, "model"),
            run_dir=os.path.join(run_dir, "run"),
        )
        result = train(inputs, TrainerConfig(**{**self.config, "seed": seed}))
        self._loaded = tf.saved_model.load(inputs.serving_model_dir)
        self._categories = {item_id: item.categories for item_id, item in split.items.items()}
        self._window = split.window
        self._params = int(result["params"])
        self._channel_weight = float(self._loaded.co_interaction.weight.numpy())
        history = result["history"]
        losses = history.get("val_loss", [])
        ranking = history.get(VALIDATION_METRIC, [])
        return FitInfo(
            train_s=time.time() - start,
            params=self._params,
            epochs=len(losses),
            # The epoch early stopping restored: the best validation NDCG@10, not the lowest loss.
            best_epoch=int(np.argmax(ranking)) + 1 if ranking else None,
            history=[
                {
                    "epoch": i + 1,
                    "loss": history["loss"][i],
                    "val_loss": v,
                    VALIDATION_METRIC: ranking[i],
                    **({"lr": history["lr"][i]} if "lr" in history else {}),
                }
                for i, v in enumerate(losses)
            ],
            choices={"co_interaction": result["co_interaction"]},
        )

    def set_scoring_variant(self, name: str | None) -> None:
        if name not in (None, *self.scoring_variants):
            raise ValueError(f"unknown scoring variant {name!r}")
        self._loaded.co_interaction.weight.assign(0.0 if name == "no_co_interaction_channel" else self._channel_weight)
        self._remember = name != "no_long_term_memory"

    def scores(self, points: Sequence[PredictionPoint], item_ids: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """[points, items] served scores (`update_interest`, then the `score` signature); nothing excluded."""
        batches = served_scores(self._loaded, self._subgraphs(points), item_ids, batch_size)
        return np.concatenate([scores for _, scores in batches])

    def rank(self, points: Sequence[PredictionPoint], k: int = 20) -> list[list[str]]:
        return signature_rankings(self._loaded, self._subgraphs(points), [sorted(p.exclude) for p in points], k)

    def _subgraphs(self, points: Sequence[PredictionPoint]) -> list[bytes]:
        """Each point's serialized interest subgraph, as of its timestamp (`point_subgraph`)."""
        return [point_subgraph(p, self._window, self._categories, self._remember).SerializeToString() for p in points]
