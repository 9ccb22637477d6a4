"""`python -m bench.quality`: the quality benchmark on MovieLens-100k (see README.md here)."""

from __future__ import annotations

import argparse
import shlex
import sys

import schemas  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from bench.quality import harness
from bench.quality.data import DEFAULT_COLD_THRESHOLD, DEFAULT_WINDOW, cold_start_sample, load_movielens_100k

QUICK_USERS = 150


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), default 3")
    parser.add_argument(
        "--models",
        default="popularity,item_cooccurrence,sasrec",
        help=f"comma-separated, from: {', '.join(sorted(harness.REGISTRY))}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: first {QUICK_USERS} users, two grid points, few epochs; writes "
        "bench/results/quality.quick.json unless --output is given",
    )
    parser.add_argument(
        "--add-seeds",
        action="store_true",
        help="widen each model's existing entry in the results file to seeds 0..N-1, fitting only "
        "the seeds it lacks with its recorded config (no new grid search)",
    )
    parser.add_argument(
        "--choices-from",
        default=None,
        help="another results file: fit the config each model chose there instead of searching its grid again "
        "(to measure the same choice afresh, e.g. into another --output)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file (merged into if it exists); every fit's per-point target positions go beside it "
        "(x.json -> x.ranks.json)",
    )
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="input window (events)")
    parser.add_argument("--cold-threshold", type=int, default=DEFAULT_COLD_THRESHOLD)
    parser.add_argument(
        "--cold-start-items",
        type=float,
        default=None,
        metavar="SHARE",
        help="item cold start: withhold this share of the catalog (drawn with --cold-start-seed) from training and "
        "from every input, and report the points whose target is one of them (slice cold_start_items); use "
        "another --output",
    )
    parser.add_argument("--cold-start-seed", type=int, default=0, help="the draw of --cold-start-items (default 0)")
    parser.add_argument("--table", action="store_true", help="print the results file as a markdown table and exit")
    args = parser.parse_args(argv)
    if args.table:
        output = args.output or (harness.QUICK_OUTPUT if args.quick else harness.DEFAULT_OUTPUT)
        print(harness.markdown_table(harness.load_results(output)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in harness.REGISTRY]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; registered: {sorted(harness.REGISTRY)}")
    output = args.output or (harness.QUICK_OUTPUT if args.quick else harness.DEFAULT_OUTPUT)
    split = load_movielens_100k(window=args.window)
    if args.quick:
        split = split.subset(sorted(split.users, key=lambda u: (len(u), u))[:QUICK_USERS])
    if args.cold_start_items is not None:
        if output == harness.DEFAULT_OUTPUT:
            parser.error("--cold-start-items measures another protocol; give it its own --output")
        split = split.without_items(cold_start_sample(split.item_ids, args.cold_start_items, args.cold_start_seed))
        print(f"[quality] {len(split.cold_start_items)} items withheld until they are a target", flush=True)
    print(
        f"[quality] {len(split.users)} users, {len(split.item_ids)} items, "
        f"{len(split.test_points)} test points, models={models}, seeds={args.seeds}",
        flush=True,
    )
    command = ".venv/bin/python -m bench.quality " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    harness.run_benchmark(
        split,
        models,
        seeds=list(range(args.seeds)),
        output=output,
        quick=args.quick,
        cold_threshold=args.cold_threshold,
        command=command.strip(),
        extend=args.add_seeds,
        choices_from=args.choices_from,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
