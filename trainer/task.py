"""Training entry points: `run_fn` for the TFX Trainer, and `train` for plain use."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from schemas.catalog import CatalogEntry, catalog_path, read_catalog  # noqa: E402
from schemas.signatures import RECENT_ITEMS  # noqa: E402
from trainer.co_interaction_channel import CoInteractionChannel, choose_weight, recent_item_ids  # noqa: E402
from trainer.config import TrainerConfig  # noqa: E402
from trainer.export import export_serving_model  # noqa: E402
from trainer.fine_tuned_text import FineTunedText  # noqa: E402
from trainer.graph_dataset import parse_subgraphs, read_evaluation_points, training_dataset  # noqa: E402
from trainer.interest_model import InterestModel  # noqa: E402
from trainer.item_tower import OOV_INDEX, ItemTower  # noqa: E402
from trainer.new_item_encoder import NewItemEncoder, new_item_bias  # noqa: E402
from trainer.rare_item_boost import rare_item_lift  # noqa: E402
from trainer.validation_ranking import VALIDATION_METRIC, ValidationRanking  # noqa: E402

log = logging.getLogger(__name__)

HISTORY_FILE = "training_history.json"


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """Where training reads from and writes to.

    Attributes:
      train_files: globs of training example files.
      eval_files: globs of validation example files (early stopping).
      catalog_file: the item catalog written by the graph builder.
      bert_dir: directory of the pretrained BERT (config.json, model.safetensors, vocab.txt).
      cache_dir: where item text vectors are cached between runs.
      serving_model_dir: where the SavedModel is exported.
      run_dir: where training history and its plot go.
    """

    train_files: Sequence[str]
    eval_files: Sequence[str]
    catalog_file: str
    bert_dir: str
    cache_dir: str
    serving_model_dir: str
    run_dir: str


def item_text_vectors(
    entries: Sequence[CatalogEntry], bert_dir: str, cache_dir: str, sequence_length: int
) -> np.ndarray:
    """BERT vectors of every item's text, computed once and cached by content hash.

    The encoder is frozen in the CPU profile, so the vectors depend only on the
    texts, the weights and the sequence length: a cache hit is exact.
    """
    texts = [e.item.text for e in entries]
    weights = os.path.join(bert_dir, "model.safetensors")
    key = hashlib.sha256(json.dumps([texts, sequence_length, os.path.getsize(weights)]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"item_text_vectors_{key}.npy")
    if os.path.exists(path):
        log.info("item text vectors: cache hit %s", path)
        return np.load(path)
    from trainer.text_encoder import ItemTextEncoder

    start = time.time()
    vectors = ItemTextEncoder(bert_dir, sequence_length=sequence_length).encode(texts)
    log.info("item text vectors: encoded %d items with BERT in %.1fs", len(texts), time.time() - start)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", vectors)
    os.replace(path + ".tmp.npy", path)
    return vectors


def build_model(
    entries: Sequence[CatalogEntry], text_vectors: np.ndarray, config: TrainerConfig, bert_dir: str | None = None
) -> InterestModel:
    """Builds the model over the catalog's items (ordered most frequent first).

    Args:
      entries: the item catalog.
      text_vectors: frozen BERT vectors of the entries' texts (unused, and may
        have no columns, when the config fine-tunes BERT).
      config: hyperparameters.
      bert_dir: the pretrained BERT, needed when `config.text_finetune_layers` > 0.
    """
    order = sorted(range(len(entries)), key=lambda i: (-entries[i].train_count, entries[i].item.item_id))
    ordered = [entries[i] for i in order]
    category_names = sorted({c for e in ordered for c in e.item.categories})
    category_index = {c: i for i, c in enumerate(category_names)}
    position = {e.item.item_id: i for i, e in enumerate(ordered)}
    co_interactions = [
        [[position[j], w] for j, w in e.co_interactions[: config.co_interaction_neighbours] if j in position]
        for e in ordered
    ]
    fine_tuned_text = None
    if config.text_finetune_layers:
        if bert_dir is None:
            raise ValueError("fine-tuning BERT (text_finetune_layers > 0) needs bert_dir")
        fine_tuned_text = FineTunedText(
            [""] + [e.item.text for e in ordered],
            bert_dir,
            config.text_finetune_layers,
            config.text_sequence_length,
            mixed_precision=config.mixed_precision,
        )
    tower = ItemTower(
        item_ids=[e.item.item_id for e in ordered],
        text_vectors=text_vectors[order],
        category_names=category_names,
        item_category_ids=[[category_index[c] for c in e.item.categories] for e in ordered],
        output_dim=config.interest_dim,
        category_dim=config.category_dim,
        use_text=config.use_text,
        co_interactions=co_interactions,
        fine_tuned_text=fine_tuned_text,
    )
    return InterestModel(
        tower,
        config.interest_dim,
        config.num_interests,
        config.event_dim,
        config.attention_heads,
        config.num_sampled,
        use_categories=config.use_categories,
        use_time=config.use_time,
        message_passing_rounds=config.message_passing_rounds,
        use_memory=config.use_memory,
        event_context_blocks=config.event_context_blocks,
        event_context_dropout=config.event_context_dropout,
        shared_interest_core=config.shared_interest_core,
        interest_temperature=config.interest_temperature,
    )


class _RefreshTextTable(tf.keras.callbacks.Callback):
    """Recomputes the fine-tuned text vectors of every item before each validation pass.

    During an epoch only the rows of each batch's items are recomputed;
    validation ranks the whole catalog, so it needs all of them current.
    """

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.model.item_tower.refresh_text_table()


class _EpochLog(tf.keras.callbacks.Callback):
    """One progress line per epoch, with time, so long training shows progress."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        # ReduceLROnPlateau, when used, runs before this and logs the rate this epoch trained with.
        rate = f" lr={float(logs['lr']):.2g}" if "lr" in logs else ""
        print(
            f"[trainer] epoch {epoch + 1}: loss={logs.get('loss', float('nan')):.4f} "
            f"val_loss={logs.get('val_loss', float('nan')):.4f} "
            f"{VALIDATION_METRIC}={logs.get(VALIDATION_METRIC, float('nan')):.4f}{rate} "
            f"({time.time() - self._start:.0f}s)",
            flush=True,
        )


def _training_callbacks(inputs: TrainingInputs, config: TrainerConfig) -> list[tf.keras.callbacks.Callback]:
    """Validation ranking first: the learning-rate and stopping rules read its `val_ndcg@10`."""
    callbacks = [_RefreshTextTable(), ValidationRanking(inputs.eval_files)]
    if config.learning_rate_plateau_factor < 1.0:
        callbacks.append(
            tf.keras.callbacks.ReduceLROnPlateau(
                monitor=VALIDATION_METRIC,
                mode="max",
                factor=config.learning_rate_plateau_factor,
                patience=config.learning_rate_plateau_patience,
            )
        )
    callbacks += [
        _EpochLog(),
        tf.keras.callbacks.EarlyStopping(
            monitor=VALIDATION_METRIC, mode="max", patience=config.early_stopping_patience, restore_best_weights=True
        ),
    ]
    return callbacks


def train(inputs: TrainingInputs, config: TrainerConfig) -> dict[str, Any]:
    """Trains the interest model and exports it for serving.

    Args:
      inputs: data, weights and output locations.
      config: hyperparameters.

    Returns:
      The training history (per-epoch losses) and timings.
    """
    entries = read_catalog(inputs.catalog_file)
    start = time.time()
    if config.text_finetune_layers:
        # The fine-tuned view computes its own BERT states; frozen vectors are not used.
        vectors = np.zeros((len(entries), 0), np.float32)
    else:
        vectors = item_text_vectors(entries, inputs.bert_dir, inputs.cache_dir, config.text_sequence_length)
    # Seeded after the text vectors: building BERT on a cache miss draws random
    # numbers, and the model must start the same whether or not the cache hit.
    tf.keras.utils.set_random_seed(config.seed)
    model = build_model(entries, vectors, config, inputs.bert_dir)
    text_s = time.time() - start
    optimizer = tf.keras.optimizers.Adam(config.learning_rate)
    if config.mixed_precision:
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    text_optimizer = tf.keras.optimizers.Adam(config.text_learning_rate) if config.text_finetune_layers else None
    model.compile(optimizer=optimizer, text_optimizer=text_optimizer)
    train_ds = training_dataset(inputs.train_files, config.batch_size, shuffle=True, seed=config.seed)
    eval_ds = training_dataset(inputs.eval_files, config.batch_size, shuffle=False)
    # The custom train_step never calls the model itself; one call builds it
    # (Keras export requires a built model).
    model(next(iter(eval_ds))[0])
    start = time.time()
    history = model.fit(
        train_ds,
        validation_data=eval_ds,
        epochs=config.epochs,
        verbose=0,
        callbacks=_training_callbacks(inputs, config),
    )
    fit_s = time.time() - start
    channel, channel_validation = _co_interaction_channel(entries, model, config, inputs.eval_files)
    eval_files = sorted(tf.io.gfile.glob(inputs.eval_files[0]))
    warmup = [x.numpy() for x in tf.data.TFRecordDataset(eval_files, "GZIP").take(2)]
    export_serving_model(
        model,
        inputs.serving_model_dir,
        warmup,
        _score_offsets(entries, model, config),
        _new_item_encoder(entries, model, config, inputs.bert_dir),
        channel,
    )
    result = {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "co_interaction": {
            "weight": float(channel.weight.numpy()),
            "validation_ndcg@10": {str(w): round(v, 6) for w, v in channel_validation.items()},
        },
        "config": config.to_dict(),
        "timings_s": {"item_text_vectors": round(text_s, 2), "fit": round(fit_s, 2)},
        "items": len(entries),
        "params": int(model.count_params()),
    }
    os.makedirs(inputs.run_dir, exist_ok=True)
    with open(os.path.join(inputs.run_dir, HISTORY_FILE), "w") as f:
        json.dump(result, f, indent=2)
    plot_history(result["history"], os.path.join(inputs.run_dir, "training_curve.png"))
    return result


def _co_interaction_channel(
    entries: Sequence[CatalogEntry], model: InterestModel, config: TrainerConfig, eval_files: Sequence[str]
) -> tuple[CoInteractionChannel, dict[float, float]]:
    """The co-interaction channel, its weight chosen on the validation points (0 when switched off).

    Returns:
      The channel and the validation NDCG@10 at each weight tried.
    """
    channel = CoInteractionChannel(
        model.item_tower.item_ids,
        {e.item.item_id: e.co_interactions for e in entries},
        config.co_interaction_half_life,
    )
    if not config.co_interaction_channel:
        return channel, {}
    subgraphs, targets, seen = read_evaluation_points(eval_files)
    model_scores, channel_scores = [], []
    for start in range(0, len(subgraphs), 256):
        graph = parse_subgraphs(tf.constant(subgraphs[start : start + 256]))
        model_scores.append(model.all_scores(model(graph, training=False)).numpy())
        rows = model.item_tower.indices(recent_item_ids(graph, RECENT_ITEMS))
        channel_scores.append(channel.unweighted_scores(rows).numpy())
    column = {item_id: i + 1 for i, item_id in enumerate(model.item_tower.item_ids)}
    weight, by_weight = choose_weight(
        np.concatenate(model_scores),
        np.concatenate(channel_scores),
        [[column[i] for i in items if i in column] + [OOV_INDEX] for items in seen],
        [column.get(t, OOV_INDEX) for t in targets],
    )
    log.info("co-interaction channel: weight %s chosen on validation (NDCG@10 by weight: %s)", weight, by_weight)
    print(f"[trainer] co-interaction weight {weight} (validation ndcg@10 {by_weight[weight]:.4f})", flush=True)
    channel.weight.assign(weight)
    return channel, by_weight


def _score_offsets(entries: Sequence[CatalogEntry], model: InterestModel, config: TrainerConfig) -> np.ndarray | None:
    """The rare-item lift per item of the model's vocabulary, or None when it is off."""
    if not config.rare_item_boost:
        return None
    counts = {e.item.item_id: e.train_count for e in entries}
    return rare_item_lift(
        [counts[i] for i in model.item_tower.item_ids], config.rare_item_boost, config.rare_item_boost_below
    )


def _new_item_encoder(
    entries: Sequence[CatalogEntry], model: InterestModel, config: TrainerConfig, bert_dir: str
) -> NewItemEncoder:
    """What the export's `encode_items` runs: the model's BERT and a new item's bias."""
    from trainer.text_encoder import ItemTextEncoder

    text_encoder = ItemTextEncoder(bert_dir, sequence_length=config.text_sequence_length) if config.use_text else None
    counts = {e.item.item_id: e.train_count for e in entries}
    tower = model.item_tower
    offset = rare_item_lift([0], config.rare_item_boost, config.rare_item_boost_below)[0]
    bias = new_item_bias(tower.bias.numpy()[OOV_INDEX + 1 :], [counts[i] for i in tower.item_ids], float(offset))
    return NewItemEncoder(tower, text_encoder, bias)


def plot_history(history: dict[str, list[float]], path: str) -> None:
    """Draws training and validation loss (left) and validation ranking metrics (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"loss": "train (sampled softmax)", "val_loss": "validation (full softmax)"}
    fig, (losses, ranking) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, values in history.items():
        if name not in labels and not name.startswith("val_"):
            continue  # e.g. the learning rate, on another scale
        axis = losses if name in labels else ranking
        axis.plot(range(1, len(values) + 1), values, marker="o", label=labels.get(name, name))
    losses.set_ylabel("next-item loss")
    ranking.set_ylabel("validation ranking (seen items excluded)")
    for axis in (losses, ranking):
        axis.set_xlabel("epoch")
        axis.legend(fontsize="small")
    fig.suptitle("Interest model training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (GenericExecutor).

    `fn_args.custom_config` holds `bert_dir`, `cache_dir` and optionally
    `trainer` (TrainerConfig fields). The graph examples artifact carries its
    item catalog, found next to the split directories.
    """
    custom = dict(fn_args.custom_config or {})
    examples_uri = os.path.dirname(os.path.dirname(fn_args.train_files[0]))
    inputs = TrainingInputs(
        train_files=fn_args.train_files,
        eval_files=fn_args.eval_files,
        catalog_file=catalog_path(examples_uri),
        bert_dir=custom["bert_dir"],
        cache_dir=custom["cache_dir"],
        serving_model_dir=fn_args.serving_model_dir,
        run_dir=fn_args.model_run_dir,
    )
    train(inputs, TrainerConfig.from_dict(custom.get("trainer", {})))
