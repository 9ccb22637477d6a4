"""The learning-rate and stopping rules follow the validation NDCG@10 as configured."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.trainer import synthetic  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402
from trainer.task import TrainingInputs, _training_callbacks  # noqa: E402
from trainer.validation_ranking import VALIDATION_METRIC  # noqa: E402

# Validation NDCG@10 per epoch: best at epoch 2, then a noisy dip, a new best at
# epoch 5, then nothing better.
_CURVE = (0.10, 0.12, 0.11, 0.115, 0.125, 0.12, 0.121, 0.122, 0.119, 0.118, 0.117)


def _replay(config: TrainerConfig, tmp_path: Path) -> tuple[list[float], int]:
    """Learning rate each epoch trained with, and the epochs run, for `_CURVE` as the validation scores."""
    paths = synthetic.make_dataset(str(tmp_path), num_users=20)
    inputs = TrainingInputs(
        train_files=[paths["train"]],
        eval_files=[paths["eval"]],
        catalog_file=paths["catalog"],
        bert_dir="",
        cache_dir=str(tmp_path / "cache"),
        serving_model_dir=str(tmp_path / "export"),
        run_dir=str(tmp_path / "run"),
    )
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,))])
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="mse")
    # The validation ranking needs a trained interest model; its metric is scripted here instead.
    rules = [
        c
        for c in _training_callbacks(inputs, config)
        if isinstance(c, tf.keras.callbacks.ReduceLROnPlateau | tf.keras.callbacks.EarlyStopping)
    ]
    for rule in rules:
        rule.set_model(model)
        rule.on_train_begin()
    rates = []
    for epoch, score in enumerate(_CURVE):
        rates.append(float(model.optimizer.learning_rate.numpy()))
        for rule in rules:
            rule.on_epoch_end(epoch, {VALIDATION_METRIC: score})
        if model.stop_training:
            return rates, epoch + 1
    return rates, len(_CURVE)


def test_the_rate_decays_after_every_epoch_that_is_not_the_best(tmp_path: Path) -> None:
    rates, epochs = _replay(TrainerConfig(learning_rate=1.0, learning_rate_plateau_factor=0.5), tmp_path)
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.0625])
    assert epochs == 8, "three epochs without a better score after epoch 5 stop training"


def test_a_patient_schedule_waits_for_two_epochs_in_a_row(tmp_path: Path) -> None:
    config = TrainerConfig(
        learning_rate=1.0,
        learning_rate_plateau_factor=0.5,
        learning_rate_plateau_patience=2,
        early_stopping_patience=5,
    )
    rates, epochs = _replay(config, tmp_path)
    # Epochs 3-4 are one dip of two: the rate halves once; epochs 6-9 halve it twice.
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125])
    assert epochs == 10


def test_the_plateau_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="learning_rate_plateau_patience"):
        TrainerConfig(learning_rate_plateau_patience=0)
