"""Training is repeatable: the same data, config and seed give the same model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tests.trainer import synthetic  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402
from trainer.task import TrainingInputs, train  # noqa: E402


def test_training_is_the_same_whether_or_not_the_text_vectors_were_cached(tmp_path: Path, bert_dir: str) -> None:
    """A fresh pipeline run encodes item texts with BERT, a rerun reads them from the cache.

    Building BERT draws random numbers; before the trainer seeded after it,
    the first run of a fresh checkout trained from another start than every
    later run, and the demo's result moved between checkouts.
    """
    paths = synthetic.make_dataset(str(tmp_path), num_users=120)
    cache_dir = str(tmp_path / "cache")
    config = TrainerConfig(epochs=2, batch_size=64, num_sampled=8)
    histories = []
    for run in ("encoded", "cached"):
        inputs = TrainingInputs(
            train_files=[paths["train"]],
            eval_files=[paths["eval"]],
            catalog_file=paths["catalog"],
            bert_dir=bert_dir,
            cache_dir=cache_dir,
            serving_model_dir=str(tmp_path / run / "export" / "1"),
            run_dir=str(tmp_path / run / "run"),
        )
        histories.append(train(inputs, config)["history"])
        assert len(os.listdir(cache_dir)) == 1, "the first run caches the item text vectors"
    encoded, cached = histories
    assert encoded["loss"] == cached["loss"] and encoded["val_loss"] == cached["val_loss"]
    assert encoded["loss"][0] != encoded["loss"][1], "training must move the model"
