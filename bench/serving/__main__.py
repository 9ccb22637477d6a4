"""`python -m bench.serving`: latency and throughput of the model server (see README.md here)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import schemas  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from bench.serving import harness
from bench.serving.model import DEFAULT_CACHE_DIR, existing_model, load_movielens, trained_model
from schemas.signatures import DEFAULT_MODEL_NAME


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


def _settings(text: str) -> tuple[str, ...]:
    values = tuple(f"batching_{v.strip()}" for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in harness.SETTINGS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of off,on; got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see --help)."""
    defaults = harness.BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument(
        "--model-dir",
        help="serve this TF Serving model base path (integer version folders) instead of the pipeline's "
        "MovieLens-100k model, which is otherwise trained once into --cache-dir and reused",
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="model name for --model-dir")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="cap the trainer's epochs when training the model (smoke runs; cached separately); default: "
        "TrainerConfig's, the real model",
    )
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="data and trained model cache")
    parser.add_argument("--clients", type=_ints, default=defaults.clients, help="concurrency levels, e.g. 1,4,16")
    parser.add_argument("--batching", type=_settings, default=defaults.settings, help="off,on (default both)")
    parser.add_argument(
        "--calls", type=int, default=defaults.calls, help="measured calls per workload and concurrency, all clients"
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="unmeasured calls per client first")
    parser.add_argument("--users", type=int, default=defaults.users, help="MovieLens users taking part (0: all 943)")
    parser.add_argument(
        "--batching-parameters-file", default=defaults.batching_file, help="BatchingParameters for batching on"
    )
    parser.add_argument("--output", default=harness.DEFAULT_OUTPUT, help="results file (overwritten)")
    parser.add_argument("--table", action="store_true", help="print the results file as markdown and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        with open(args.output) as f:
            print(harness.markdown_table(json.load(f)))
        return 0
    if args.calls < 1 or args.warmup < 0:
        raise SystemExit("--calls must be >= 1 and --warmup >= 0")
    model = (
        existing_model(args.model_dir, args.model_name)
        if args.model_dir
        else trained_model(args.cache_dir, args.epochs)
    )
    events, items = load_movielens(args.cache_dir)
    config = harness.BenchConfig(
        clients=args.clients,
        settings=args.batching,
        calls=args.calls,
        warmup=args.warmup,
        users=args.users,
        batching_file=args.batching_parameters_file,
    )
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m bench.serving " + " ".join(shlex.quote(a) for a in given)
    workdir = os.path.join(args.cache_dir, "run")
    report = harness.run_benchmark(model, events, items, config, command.strip(), workdir)
    harness.write_results(report, args.output)
    print(harness.markdown_table(report))
    print(f"[serving] wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
