"""Paired comparison of two entries of one results file, point by point.

Every entry is scored on the same 943 validation and 943 test points. Its
seed mean and std say how much the fit varies, but not how much the points
themselves could have fallen otherwise: a point's NDCG@10 is 0 on most
points, so one set's mean has a standard error near 0.008, larger than most
ablation gaps. Comparing two entries point by point removes what the points
share (easy users, hard users) and leaves the error of the difference.

For entries A and B with per-seed, per-point values a[s, i] and b[s, i] (from
their target positions, `bench.quality.ranks`):

- the difference is mean(a) - mean(b);
- its standard error adds the points' error and each entry's seed error:
  se^2 = var_i(d_i) / n + var_s(mean_i a[s, i]) / S_a + var_s(mean_i b[s, i]) / S_b,
  where d_i = mean_s a[s, i] - mean_s b[s, i]. d_i keeps a share of the seed
  noise as well, so the sum errs on the large side;
- the 95 % interval is the difference +- 1.96 se (943 points: the normal
  approximation holds), and z = difference / se.

`python -m bench.quality.paired --base interest_graph --models sasrec,...`
compares each model with the base on test and validation, writes the
comparisons to `bench/results/quality_paired_tests.json` and draws them beside it (.png).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench import REPO_ROOT
from bench.quality import harness, ranks
from bench.quality.category_spread import spread_thirds
from bench.quality.data import LeaveOneOutSplit, load_movielens_100k
from trainer.metrics import METRIC_NAMES

DEFAULT_RESULTS = os.path.join(REPO_ROOT, "bench", "results", "quality_paired.json")
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "quality_paired_tests.json")
Z_95 = 1.959963984540054
METHOD = (
    "A - B = mean of A's per-point values (over seeds and points) - the same of B, on the same points; "
    "se^2 = var_i(d_i)/n + var_s(A's seed means)/S_A + var_s(B's seed means)/S_B, with d_i the point's seed-averaged "
    "A - B (it keeps a share of the seed noise too, so se errs on the large side); 95 % interval = A - B +- 1.96 se; "
    "p two-sided, normal"
)
# The per-seed means recomputed from the positions must equal the recorded ones: the positions then belong to
# the entry's fits. Only float summation order separates the two.
_TOLERANCE = 1e-9


def entry_positions(results: Mapping[str, Any], positions: Mapping[str, Any], name: str, split: str) -> np.ndarray:
    """An entry's per-point target positions, one row per seed, checked against its recorded metrics.

    Args:
      results: a results file's content (`quality.json`'s shape).
      positions: its ranks file's content.
      name: the entry.
      split: "validation" or "test".

    Returns:
      A [seeds, points] int array, seeds in the entry's order; `ranks.point_values` turns it into a metric's
      per-point values.

    Raises:
      KeyError: the entry, or positions for any of its seeds, are missing.
      ValueError: a seed's positions do not give the entry's recorded metrics (they belong to other fits).
    """
    entry = results["models"][name]
    fits = positions.get("models", {}).get(name, {})
    rows = []
    for record in entry["per_seed"]:
        seed = str(record["seed"])
        if seed not in fits:
            raise KeyError(f"{name} seed {seed} has no target positions; it was fitted before they were recorded")
        found = ranks.decode(fits[seed][split])
        for each in METRIC_NAMES:
            recomputed, recorded = float(ranks.point_values(found, each).mean()), record[split][each]
            if abs(recomputed - recorded) > _TOLERANCE:
                raise ValueError(
                    f"{name} seed {seed}: the {split} positions give {each} {recomputed:.6f}, the entry records "
                    f"{recorded:.6f}; the positions belong to other fits"
                )
        rows.append(found)
    return np.stack(rows)


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The difference of two entries' means on the same points, with its standard error.

    Args:
      a: [seeds_a, points] per-point values of entry A.
      b: [seeds_b, points] per-point values of entry B, the same points in the same order.

    Returns:
      `difference` (A minus B), `relative` (difference / mean of B), `se` and its parts
      `se_points` and `se_seeds`, the 95 % interval `low`-`high`, `z`, the two-sided normal `p`,
      and the counts of points where A's seed-averaged value is higher (`points_a_higher`) or lower.
    """
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the entries were scored on {a.shape[1]} and {b.shape[1]} points")
    d = a.mean(axis=0) - b.mean(axis=0)
    n = d.size
    difference = float(d.mean())
    se_points = float(d.std(ddof=1) / math.sqrt(n))
    seed_var = sum(float(x.mean(axis=1).var(ddof=1)) / x.shape[0] if x.shape[0] > 1 else 0.0 for x in (a, b))
    se = math.sqrt(se_points**2 + seed_var)
    if se > 0:
        z = difference / se
    else:
        z = math.copysign(math.inf, difference) if difference else 0.0
    base = float(b.mean())
    return {
        "a_mean": float(a.mean()),
        "b_mean": base,
        "difference": difference,
        "relative": difference / base if base else math.nan,
        "se": se,
        "se_points": se_points,
        "se_seeds": math.sqrt(seed_var),
        "low": difference - Z_95 * se,
        "high": difference + Z_95 * se,
        "z": z,
        "p": math.erfc(abs(z) / math.sqrt(2)),
        "points_a_higher": int((d > 0).sum()),
        "points_a_lower": int((d < 0).sum()),
        "points": n,
        "seeds_a": int(a.shape[0]),
        "seeds_b": int(b.shape[0]),
    }


def compare(
    results: Mapping[str, Any],
    positions: Mapping[str, Any],
    base: str,
    models: Sequence[str],
    metrics: Sequence[str] = ("ndcg@10",),
    splits: Sequence[str] = ranks.SPLITS,
    groups: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """`paired_difference` of each model (A) against the base (B), per split and metric.

    Args:
      splits: which rankings: "validation" and "test", or, in a cold-start results file, the rankings among
        the withheld items ("cold_start_validation", "cold_start_test").
      groups: optionally, split -> group name -> indices of that split's points (e.g.
        `category_spread.spread_thirds`); each group is then compared on its own, and its name is kept in
        the comparison's `points_group`.
    """
    found = {(n, split): entry_positions(results, positions, n, split) for n in {base, *models} for split in splits}
    comparisons = []
    for name in models:
        for split in splits:
            for group, indices in (groups[split] if groups else {None: slice(None)}).items():
                for metric in metrics:
                    a = ranks.point_values(found[name, split][:, indices], metric)
                    b = ranks.point_values(found[base, split][:, indices], metric)
                    where = {"points_group": group} if group else {}
                    comparisons.append(
                        {"a": name, "b": base, "split": split, **where, "metric": metric, **paired_difference(a, b)}
                    )
    return comparisons


def category_spread_groups(split: LeaveOneOutSplit, positions: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Each split's points in thirds by the category spread of their input windows, for `compare`'s `groups`.

    Args:
      split: the split the results were measured on (its catalog gives the categories).
      positions: the results' ranks file; its points' fingerprints must be the split's.

    Raises:
      ValueError: the positions were scored on other points (another window, another dataset, withheld items).
    """
    scored = harness.scored_points(split)
    groups = {}
    for name in ranks.SPLITS:
        points = scored[name]
        if positions.get("points", {}).get(name) != ranks.points_fingerprint(points):
            raise ValueError(f"the {name} positions were scored on other points than this split's")
        groups[name] = spread_thirds(points, split.items)
    return groups


def _panel(comparison: Mapping[str, Any]) -> str:
    group = comparison.get("points_group")
    return f"{comparison['split']}, {group}" if group else comparison["split"]


def markdown(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """The comparisons as a markdown table."""
    header = ["A", "B", "points", "metric", "A", "B", "A - B", "95 % interval", "z", "p", "points A > B / A < B"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in comparisons:
        cells = [
            c["a"],
            c["b"],
            _panel(c),
            c["metric"],
            f"{c['a_mean']:.4f}",
            f"{c['b_mean']:.4f}",
            f"{c['difference']:+.4f} ({c['relative']:+.1%})",
            f"{c['low']:+.4f} to {c['high']:+.4f}",
            f"{c['z']:+.2f}",
            f"{c['p']:.3f}",
            f"{c['points_a_higher']} / {c['points_a_lower']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(comparisons: Sequence[Mapping[str, Any]], path: str) -> None:
    """Each comparison's difference with its 95 % interval, one panel per split; zero dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(_panel(c) for c in comparisons))
    rows = list(dict.fromkeys((c["a"], c["b"], c["metric"]) for c in comparisons))
    columns = min(len(panels), 3)
    panel_rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(
        panel_rows,
        columns,
        figsize=(5 * columns, panel_rows * (0.6 * len(rows) + 1.6)),
        sharey=True,
        sharex=True,
        squeeze=False,
    )
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        for y, (a, b, metric) in enumerate(rows):
            c = next(c for c in comparisons if (c["a"], c["b"], c["metric"], _panel(c)) == (a, b, metric, panel))
            colour = "tab:green" if c["low"] > 0 else "tab:red" if c["high"] < 0 else "tab:grey"
            axis.errorbar(
                c["difference"],
                y,
                xerr=[[c["difference"] - c["low"]], [c["high"] - c["difference"]]],
                fmt="o",
                color=colour,
                capsize=4,
            )
        axis.axvline(0.0, color="black", linestyle=":", linewidth=1)
        axis.set_ylim(len(rows) - 0.5, -0.5)
        axis.set_yticks(range(len(rows)), [f"{a}\n- {b} ({metric})" for a, b, metric in rows], fontsize="small")
        points = next(c["points"] for c in comparisons if _panel(c) == panel)
        axis.set_title(f"{panel} ({points} points)")
        axis.set_xlabel("A - B, with its 95 % interval (points and seeds)")
        axis.tick_params(labelbottom=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.paired", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="entry B, compared with each of --models")
    parser.add_argument("--models", required=True, help="comma-separated entries A")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="results file; its positions file lies beside it")
    parser.add_argument("--metrics", default="ndcg@10", help=f"comma-separated, from: {', '.join(METRIC_NAMES)}")
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help="where the comparisons are written (their picture beside it, .png)"
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="compare the rankings among the withheld items, on the points whose target is one of them (results "
        "made with bench.quality --cold-start-items)",
    )
    parser.add_argument(
        "--by-category-spread",
        action="store_true",
        help="compare within thirds of each split's points, by how widely the user's input window spreads over "
        "categories (bench.quality.category_spread): where several interests should matter",
    )
    args = parser.parse_args(argv)
    if args.cold_start and args.by_category_spread:
        parser.error("--by-category-spread reads the spine's points; it does not combine with --cold-start")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        parser.error(f"unknown metric(s) {unknown}; known: {list(METRIC_NAMES)}")
    with open(args.results, encoding="utf-8") as f:
        results = json.load(f)
    positions = ranks.load(ranks.ranks_path(args.results))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    splits = ranks.SPLITS
    if args.cold_start:
        if "cold_start_items" not in results.get("protocol", {}):
            parser.error(f"{args.results} withholds no items (made without bench.quality --cold-start-items)")
        splits = tuple(f"{harness.COLD_START}_{part}" for part in ranks.SPLITS)
    groups = None
    if args.by_category_spread:
        try:
            groups = category_spread_groups(load_movielens_100k(window=results["protocol"]["window"]), positions)
        except ValueError as error:
            parser.error(f"{args.results}: {error}")
    comparisons = compare(results, positions, args.base, models, metrics, splits, groups)
    print(markdown(comparisons))
    command = ".venv/bin/python -m bench.quality.paired " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    record = {
        "command": command.strip(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": os.path.relpath(os.path.abspath(args.results), REPO_ROOT),
        "method": METHOD,
        "rankings": "among the withheld items, on the cold-start points" if args.cold_start else "full",
        "points_groups": "thirds of each split's points by the category spread of their input windows "
        "(bench.quality.category_spread)"
        if groups
        else "all",
        "comparisons": comparisons,
    }
    harness.write_results(args.output, record)
    plot(comparisons, os.path.splitext(args.output)[0] + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
