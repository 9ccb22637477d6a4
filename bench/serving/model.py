"""The served model and its data: MovieLens-100k and the project's own pipeline.

The benchmark serves the model `make demo` serves: the TFX pipeline
(`pipeline.runner.run_pipeline`) trained on MovieLens-100k and pushed into TF
Serving's layout `<models>/<name>/<version>/`. It is trained once into
`.cache/bench/serving/` and reused by later runs; `--model-dir` serves an
existing base path instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from bench import REPO_ROOT
from pipeline.assets import MINILM, MOVIELENS_100K, fetch
from pipeline.config import PipelineConfig
from pipeline.datasets.movielens import convert_movielens_100k
from schemas.events import Event, Item, RejectedRecord, read_events, read_items
from schemas.signatures import DEFAULT_MODEL_NAME
from serving.model_loader import scan_versions
from trainer.config import TrainerConfig

DEFAULT_CACHE_DIR = os.path.join(REPO_ROOT, ".cache", "bench", "serving")


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """A model in TF Serving's layout.

    Attributes:
      base_path: the model base path (`--model_base_path`), holding integer versions.
      name: the model name clients put in ModelSpec.
      version: the newest version, the one the server serves.
      origin: how it was obtained, for the results' protocol.
    """

    base_path: str
    name: str
    version: int
    origin: str

    @property
    def version_dir(self) -> str:
        return os.path.join(self.base_path, str(self.version))


def newest_version(base_path: str) -> int | None:
    """The largest complete version under a base path (as the model server sees it), or None."""
    versions = scan_versions(base_path)
    return max(versions) if versions else None


def existing_model(base_path: str, name: str = DEFAULT_MODEL_NAME) -> ServedModel:
    """A model given with `--model-dir`.

    Args:
      base_path: the model base path.
      name: the model name to serve it under.

    Returns:
      The model, at its newest version.

    Raises:
      FileNotFoundError: if the base path holds no versioned SavedModel.
    """
    base_path = os.path.abspath(base_path)
    version = newest_version(base_path)
    if version is None:
        raise FileNotFoundError(f"{base_path} holds no <version>/saved_model.pb (TF Serving's model layout)")
    return ServedModel(base_path, name, version, f"--model-dir {base_path}")


def movielens_files(cache_dir: str = DEFAULT_CACHE_DIR) -> tuple[str, str]:
    """MovieLens-100k converted to the project's event and item format (cached).

    Args:
      cache_dir: the benchmark's cache root.

    Returns:
      (events.csv path, items.csv path).
    """
    data_dir = os.path.join(cache_dir, "data")
    # The pipeline reads every file of its events folder, so the catalog lives beside it.
    events_path = os.path.join(data_dir, "events", "events.csv")
    items_path = os.path.join(data_dir, "items.csv")
    if not (os.path.isfile(events_path) and os.path.isfile(items_path)):
        _, converted_items = convert_movielens_100k(fetch(MOVIELENS_100K), os.path.dirname(events_path))
        os.replace(converted_items, items_path)
    return events_path, items_path


def load_movielens(cache_dir: str = DEFAULT_CACHE_DIR) -> tuple[list[Event], list[Item]]:
    """All MovieLens-100k events and items.

    Args:
      cache_dir: the benchmark's cache root.

    Returns:
      (events, items); the conversion rejects no MovieLens row.
    """
    events_path, items_path = movielens_files(cache_dir)
    events = [e for e in read_events(events_path) if not isinstance(e, RejectedRecord)]
    items, _ = read_items(items_path)
    return events, items


def trained_model(cache_dir: str = DEFAULT_CACHE_DIR, epochs: int | None = None) -> ServedModel:
    """The pipeline's MovieLens-100k model, trained on first use and reused afterwards.

    Args:
      cache_dir: the benchmark's cache root; each training configuration
        (the TrainerConfig defaults with `epochs` applied) has its own
        pipeline root there, so neither a reduced-epochs smoke model nor a
        model of earlier defaults stands in for the real one.
      epochs: None trains with the TrainerConfig defaults (the real model);
        a number caps the epochs (faster, for smoke runs).

    Returns:
      The pushed model.
    """
    overrides = {"epochs": epochs} if epochs else {}
    trainer_config = json.dumps(dataclasses.asdict(TrainerConfig(**overrides)), sort_keys=True)
    digest = hashlib.sha256(trainer_config.encode()).hexdigest()[:12]
    output_dir = os.path.join(cache_dir, f"pipeline-{'default' if epochs is None else f'epochs{epochs}'}-{digest}")
    models_dir = os.path.join(output_dir, "models", DEFAULT_MODEL_NAME)
    origin = "pipeline.runner.run_pipeline on MovieLens-100k, " + (
        "TrainerConfig defaults" if epochs is None else f"epochs={epochs}"
    )
    version = newest_version(models_dir)
    if version is not None:
        print(f"[serving] reusing the model at {models_dir}/{version}", flush=True)
        return ServedModel(models_dir, DEFAULT_MODEL_NAME, version, origin)
    # Imported here: the TFX stack is heavy and only needed to train.
    from pipeline.runner import run_pipeline

    events_path, items_path = movielens_files(cache_dir)
    bert_dir = fetch(MINILM)
    config = PipelineConfig(
        events_dir=os.path.dirname(events_path),
        items_path=items_path,
        bert_dir=bert_dir,
        output_dir=output_dir,
        trainer=overrides,
        # Next to the assets, as the demo does, so cached BERT item vectors are shared.
        cache_dir=os.path.join(os.path.dirname(os.path.dirname(bert_dir)), "cache"),
    )
    print(f"[serving] training the MovieLens-100k model with the pipeline into {output_dir}", flush=True)
    run_pipeline(config)
    version = newest_version(models_dir)
    if version is None:
        raise RuntimeError(f"the pipeline pushed no model to {models_dir}")
    return ServedModel(models_dir, DEFAULT_MODEL_NAME, version, origin)
