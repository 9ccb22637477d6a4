"""Runs registered recommenders on the leave-one-out split and writes quality.json.

For each model: if its grid has more than one config, every config is fitted
with seed 0 and scored on the validation points; the config with the best
validation NDCG@10 is kept (the first one on ties). The chosen config is then
fitted once per seed (seed 0 reuses the tuning fit) and scored on the
validation and test points and on the cold-item slice of the test points.
Under the item cold-start protocol (`LeaveOneOutSplit.without_items`) each fit
also ranks the withheld items among themselves at the points whose target is
one of them (`cold_start_validation`, `cold_start_test` in `per_seed`).

Adding a model: `register("interest_graph", ModelSpec(factory, grid))`, where
`factory(config)` returns an object with `fit(split, seed) -> FitInfo`,
`rank(points, k) -> list[list[item_id]]` and `params` (see
`bench.quality.Recommender`). `fit` receives the whole `LeaveOneOutSplit`:
per-user training events with timestamps, types, values and text, the
validation points for early stopping, and the catalog.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bench import REPO_ROOT
from bench.quality import FitInfo, ModelSpec, Recommender, ScoringVariants, ranks
from bench.quality.data import DEFAULT_COLD_THRESHOLD, LeaveOneOutSplit, PredictionPoint
from trainer.metrics import MAX_CUTOFF, METRIC_NAMES, ranking_metrics

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "quality.json")
QUICK_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "quality.quick.json")
SELECTION_METRIC = "ndcg@10"
# Prefix of a fit's rankings among the withheld items (`cold_start_validation`, `cold_start_test`).
COLD_START = "cold_start"
# Keys of `protocol` that must agree for two runs to share one results file.
PROTOCOL_KEYS = (
    "dataset",
    "users",
    "items",
    "events",
    "window",
    "eval_points",
    "test_points",
    "cold_threshold",
    "cold_start_items",
)


def _popularity(config: Mapping[str, Any]) -> Recommender:
    from bench.quality.popularity import Popularity

    return Popularity(config)


def _item_cooccurrence(config: Mapping[str, Any]) -> Recommender:
    from bench.quality.item_cooccurrence import ItemCooccurrence

    return ItemCooccurrence(config)


def _sasrec(config: Mapping[str, Any]) -> Recommender:
    from bench.quality.sasrec import SASRec

    return SASRec(config)


def _product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    grid: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        grid = [{**point, name: value} for point in grid for value in values]
    return grid


COOCCURRENCE_GRID = _product(neighbourhood=[5, 20, 50, None], half_life=[1, 3, 10], alpha=[0.5, 0.75, 1.0])
SASREC_GRID = _product(hidden=[64], blocks=[1, 2], dropout=[0.2, 0.5], lr=[1e-3, 3e-3])

REGISTRY: dict[str, ModelSpec] = {
    "popularity": ModelSpec(_popularity, description="most popular unseen items by training-event count (no knobs)"),
    "item_cooccurrence": ModelSpec(
        _item_cooccurrence,
        grid=COOCCURRENCE_GRID,
        description="item-to-item co-occurrence within a neighbourhood of the training history, "
        "normalised by n_i^alpha n_j^(1-alpha), summed over the recency-weighted input window",
    ),
    "sasrec": ModelSpec(
        _sasrec,
        grid=SASREC_GRID,
        description="SASRec-style causal self-attention (tf_keras), tied item embeddings, full-softmax "
        "cross-entropy on every training position, early stopping on validation NDCG@10 (patience 10)",
        quick={"max_epochs": 2, "patience": 1},
    ),
}


def _interest_graph(config: Mapping[str, Any]) -> Recommender:
    from bench.quality.interest_model import InterestGraphModel

    return InterestGraphModel(config)


_INTEREST_GRAPH = "this project's model: frozen BERT item text + TF-GNN message passing over the interest subgraph"
_INTEREST_QUICK = {"epochs": 1}
# The export-time rare-item lift (trainer/rare_item_boost.py) is on in the default and off in every
# other entry: the ablations and variants compare model parts with each other and with
# `interest_graph_no_rare_item_lift`, not a ranking rule.
_UNLIFTED = {"rare_item_boost": 0.0}
# The ablations and variants were measured on the single-interest model, the default until four
# interests were chosen on validation (session 9); they stay on it, so that each is compared with
# `interest_graph_single_interest` and a rerun reproduces it.
_ONE_INTEREST = {"num_interests": 1}
# Until session 16 the defaults trained up to 20 epochs (then 12, now 10); the entries measured then keep that
# setting, so that a rerun reproduces them.
_UNTIL_SESSION_16 = {"epochs": 20}
# Sessions 16-17 trained up to 12 (now 10); the ablations of the default measured then keep that.
_SESSIONS_16_TO_17 = {"epochs": 12}
REGISTRY["interest_graph"] = ModelSpec(
    _interest_graph,
    grid=[{}],
    description=_INTEREST_GRAPH + " (defaults: event <-> event attention in the window, one event -> user attention"
    " round, four interests each with its own attention over the events, long-term memory, the co-interaction"
    " channel, 1024 sampled negatives, the rare-item lift at strength 1.25)",
    quick=_INTEREST_QUICK,
)
REGISTRY["interest_graph_no_rare_item_lift"] = ModelSpec(
    _interest_graph,
    grid=[{**_UNTIL_SESSION_16, **_UNLIFTED}],
    description=_INTEREST_GRAPH + " (defaults, without the export-time rare-item lift)",
    quick=_INTEREST_QUICK,
)
REGISTRY["interest_graph_single_interest_lifted"] = ModelSpec(
    _interest_graph,
    grid=[{**_UNTIL_SESSION_16, **_ONE_INTEREST}],
    description=_INTEREST_GRAPH + " with one interest vector, plus the rare-item lift: the shipped default until"
    " four interests were chosen on validation",
    quick=_INTEREST_QUICK,
)
# The model's ablations and variants, each trained with the pipeline's own code (TrainerConfig overrides).
for _name, _config, _what in (
    (
        "interest_graph_single_interest",
        {},
        " with a single interest vector: the single-interest ablation, and the base of the entries below",
    ),
    (
        "interest_graph_256_negatives",
        {"num_sampled": 256},
        " with 256 sampled negatives (the default until the tuning grid chose 1024 on validation)",
    ),
    (
        "interest_graph_no_event_context",
        {"event_context_blocks": 0},
        " without the event <-> event attention: events pooled into the user one by one",
    ),
    (
        "interest_graph_constant_learning_rate",
        {"learning_rate_plateau_factor": 1.0},
        " without the learning-rate decay on validation plateaus",
    ),
    (
        "interest_graph_exact_softmax",
        {"num_sampled": 0},
        " trained with the exact softmax over the whole catalog instead of 1024 sampled negatives",
    ),
    (
        "interest_graph_co_interactions",
        {"co_interaction_neighbours": 10},
        " plus an item <-> item round over 10 co-interaction neighbours per item",
    ),
    ("interest_graph_two_rounds", {"message_passing_rounds": 2}, " with a second, query-driven event -> user round"),
    ("interest_graph_category_round", {"use_categories": True}, " plus a category -> item message-passing round"),
    ("interest_graph_no_text", {"use_text": False}, " without the BERT text view of items"),
    ("interest_graph_no_time", {"use_time": False}, " without the event time encoding"),
    ("interest_graph_no_memory", {"use_memory": False}, " without the long-term memory of older events"),
    (
        "interest_graph_sequence_only",
        {"message_passing_rounds": 0, "use_memory": False},
        " as a sequence model only: the latest event's in-window context is the user's state"
        " (no event -> user graph attention, no long-term memory)",
    ),
):
    REGISTRY[_name] = ModelSpec(
        _interest_graph,
        grid=[{**_UNTIL_SESSION_16, **_UNLIFTED, **_ONE_INTEREST, **_config}],
        description=_INTEREST_GRAPH + _what + (" (one interest)" if _config else ""),
        quick=_INTEREST_QUICK,
    )


# Ablations of the shipped default itself (four interests, the lift, the co-interaction channel, the
# memory), since session 15, when the harness began to rank with the long-term memory the model was
# trained with (before, it ranked the window only, so the memory ablations above compared two
# window-only rankings).
for _name, _config, _what in (
    ("interest_graph_default_no_memory", {"use_memory": False}, " without the long-term memory's readout"),
    ("interest_graph_default_single_interest", {"num_interests": 1}, " with a single interest vector"),
    ("interest_graph_default_no_text", {"use_text": False}, " without the BERT text view of items"),
    ("interest_graph_default_no_time", {"use_time": False}, " without the event time encoding"),
    (
        "interest_graph_default_sequence_only",
        {"message_passing_rounds": 0},
        " as a sequence model only: the latest event's in-window context is the user's state, no event -> user"
        " graph attention (the interests' own attention pooling and the channel stay)",
    ),
):
    REGISTRY[_name] = ModelSpec(
        _interest_graph,
        grid=[{**_SESSIONS_16_TO_17, **_config}],
        description=_INTEREST_GRAPH + " (the shipped defaults," + _what + ")",
        quick=_INTEREST_QUICK,
    )


# A fix tried in session 18 for the several interests, which cost nothing when removed: the interests share
# one core, so that one interest is the case whose poolings are silent; with four and with two interests.
# Both measured level with the default and with one interest, and the default was kept.
REGISTRY["interest_graph_shared_interest_core"] = ModelSpec(
    _interest_graph,
    grid=[{"shared_interest_core": True}],
    description=_INTEREST_GRAPH + " (the shipped defaults, with the four interests sharing one core vector, the"
    " user round's state plus the memory's readout, each adding its own attention pooling of the events)",
    quick=_INTEREST_QUICK,
)
REGISTRY["interest_graph_shared_interest_core_2"] = ModelSpec(
    _interest_graph,
    grid=[{"shared_interest_core": True, "num_interests": 2}],
    description=_INTEREST_GRAPH + " (the shipped defaults, with two interests sharing one core vector, each adding"
    " its own attention pooling of the events)",
    quick=_INTEREST_QUICK,
)


# A fix tried in session 19 for the same: an item's score is a soft maximum over the interests (at
# temperature 1, exp(score) sums exp over the interests), so every interest learns from every item.
REGISTRY["interest_graph_soft_interests"] = ModelSpec(
    _interest_graph,
    grid=[{"interest_temperature": 1.0}],
    description=_INTEREST_GRAPH + " (the shipped defaults, with an item scored by the soft maximum, logsumexp,"
    " of its matches with the four interests instead of the best one)",
    quick=_INTEREST_QUICK,
)


# Session 20's and 22's ablations of the shipped default, on its current settings (no epoch pin). The sequence-only
# ablation above keeps the interests' own attention pooling of the events, and the single-interest one keeps the
# event -> user round: each removes one of two attentions from the events to the user and leaves the other. The
# first entry removes both: the user's state is the latest event's in-window context plus the memory's readout,
# as in SASRec. The second removes the third attention over the events, among themselves (`EventContext`), last
# ablated on the one-interest model before the channel (`interest_graph_no_event_context`).
for _name, _config, _what in (
    (
        "interest_graph_no_event_attention",
        {"message_passing_rounds": 0, "num_interests": 1},
        "with no attention from the events to the user: no event -> user round and one interest, so no interest"
        " pools the events either; the latest event's in-window context plus the memory's readout is the user's"
        " state; the channel stays",
    ),
    (
        "interest_graph_no_event_to_event_attention",
        {"event_context_blocks": 0},
        "without the event <-> event attention within the window: each event enters the event -> user round and"
        " the interests' poolings on its own",
    ),
    # Session 22's, on the same footing (up to 10 epochs, as the default's second measurement in
    # `quality_paired.json`), for the paired test: the sessions 16-17 entries above trained up to 12 epochs, and
    # one of their single-interest fits restored its 12th.
    ("interest_graph_ablation_single_interest", {"num_interests": 1}, "with a single interest vector"),
    ("interest_graph_ablation_no_text", {"use_text": False}, "without the BERT text view of items"),
    ("interest_graph_ablation_no_time", {"use_time": False}, "without the event time encoding"),
    # Session 25's: the graph attention had only the unpaired sessions 16-19 measurement.
    (
        "interest_graph_ablation_sequence_only",
        {"message_passing_rounds": 0},
        "read as a sequence only: no event -> user graph attention; the interests' own attention pooling and"
        " the channel stay",
    ),
):
    REGISTRY[_name] = ModelSpec(
        _interest_graph,
        grid=[_config],
        description=_INTEREST_GRAPH + " (the shipped defaults, " + _what + ")",
        quick=_INTEREST_QUICK,
    )


# A tuning budget for the model (4 points, chosen on validation NDCG@10 like SASRec's 8); it ran on
# the single-interest model.
INTEREST_GRAPH_GRID = [
    {**_UNTIL_SESSION_16, **point}
    for point in _product(learning_rate=[1e-3, 2e-3], num_sampled=[256, 1024], rare_item_boost=[0.0], num_interests=[1])
]
REGISTRY["interest_graph_tuned"] = ModelSpec(
    _interest_graph,
    grid=INTEREST_GRAPH_GRID,
    description=_INTEREST_GRAPH + " (single interest, with learning rate and negatives tuned on validation)",
    quick=_INTEREST_QUICK,
)


# The event-context dropout: until the fix that passes the training flag to `InterestEncoder.encode`,
# the model's custom train_step never switched it on, so every interest_graph entry measured before
# trained without it (rate 0 in effect; a rate-0 Dropout draws no random numbers, so those fits are
# what rate 0 gives now). Its rate is tuned here on the shipped default, on validation at seed 0.
REGISTRY["interest_graph_event_dropout"] = ModelSpec(
    _interest_graph,
    grid=[{**_UNTIL_SESSION_16, **point} for point in _product(event_context_dropout=[0.2, 0.5])],
    description=_INTEREST_GRAPH + " (defaults, with the event-context dropout switched on in training; rate"
    " tuned on validation)",
    quick=_INTEREST_QUICK,
)


# The learning-rate and stopping rules read a noisy signal (validation NDCG@10 over 943 points): with
# a decay after every epoch that is not the best and a stop after three, fits of the default that
# stopped at epoch 4-5 scored lower on test than those that trained on (seeds 0-4). This entry decays
# only after two such epochs in a row and stops after five, on the shipped default.
REGISTRY["interest_graph_patient_schedule"] = ModelSpec(
    _interest_graph,
    grid=[{**_UNTIL_SESSION_16, "learning_rate_plateau_patience": 2, "early_stopping_patience": 5}],
    description=_INTEREST_GRAPH + " (defaults, with a learning-rate decay after two epochs without a better"
    " validation NDCG@10 instead of one, and early stopping after five instead of three)",
    quick=_INTEREST_QUICK,
)


def register(name: str, spec: ModelSpec) -> None:
    """Adds (or replaces) a model the harness can run."""
    REGISTRY[name] = spec


def _rankings(recommender: Recommender, points: Sequence[PredictionPoint], k: int = MAX_CUTOFF) -> list[list[str]]:
    """The recommender's top-k (20) for each point, refusing any that recommends an excluded item."""
    rankings = recommender.rank(points, k)
    for point, ranked in zip(points, rankings, strict=True):
        leaked = point.exclude.intersection(ranked)
        if leaked:
            raise AssertionError(f"{type(recommender).__name__} recommended excluded items {sorted(leaked)[:5]}")
    return rankings


def rankings_among_withheld(
    recommender: Recommender, points: Sequence[PredictionPoint], split: LeaveOneOutSplit
) -> list[list[str]]:
    """Each point's top 20 among the withheld items only: the recommender's whole ranking, other items dropped.

    A never-seen item rarely reaches a full top 20 against the established ones, so the full ranking says
    little about how well a model orders new items among themselves: what a "new arrivals" shelf shows.
    """
    rankings = _rankings(recommender, points, len(split.item_ids))
    return [[i for i in ranked if i in split.cold_start_items][:MAX_CUTOFF] for ranked in rankings]


def evaluate(recommender: Recommender, points: Sequence[PredictionPoint]) -> dict[str, float]:
    """`ranking_metrics` of the recommender's top-20 on the points (empty dict for no points)."""
    if not points:
        return {}
    return ranking_metrics(_rankings(recommender, points), [[p.target_item] for p in points])


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def _summarise(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {name: mean_std([m[name] for m in per_seed]) for name in METRIC_NAMES if per_seed and name in per_seed[0]}


def cold_start_points(split: LeaveOneOutSplit) -> dict[str, list[int]]:
    """Per split ("validation", "test"), the indices of the points whose target is a withheld item."""
    scored = {"validation": split.eval_points, "test": split.test_points}
    return {
        part: [i for i, p in enumerate(points) if p.target_item in split.cold_start_items]
        for part, points in scored.items()
    }


def scored_points(split: LeaveOneOutSplit) -> dict[str, list[PredictionPoint]]:
    """Every set of points a fit is scored on, by name: "validation" and "test" and, when items are withheld,
    the points whose target is one of them (`cold_start_validation`, `cold_start_test`; ranked among the
    withheld items)."""
    scored = {"validation": split.eval_points, "test": split.test_points}
    if split.cold_start_items:
        for part, indices in cold_start_points(split).items():
            scored[f"{COLD_START}_{part}"] = [scored[part][i] for i in indices]
    return scored


def protocol_of(split: LeaveOneOutSplit, cold_threshold: int, dataset: str) -> dict[str, Any]:
    n_events = sum(len(v) for v in split.train.values()) + len(split.eval_points) + len(split.test_points)
    protocol = {
        "dataset": dataset,
        "users": len(split.users),
        "items": len(split.item_ids),
        "events": n_events,
        "train_events": sum(len(v) for v in split.train.values()),
        "window": split.window,
        "eval_points": len(split.eval_points),
        "test_points": len(split.test_points),
        "cold_threshold": cold_threshold,
        "split": "per-user chronological leave-one-out, events sorted by schemas.graph.event_order "
        "(timestamp, then event_id): last event test, the one before validation, the rest training "
        "(the pipeline GraphBuilder's split)",
        "ranking": "full ranking over every catalog item the user has not interacted with before the "
        "predicted event (earlier in event_order); one target per point",
        "input": f"select_event_window: the user's last {split.window} events strictly before the "
        "predicted event's timestamp; the interest model also gets the older ones in its long-term memory "
        "(since session 15)",
        "ties": {
            **split.tie_stats(),
            "note": "an earlier event with the same timestamp as the target is excluded from the ranking "
            "but is not part of the input (nothing at or after t is visible)",
        },
        "metrics": list(METRIC_NAMES),
        "aggregation": "mean and sample std (ddof=1) over seeds; train_s is the mean fit time per seed",
        "tuning": f"every grid config fitted with seed 0, chosen by validation {SELECTION_METRIC}; then each "
        "seed fitted with the chosen config (seed 0 reuses the tuning fit)",
        "cold_slice": f"test points whose target item had fewer than {cold_threshold} training interactions",
    }
    if split.cold_start_items:
        protocol["cold_start_items"] = {
            "definition": "item cold start: every event of these items left the training events and every "
            "point's input (windows selected again from the rest), so a model meets them first as targets; "
            "they stay candidates. `points` are the validation and test points whose target is one of them",
            "items": sorted(split.cold_start_items),
            "points": cold_start_points(split),
        }
    return protocol


def cold_start_slice(results: Mapping[str, Any], positions: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A model's metrics on the cold-start points, ranked two ways.

    Args:
      results: a results file's content whose protocol withholds items.
      positions: its positions file's content (`bench.quality.ranks`).
      name: the model.

    Returns:
      `full_ranking`: the points' share of the full ranking's metrics (from the fits' target positions);
      `among_withheld`: the ranking among the withheld items only (`rankings_among_withheld`). Each holds
      test metrics (mean and std over the entry's seeds) and the same under `validation`.
    """
    points = results["protocol"]["cold_start_items"]["points"]
    fits = positions["models"][name]
    per_seed: dict[str, list[dict[str, float]]] = {part: [] for part in ranks.SPLITS}
    for record in results["models"][name]["per_seed"]:
        for part in ranks.SPLITS:
            found = ranks.decode(fits[str(record["seed"])][part])[points[part]]
            per_seed[part].append({m: float(ranks.point_values(found, m).mean()) for m in METRIC_NAMES})
    among = {part: [r[f"{COLD_START}_{part}"] for r in results["models"][name]["per_seed"]] for part in ranks.SPLITS}
    return {
        "full_ranking": {**_summarise(per_seed["test"]), "validation": _summarise(per_seed["validation"])},
        "among_withheld": {**_summarise(among["test"]), "validation": _summarise(among["validation"])},
    }


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python {platform.python_version()}"


def _fit(
    spec: ModelSpec,
    name: str,
    config: Mapping[str, Any],
    split: LeaveOneOutSplit,
    seed: int,
    tag: str,
    settings: Mapping[str, Any] | None = None,
) -> tuple[Recommender, FitInfo]:
    """Builds and fits one recommender; with `settings`, refuses (before fitting) one that would differ."""
    recommender = spec.factory(dict(config))
    if settings is not None:
        now = recommender.settings
        changed = sorted(
            k for k in set(now) | set(settings) if k not in now or k not in settings or now[k] != settings[k]
        )
        if changed:
            raise ValueError(
                f"{name}'s entry was fitted with other settings than {json.dumps(dict(config))} gives now "
                f"({', '.join(f'{k}: {settings.get(k)!r} then, {now.get(k)!r} now' for k in changed)}); "
                "pin them in its registered config"
            )
    if hasattr(recommender, "log"):
        recommender.log = lambda message: print(f"[quality] model={name} seed={seed} {tag}{message}", flush=True)
    info = recommender.fit(split, seed)
    return recommender, info


def run_model(
    name: str,
    split: LeaveOneOutSplit,
    seeds: Sequence[int],
    quick: bool = False,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
    earlier_choice: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tunes and runs one registered model.

    Args:
      name: a registered model.
      split: the leave-one-out split.
      seeds: the seeds to fit the chosen config with.
      quick: apply the entry's quick overrides and keep two grid points.
      cold_threshold: the cold-item slice's threshold.
      earlier_choice: an earlier run's grid record of this model (`quality.json`'s `grids[name]`): its
        `chosen` config is fitted without searching the grid again, to measure the same choice afresh.

    Returns:
      The model's `models`, `grids` and cold-slice entries, and `ranks`: seed -> split -> target positions.
    """
    spec = REGISTRY[name]
    grid = [{**point, **spec.quick} if quick else dict(point) for point in spec.grid]
    if quick:
        grid = grid[:2]
    if earlier_choice is not None:
        grid = [dict(earlier_choice["chosen"])]
    tuning_seed = 0
    grid_points: list[dict[str, Any]] = []
    chosen, kept = grid[0], None
    if len(grid) > 1:
        best = -np.inf
        for i, config in enumerate(grid, start=1):
            print(f"[quality] model={name} grid {i}/{len(grid)} config={json.dumps(config)}", flush=True)
            recommender, info = _fit(spec, name, config, split, tuning_seed, f"grid {i}/{len(grid)} ")
            validation = evaluate(recommender, split.eval_points)
            grid_points.append(_grid_record(config, validation, info))
            print(
                f"[quality] model={name} grid {i}/{len(grid)} val_{SELECTION_METRIC}="
                f"{validation[SELECTION_METRIC]:.4f} train_s={info.train_s:.1f}",
                flush=True,
            )
            if validation[SELECTION_METRIC] > best:
                best, chosen, kept = validation[SELECTION_METRIC], config, (recommender, info)
    cold = split.cold_items(cold_threshold)
    cold_points = [p for p in split.test_points if p.target_item in cold]
    per_seed = []
    fits: dict[int, dict[str, str]] = {}
    settings: dict[str, Any] = {}
    for seed in seeds:
        if seed == tuning_seed and kept is not None:
            recommender, info = kept
        else:
            print(f"[quality] model={name} seed={seed} fitting config={json.dumps(chosen)}", flush=True)
            recommender, info = _fit(spec, name, chosen, split, seed, "")
        settings = recommender.settings
        record, fits[seed] = _seed_record(name, recommender, info, seed, split, cold_points)
        per_seed.append(record)
        if len(grid) == 1 and seed == seeds[0]:
            grid_points.append(_grid_record(chosen, record["validation"], info))
        del recommender
    grid_entry = {
        "selection": f"validation {SELECTION_METRIC}, seed {tuning_seed}",
        "chosen": chosen,
        "points": grid_points,
    }
    if earlier_choice is not None:
        grid_entry = {**earlier_choice, "chosen": chosen, "reused": "the chosen config was not searched again"}
    return {
        "model": _model_entry(per_seed, chosen, spec.description, settings),
        "grid": grid_entry,
        "cold_items": _summarise([r["cold_items"] for r in per_seed]) if cold_points else {},
        "cold_points": len(cold_points),
        "ranks": fits,
    }


def add_seeds(
    name: str,
    entry: Mapping[str, Any],
    split: LeaveOneOutSplit,
    seeds: Sequence[int],
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
) -> dict[str, Any]:
    """Fits an existing entry's chosen config with the seeds it lacks; returns the widened run.

    Three fits cannot separate differences under about 0.01 NDCG@10 here, so
    a comparison can be widened later without refitting what is already
    measured. The grid is not searched again: the entry's `config` (the
    earlier choice) is fitted, so the added seeds are the same experiment.
    An entry that records its `settings` (every setting of its fits) is only
    widened while its config still gives those settings, so a default changed
    since cannot slip into it; older entries rely on the registry's pins.

    Args:
      name: a registered model with an entry in the results.
      entry: that entry, as in `quality.json`'s `models`.
      split: the split the entry was measured on.
      seeds: the seeds wanted; those already in the entry's `per_seed` are skipped.
      cold_threshold: as for `run_model`.

    Returns:
      `{"model": entry with every seed, "cold_items": ..., "cold_points": n, "ranks": the added seeds'
      target positions}`.
    """
    spec = REGISTRY[name]
    chosen = dict(entry["config"])
    if len(spec.grid) == 1 and dict(spec.grid[0]) != chosen:
        raise ValueError(f"{name}'s entry was made with config {chosen}, but it is registered as {spec.grid[0]}")
    cold = split.cold_items(cold_threshold)
    cold_points = [p for p in split.test_points if p.target_item in cold]
    per_seed = list(entry["per_seed"])
    done = {r["seed"] for r in per_seed}
    fits: dict[int, dict[str, str]] = {}
    for seed in (s for s in seeds if s not in done):
        print(f"[quality] model={name} seed={seed} adding a seed, config={json.dumps(chosen)}", flush=True)
        recommender, info = _fit(spec, name, chosen, split, seed, "", entry.get("settings"))
        record, fits[seed] = _seed_record(name, recommender, info, seed, split, cold_points)
        per_seed.append(record)
        del recommender
    per_seed.sort(key=lambda r: r["seed"])
    widened = {
        **entry,
        **_model_entry(per_seed, chosen, entry.get("description", spec.description), entry.get("settings")),
    }
    return {
        "model": widened,
        "cold_items": _summarise([r["cold_items"] for r in per_seed]) if cold_points else {},
        "cold_points": len(cold_points),
        "ranks": fits,
    }


def _seed_record(
    name: str,
    recommender: Recommender,
    info: FitInfo,
    seed: int,
    split: LeaveOneOutSplit,
    cold_points: Sequence[PredictionPoint],
) -> tuple[dict[str, Any], dict[str, str]]:
    """One fit's record for `per_seed`, and its target positions per split (for the ranks file)."""
    scored = scored_points(split)
    rankings = {
        part: rankings_among_withheld(recommender, points, split)
        if part.startswith(COLD_START)
        else _rankings(recommender, points)
        for part, points in scored.items()
    }
    record = {
        "seed": seed,
        "train_s": info.train_s,
        "params": info.params,
        "epochs": info.epochs,
        "best_epoch": info.best_epoch,
        "history": list(info.history),
        **{part: ranking_metrics(rankings[part], [[p.target_item] for p in scored[part]]) for part in scored},
        "cold_items": evaluate(recommender, cold_points),
    }
    if info.choices:
        record["choices"] = dict(info.choices)
    if isinstance(recommender, ScoringVariants):
        record["variants"] = {}
        for variant in recommender.scoring_variants:
            recommender.set_scoring_variant(variant)
            record["variants"][variant] = {
                "validation": evaluate(recommender, split.eval_points),
                "test": evaluate(recommender, split.test_points),
                "cold_items": evaluate(recommender, cold_points),
            }
        recommender.set_scoring_variant(None)
    test = record["test"]
    print(
        f"[quality] model={name} seed={seed} done train_s={info.train_s:.1f} params={info.params} "
        + " ".join(f"{m}={test[m]:.4f}" for m in METRIC_NAMES),
        flush=True,
    )
    return record, {part: ranks.target_positions(rankings[part], scored[part]) for part in scored}


def _model_entry(
    per_seed: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Any],
    description: str,
    settings: Mapping[str, Any] | None,
) -> dict:
    variants = {
        variant: {
            **_summarise([r["variants"][variant]["test"] for r in per_seed]),
            "validation": _summarise([r["variants"][variant]["validation"] for r in per_seed]),
            "cold_items": (
                _summarise([r["variants"][variant]["cold_items"] for r in per_seed])
                if per_seed[0]["variants"][variant]["cold_items"]
                else {}
            ),
        }
        for variant in per_seed[0].get("variants", {})
    }
    return {
        **({"variants": variants} if variants else {}),
        **_summarise([r["test"] for r in per_seed]),
        "train_s": float(np.mean([r["train_s"] for r in per_seed])),
        "params": int(per_seed[0]["params"]),
        "validation": _summarise([r["validation"] for r in per_seed]),
        "config": dict(chosen),
        **({"settings": dict(settings)} if settings is not None else {}),
        "seeds": [r["seed"] for r in per_seed],
        "description": description,
        "per_seed": list(per_seed),
    }


def _grid_record(config: Mapping[str, Any], validation: Mapping[str, float], info: FitInfo) -> dict[str, Any]:
    return {
        "config": dict(config),
        "validation": dict(validation),
        "train_s": info.train_s,
        "epochs": info.epochs,
        "best_epoch": info.best_epoch,
    }


def load_results(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def merge_results(existing: Mapping[str, Any], protocol: Mapping[str, Any], name: str, run: Mapping[str, Any]) -> dict:
    """Puts one model's run into the results, keeping other models' entries.

    When the existing file was made under a different protocol (other data,
    window or threshold), its model entries are dropped rather than mixed in.
    """
    results = json.loads(json.dumps(existing)) if existing else {}
    old_protocol = results.get("protocol", {})
    if old_protocol and any(old_protocol.get(k) != protocol.get(k) for k in PROTOCOL_KEYS):
        print("[quality] the existing results were made under another protocol; starting afresh", flush=True)
        results = {}
    results["protocol"] = dict(protocol)
    results.setdefault("models", {})[name] = run["model"]
    if "grid" in run:
        results.setdefault("grids", {})[name] = run["grid"]
    slice_entry = results.setdefault("slices", {}).setdefault(
        "cold_items",
        {"definition": protocol["cold_slice"], "threshold": protocol["cold_threshold"], "models": {}},
    )
    slice_entry["test_points"] = run["cold_points"]
    slice_entry.setdefault("models", {})[name] = run["cold_items"]
    return results


def write_results(path: str, results: Mapping[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def run_benchmark(
    split: LeaveOneOutSplit,
    models: Iterable[str],
    seeds: Sequence[int],
    output: str,
    dataset: str = "MovieLens-100k (recbole==1.2.1 wheel)",
    quick: bool = False,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
    command: str = "",
    on_model_done: Callable[[str, Mapping[str, Any]], None] | None = None,
    extend: bool = False,
    choices_from: str | None = None,
) -> dict[str, Any]:
    """Runs the models one after another, merging each into `output` as soon as it finishes.

    With `extend`, each model's existing entry in `output` gets the seeds it
    lacks (`add_seeds`) instead of being measured afresh; the run is logged
    in the entry's `added_seeds`. With `choices_from` (another results file),
    each model fits the config chosen there instead of searching its grid again.
    Every fit's target positions go to `ranks.ranks_path(output)`, for paired
    comparisons (`bench.quality.paired`).
    """
    models = list(models)
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; registered: {sorted(REGISTRY)}")
    protocol = {**protocol_of(split, cold_threshold, dataset), "quick": quick}
    fingerprints = {part: ranks.points_fingerprint(points) for part, points in scored_points(split).items()}
    earlier = _earlier_choices(choices_from, models, protocol) if choices_from else {}
    results: dict[str, Any] = load_results(output)
    for name in models:
        started = time.time()
        stamp = {
            "command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": _machine(),
        }
        if extend:
            existing = load_results(output)
            run = _extended_run(name, existing, protocol, split, seeds, cold_threshold)
            added = sorted(set(run["model"]["seeds"]) - set(existing["models"][name]["seeds"]))
            log = {"seeds": added, **stamp, "wall_s": time.time() - started}
            run["model"]["added_seeds"] = [*run["model"].get("added_seeds", []), log]
        else:
            run = run_model(
                name, split, seeds, quick=quick, cold_threshold=cold_threshold, earlier_choice=earlier.get(name)
            )
            run["model"].update(stamp, wall_s=time.time() - started)
        results = merge_results(load_results(output), protocol, name, run)
        write_results(output, results)
        positions = ranks.ranks_path(output)
        ranks.write(positions, ranks.merge(ranks.load(positions), fingerprints, name, run["ranks"], replace=not extend))
        if split.cold_start_items:
            entry = results["slices"].setdefault("cold_start_items", {"models": {}})
            entry["definition"] = protocol["cold_start_items"]["definition"]
            entry.update({f"{part}_points": len(p) for part, p in protocol["cold_start_items"]["points"].items()})
            entry["models"][name] = cold_start_slice(results, ranks.load(positions), name)
            write_results(output, results)
        print(f"[quality] model={name} written to {output} ({time.time() - started:.0f}s)", flush=True)
        if on_model_done is not None:
            on_model_done(name, results)
    return results


def _protocol_differences(earlier: Mapping[str, Any], protocol: Mapping[str, Any]) -> list[str]:
    """The protocol keys (and `quick`) on which two runs differ, so that one cannot extend or reuse the other."""
    return [k for k in (*PROTOCOL_KEYS, "quick") if earlier.get(k) != protocol.get(k)]


def _earlier_choices(path: str, models: Sequence[str], protocol: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's grid record in the results file at `path`, which must share the protocol."""
    earlier = load_results(path)
    differing = _protocol_differences(earlier.get("protocol", {}), protocol)
    if differing:
        raise ValueError(f"{path} was measured under another protocol ({', '.join(differing)} differ)")
    missing = [m for m in models if m not in earlier.get("grids", {})]
    if missing:
        raise KeyError(f"{path} has no grid choice for {missing}")
    return {m: {**earlier["grids"][m], "reused_from": os.path.relpath(path, REPO_ROOT)} for m in models}


def _extended_run(
    name: str,
    existing: Mapping[str, Any],
    protocol: Mapping[str, Any],
    split: LeaveOneOutSplit,
    seeds: Sequence[int],
    cold_threshold: int,
) -> dict[str, Any]:
    entry = existing.get("models", {}).get(name)
    if entry is None:
        raise KeyError(f"no entry for {name} to add seeds to; run it without extending first")
    differing = _protocol_differences(existing.get("protocol", {}), protocol)
    if differing:
        raise ValueError(f"{name}'s entry was measured under another protocol ({', '.join(differing)} differ)")
    return add_seeds(name, entry, split, seeds, cold_threshold)


def markdown_table(results: Mapping[str, Any]) -> str:
    """The results as the README's markdown table (test metrics, mean ± std over seeds)."""
    models = results.get("models", {})
    cold = results.get("slices", {}).get("cold_items", {}).get("models", {})
    header = ["model", *METRIC_NAMES, "cold ndcg@10", "train s", "params", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in models.items():
        cells = [name]
        cells += [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in METRIC_NAMES]
        c = cold.get(name, {}).get("ndcg@10")
        cells.append(f"{c['mean']:.4f} ± {c['std']:.4f}" if c else "n/a")
        cells += [f"{entry['train_s']:.1f}", f"{entry['params']:,}", str(len(entry.get("seeds", [])))]
        lines.append("| " + " | ".join(cells) + " |")
    cold_start = results.get("slices", {}).get("cold_start_items")
    if cold_start:
        lines += [
            "",
            f"Cold-start items ({cold_start['test_points']} test, {cold_start['validation_points']} "
            "validation points whose target was withheld):",
            "",
        ]
        header = ["model", "ranked", *(f"test {m}" for m in METRIC_NAMES), "validation ndcg@10"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, ways in cold_start["models"].items():
            for way, entry in ways.items():
                cells = [name, way, *(f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in METRIC_NAMES)]
                v = entry["validation"]["ndcg@10"]
                cells.append(f"{v['mean']:.4f} ± {v['std']:.4f}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
