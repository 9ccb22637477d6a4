"""Quality benchmark: full-ranking next-item metrics on MovieLens-100k.

Every recommender here implements `Recommender`: `fit(split, seed)` trains on a
`bench.quality.data.LeaveOneOutSplit` (which holds the raw events, so a model
may read timestamps, event types and values as the project's model does) and
`rank(points, k)` returns, per prediction point, the top-k item ids excluding
the point's `exclude` set. `bench.quality.harness.REGISTRY` maps a model name to
a `ModelSpec` (a factory from a config dict plus the tuning grid).

Run it with `python -m bench.quality` (see README.md next to this file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from bench.quality.data import LeaveOneOutSplit, PredictionPoint


@dataclasses.dataclass
class FitInfo:
    """What `fit` reports.

    Attributes:
      train_s: wall-clock seconds spent fitting (including early-stopping
        validation passes, which are part of training).
      params: number of learned parameters (or stored statistics for
        count-based models).
      epochs: epochs run, for iterative models.
      best_epoch: the epoch whose weights were kept (early stopping).
      history: per-epoch records, e.g. {"epoch", "loss", "val_ndcg@10"}.
      choices: what the fit chose after training, e.g. the interest model's
        co-interaction channel weight and the validation scores behind it.
    """

    train_s: float
    params: int
    epochs: int | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    choices: dict[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Recommender(Protocol):
    """The interface every benchmarked model implements."""

    def fit(self, split: LeaveOneOutSplit, seed: int) -> FitInfo:
        """Trains on `split.train` (validation points may be used for early stopping only)."""
        ...

    def rank(self, points: Sequence[PredictionPoint], k: int = 20) -> list[list[str]]:
        """Per point, the k best item ids, best first, none of them in `point.exclude`."""
        ...

    @property
    def params(self) -> int:
        """Number of learned parameters after `fit`."""
        ...

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting the model fits with: its defaults with the config's overrides, not the seed.

        Recorded with each results entry, so that what an entry measured stays
        known after a default changes, and seeds added to it later are checked
        to be the same experiment.
        """
        ...


@runtime_checkable
class ScoringVariants(Protocol):
    """A recommender whose one fit can also rank by other scoring rules.

    The harness evaluates each variant on the same fit (e.g. the interest model
    without its co-interaction channel), so a part that acts only at scoring
    time is measured without the spread of a second training run.
    """

    scoring_variants: tuple[str, ...]

    def set_scoring_variant(self, name: str | None) -> None:
        """Rank by the named variant from now on (None: the model as configured)."""
        ...


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How the harness builds and tunes one model.

    Attributes:
      factory: config dict -> an unfitted `Recommender`.
      grid: the tuning grid: a list of configs. With more than one, each is fitted
        with seed 0 and the one with the best validation NDCG@10 is kept.
      description: one line for the results file and the docs.
      quick: config overrides applied by `--quick` (e.g. fewer epochs).
    """

    factory: Callable[[Mapping[str, Any]], Recommender]
    grid: Sequence[Mapping[str, Any]] = ({},)
    description: str = ""
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def model_config(name: str, defaults: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A model's settings: its defaults overridden by `config`, which may name no other key.

    Raises:
      ValueError: naming the unknown settings, so a typo in a grid is not silently ignored.
    """
    unknown = set(config or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {name} settings {sorted(unknown)}")
    return {**defaults, **(config or {})}


def top_k_from_scores(
    scores: np.ndarray,
    item_ids: Sequence[str],
    points: Sequence[PredictionPoint],
    k: int,
    tie_break: np.ndarray | None = None,
) -> list[list[str]]:
    """Turns a [len(points), len(item_ids)] score matrix into top-k id lists.

    Excluded items (and items scored -inf or NaN) are never returned. Ties are
    broken by `tie_break` (higher first, e.g. popularity) when given, then by
    position in `item_ids`, so rankings are deterministic.
    """
    index = {item: i for i, item in enumerate(item_ids)}
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[np.isnan(scores)] = -np.inf
    rankings = []
    for row, point in zip(scores, points, strict=True):
        excluded = [index[i] for i in point.exclude if i in index]
        row[excluded] = -np.inf
        candidates = np.flatnonzero(np.isfinite(row))
        if candidates.size > k:
            # argpartition on the negated scores, then a stable sort of the few kept.
            kth = np.argpartition(-row[candidates], k - 1)[:k]
            threshold = row[candidates[kth]].min()
            candidates = candidates[row[candidates] >= threshold]
        keys = (
            (candidates, -row[candidates])
            if tie_break is None
            else (
                candidates,
                -tie_break[candidates],
                -row[candidates],
            )
        )
        order = candidates[np.lexsort(keys)][:k]
        rankings.append([item_ids[i] for i in order])
    return rankings
