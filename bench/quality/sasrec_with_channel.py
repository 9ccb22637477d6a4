"""SASRec plus the interest model's co-interaction channel: does the channel help any model?

Fits the SASRec baseline (config below: the one its grid chose on this machine in session 14)
per seed, adds `trainer.co_interaction_channel` scores (the same neighbours, half-life and
validation rule as the interest model; a wider weight grid, as SASRec's logits have another
scale) and reports validation and test NDCG@10 with and without it. The SASRec fits are those
of `python -m bench.quality --models sasrec` on the same machine (training is deterministic per
machine and seed), so the "without" column repeats that entry.

    .venv/bin/python -m bench.quality.sasrec_with_channel --seeds 5
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.quality.data import LeaveOneOutSplit, PredictionPoint, load_movielens_100k
from bench.quality.sasrec import SASRec
from pipeline.components.co_interaction import neighbours_of_histories
from schemas.graph import recent_item_ids
from schemas.signatures import RECENT_ITEMS
from trainer.co_interaction_channel import CoInteractionChannel, choose_weight
from trainer.config import TrainerConfig

SASREC_CONFIG = {"hidden": 64, "blocks": 2, "dropout": 0.2, "lr": 0.003}
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
OUTPUT = "bench/results/sasrec_co_interaction_channel.json"


def _channel_inputs(
    split: LeaveOneOutSplit, channel: CoInteractionChannel, points: list[PredictionPoint]
) -> tuple[np.ndarray, list[list[int]], list[int]]:
    column = {item_id: i for i, item_id in enumerate(split.item_ids)}
    rows = np.array([[column.get(i, -1) + 1 for i in recent_item_ids(p.window, RECENT_ITEMS)] for p in points])
    channel_scores = channel.unweighted_scores(rows).numpy()[:, 1:]
    seen = [[column[i] for i in p.exclude if i in column] for p in points]
    return channel_scores, seen, [column[p.target_item] for p in points]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    split = load_movielens_100k()
    histories = ([e.item_id for e in split.train.get(u, [])] for u in split.users)
    channel = CoInteractionChannel(
        split.item_ids, neighbours_of_histories(histories), TrainerConfig().co_interaction_half_life
    )
    validation = _channel_inputs(split, channel, split.eval_points)
    test = _channel_inputs(split, channel, split.test_points)
    results = {}
    for seed in range(args.seeds):
        model = SASRec(SASREC_CONFIG)
        model.fit(split, seed)
        weight, by_weight = choose_weight(model.scores(split.eval_points), *validation, WEIGHT_GRID)
        test_scores = model.scores(split.test_points)
        without = choose_weight(test_scores, *test, (0.0,))[1][0.0]
        with_channel = choose_weight(test_scores, *test, (weight,))[1][weight]
        results[seed] = {"weight": weight, "val": by_weight, "test_without": without, "test_with": with_channel}
        print(
            f"[sasrec+channel] seed {seed} weight {weight} test ndcg@10 {without:.4f} -> {with_channel:.4f}", flush=True
        )
    with open(args.output, "w") as f:
        json.dump({"sasrec_config": SASREC_CONFIG, "weight_grid": WEIGHT_GRID, "seeds": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
