"""`python -m bench.quality.rare_item_boost`: what the rare-item lift buys and costs.

The lift (`trainer.rare_item_boost`) is an export-time score offset, so one
trained model per seed serves every strength: the model is trained once with
the pipeline's defaults but the lift off (`InterestGraphModel`, as in the
harness), its served scores for every validation and test point over the
whole catalog are read once through the `score` signature, and each strength
adds its offsets to them, exactly what the exported `item_bias` would hold.
Rankings exclude the point's earlier items, as everywhere in `bench/quality`.

Reported per strength (mean and std over seeds): NDCG@10 and Recall@20 on
all validation and test points and on their cold-item slices (targets with
fewer than `cold_threshold` training interactions). `recommended_strength`
applies a rule fixed before looking at test numbers: the largest strength
whose mean validation NDCG@10 is within `max_validation_cost` (relative) of
the unlifted model's.

Writes `bench/results/rare_item_boost.json` and a picture of the trade-off
(`rare_item_boost.png`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import schemas  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from bench.quality import harness
from bench.quality.data import DEFAULT_COLD_THRESHOLD, LeaveOneOutSplit, PredictionPoint, load_movielens_100k
from bench.quality.popularity import Popularity
from trainer.config import TrainerConfig
from trainer.metrics import MAX_CUTOFF, ranking_metrics
from trainer.rare_item_boost import rare_item_lift

DEFAULT_OUTPUT = os.path.join(os.path.dirname(harness.DEFAULT_OUTPUT), "rare_item_boost.json")
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
MAX_VALIDATION_COST = 0.02
REPORTED = ("ndcg@10", "recall@20")


def lifted_rankings(
    scores: np.ndarray, lift: np.ndarray, points: Sequence[PredictionPoint], item_ids: Sequence[str], k: int
) -> list[list[str]]:
    """Top-k item ids per point of `scores + lift`, the point's earlier items excluded."""
    position = {item: i for i, item in enumerate(item_ids)}
    lifted = scores + lift[None, :]
    for row, point in enumerate(points):
        lifted[row, [position[i] for i in point.exclude if i in position]] = -np.inf
    top = np.argsort(-lifted, axis=1, kind="stable")[:, :k]
    return [[item_ids[j] for j in row if np.isfinite(lifted[r, j])] for r, row in enumerate(top)]


def _slices(split: LeaveOneOutSplit, cold_threshold: int) -> dict[str, list[PredictionPoint]]:
    cold = split.cold_items(cold_threshold)
    return {
        "validation": split.eval_points,
        "test": split.test_points,
        "validation_cold": [p for p in split.eval_points if p.target_item in cold],
        "test_cold": [p for p in split.test_points if p.target_item in cold],
    }


def _metrics(rankings: Sequence[Sequence[str]], points: Sequence[PredictionPoint]) -> dict[str, float]:
    values = ranking_metrics(rankings, [[p.target_item] for p in points])
    return {m: values[m] for m in REPORTED}


def sweep(
    split: LeaveOneOutSplit,
    seeds: Sequence[int],
    strengths: Sequence[float] = STRENGTHS,
    below: int = TrainerConfig.rare_item_boost_below,
    cold_threshold: int = DEFAULT_COLD_THRESHOLD,
    log: Any = print,
) -> dict[str, Any]:
    """Trains the default model per seed and scores every strength of the lift on its served scores."""
    from bench.quality.interest_model import InterestGraphModel

    slices = _slices(split, cold_threshold)
    lifts = {
        strength: rare_item_lift([split.train_item_counts.get(i, 0) for i in split.item_ids], strength, below)
        for strength in strengths
    }
    per_seed: dict[float, list[dict[str, dict[str, float]]]] = {strength: [] for strength in strengths}
    for seed in seeds:
        # Trained without the lift, so that every strength is added to the same bare scores.
        model = InterestGraphModel({"rare_item_boost": 0.0})
        info = model.fit(split, seed)
        log(f"[rare_item_boost] seed={seed} trained in {info.train_s:.0f}s ({info.epochs} epochs)")
        scores = {name: model.scores(points, split.item_ids) for name, points in slices.items()}
        for strength in strengths:
            rankings = {
                name: lifted_rankings(scores[name], lifts[strength], points, split.item_ids, MAX_CUTOFF)
                for name, points in slices.items()
            }
            per_seed[strength].append({name: _metrics(rankings[name], points) for name, points in slices.items()})
        log(
            f"[rare_item_boost] seed={seed} "
            + " ".join(f"{strength}:{per_seed[strength][-1]['validation']['ndcg@10']:.4f}" for strength in strengths)
        )
    popular = Popularity()
    popular.fit(split, seed=0)
    popularity = {name: _metrics(popular.rank(points, MAX_CUTOFF), points) for name, points in slices.items()}
    rows = [
        {
            "strength": strength,
            **{
                name: {m: harness.mean_std([r[name][m] for r in per_seed[strength]]) for m in REPORTED}
                for name in slices
            },
            "per_seed": per_seed[strength],
        }
        for strength in strengths
    ]
    return {
        "below": below,
        "seeds": list(seeds),
        "points": {name: len(points) for name, points in slices.items()},
        "popularity": popularity,
        "strengths": rows,
        "recommended_strength": recommended_strength(rows),
    }


def recommended_strength(rows: Sequence[Mapping[str, Any]], max_cost: float = MAX_VALIDATION_COST) -> float:
    """The largest strength whose mean validation NDCG@10 is within `max_cost` (relative) of strength 0's."""
    base = next(r for r in rows if r["strength"] == 0.0)["validation"]["ndcg@10"]["mean"]
    allowed = [r["strength"] for r in rows if r["validation"]["ndcg@10"]["mean"] >= (1 - max_cost) * base]
    return max(allowed)


def plot(result: Mapping[str, Any], path: str) -> None:
    """Left: NDCG@10 on all points; right: the cold-item slice; popularity dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strengths = [r["strength"] for r in result["strengths"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("all points", ("validation", "test")), ("cold-item slice", ("validation_cold", "test_cold")))
    for axis, (title, names) in zip(axes, panels, strict=True):
        for name, colour in zip(names, ("tab:blue", "tab:orange"), strict=True):
            mean = np.array([r[name]["ndcg@10"]["mean"] for r in result["strengths"]])
            std = np.array([r[name]["ndcg@10"]["std"] for r in result["strengths"]])
            label = f"{name.split('_')[0]} ({result['points'][name]} points)"
            axis.plot(strengths, mean, marker="o", color=colour, label=label)
            axis.fill_between(strengths, mean - std, mean + std, color=colour, alpha=0.2)
            axis.axhline(result["popularity"][name]["ndcg@10"], color=colour, linestyle="--", linewidth=1)
        axis.axvline(result["recommended_strength"], color="grey", linestyle=":", label="recommended strength")
        axis.set_title(f"{title} (popularity dashed)")
        axis.set_xlabel(f"rare-item lift strength (items with < {result['below'] - 1} training interactions)")
        axis.set_ylabel("NDCG@10, mean ± std over seeds")
        axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.rare_item_boost", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), default 3")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="results file (its .png is drawn beside it)")
    args = parser.parse_args(argv)
    split = load_movielens_100k()
    result = sweep(split, list(range(args.seeds)), log=lambda line: print(line, flush=True))
    result["command"] = ".venv/bin/python -m bench.quality.rare_item_boost " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    result["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    harness.write_results(args.output, result)
    plot(result, os.path.splitext(args.output)[0] + ".png")
    summary = {
        r["strength"]: {name: round(r[name]["ndcg@10"]["mean"], 4) for name in result["points"]}
        for r in result["strengths"]
    }
    print(json.dumps({"recommended_strength": result["recommended_strength"], "ndcg@10": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
