"""Runs the serving benchmark and writes its results file.

Order: the in-process lower bound first (no server running), then per
batching setting one server subprocess, and per concurrency one pool of
client processes that runs every client workload in turn.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import REPO_ROOT
from bench.serving.inprocess import InProcessModel, build_inputs, run_threads
from bench.serving.model import ServedModel
from bench.serving.server import BATCHING_PARAMETERS_FILE, ServerProcess
from bench.serving.stats import summarize, targets
from bench.serving.workers import ClientPool
from bench.serving.workloads import CLIENT_WORKLOADS, INPROCESS_WORKLOADS, TOP_K, histories_by_user, partition
from schemas import signatures as s
from schemas.events import Event, Item

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results", "serving.json")
SETTINGS = ("batching_off", "batching_on")
DEFAULT_CLIENTS = (1, 4, 16)
WORKLOAD_NOTES = {
    "record": "InterestClient.record([one new event]): SQLite insert, read the user's history, encode the "
    "50-event subgraph, update_interest over gRPC, save the state",
    "recommend": "InterestClient.recommend(user, 10): load state and history from SQLite, recommend over gRPC",
    "predict_update_interest": "raw Predict of update_interest (prebuilt request, plain PredictionServiceStub), "
    "one user's subgraph",
    "predict_recommend": "raw Predict of recommend (prebuilt request): one state, the user's seen items, k=10",
    "inprocess": "update_interest called in-process (tf.saved_model.load) on the same inputs as "
    "predict_update_interest: numpy -> tensors -> signature -> numpy",
    "inprocess_recommend": "recommend called in-process on the same inputs as predict_recommend",
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    Attributes:
      clients: concurrency levels.
      settings: batching settings, from SETTINGS.
      calls: measured calls per workload and concurrency, all clients together.
      warmup: unmeasured calls per client (or thread) before each workload.
      users: how many MovieLens users take part (0: all), shared among the clients.
      batching_file: the BatchingParameters file for "batching_on".
      timeout_s: deadline of every gRPC call.
      seed: for the `record` events.
    """

    clients: tuple[int, ...] = DEFAULT_CLIENTS
    settings: tuple[str, ...] = SETTINGS
    calls: int = 2000
    warmup: int = 20
    users: int = 0
    batching_file: str = BATCHING_PARAMETERS_FILE
    timeout_s: float = 30.0
    seed: int = 0


def _progress(label: str, summary: Mapping[str, float], seconds: float) -> None:
    print(
        f"[serving] {label}: p50 {summary['p50_ms']:.2f} ms, p95 {summary['p95_ms']:.2f} ms, "
        f"p99 {summary['p99_ms']:.2f} ms, {summary['per_s']:.1f}/s ({seconds:.0f}s)",
        flush=True,
    )


def measure_inprocess(
    model: ServedModel, histories: Mapping[str, Sequence[Event]], items: Sequence[Item], config: BenchConfig
) -> dict[str, dict[str, dict[str, float]]]:
    """The in-process signature calls at every concurrency (threads over one loaded model).

    Args:
      model: the model (its newest version is loaded).
      histories: the users taking part.
      items: the catalog.
      config: what to measure.

    Returns:
      clients -> {"inprocess": summary, "inprocess_recommend": summary}.
    """
    loaded = InProcessModel(model.version_dir)
    inputs = build_inputs(loaded.calls, histories, items)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for clients in config.clients:
        shares = partition(list(histories), clients)
        row = {}
        for workload, signature in zip(INPROCESS_WORKLOADS, (s.UPDATE_INTEREST, s.RECOMMEND), strict=True):
            per_thread = [[inputs[u][signature] for u in share] for share in shares]
            started = time.time()
            row[workload] = summarize(run_threads(loaded.calls[signature], per_thread, config.warmup, config.calls))
            _progress(f"in-process clients={clients} {workload}", row[workload], time.time() - started)
        out[str(clients)] = row
    return out


def measure_server(
    model: ServedModel,
    histories: Mapping[str, Sequence[Event]],
    items: Sequence[Item],
    config: BenchConfig,
    setting: str,
    workdir: str,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every client workload at every concurrency against one server subprocess.

    Args:
      model: what the server serves.
      histories: the users taking part.
      items: the catalog.
      config: what to measure.
      setting: "batching_off" or "batching_on".
      workdir: for the server's log and the clients' stores.

    Returns:
      clients -> workload -> summary.
    """
    batching_file = config.batching_file if setting == "batching_on" else None
    started = time.time()
    server = ServerProcess(model, batching_file, os.path.join(workdir, f"model_server.{setting}.log"))
    print(f"[serving] {setting}: server ready on {server.target} ({time.time() - started:.0f}s)", flush=True)
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for clients in config.clients:
            started = time.time()
            shares = [{u: histories[u] for u in share} for share in partition(list(histories), clients)]
            pool = ClientPool(server.target, model.name, shares, items, workdir, config.timeout_s, config.seed)
            print(f"[serving] {setting}: {clients} client process(es) ready ({time.time() - started:.0f}s)", flush=True)
            row = {}
            try:
                for workload in CLIENT_WORKLOADS:
                    started = time.time()
                    row[workload] = summarize(pool.run(workload, config.warmup, config.calls))
                    _progress(f"{setting} clients={clients} {workload}", row[workload], time.time() - started)
            finally:
                pool.close()
            out[str(clients)] = row
    finally:
        server.stop()
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _protocol(
    model: ServedModel, config: BenchConfig, users: int, command: str, load_before: Sequence[float]
) -> dict[str, Any]:
    import grpc
    import tensorflow as tf

    with open(config.batching_file) as f:
        batching_parameters = f.read()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {_cpu_model()}, {platform.platform()}",
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "grpcio": grpc.__version__,
        "command": command,
        "model": {"base_path": model.base_path, "name": model.name, "version": model.version, "origin": model.origin},
        "server": "python -m serving.model_server (subprocess), TF Serving flags; batching_on adds "
        "--enable_batching=true --batching_parameters_file=<batching_parameters>",
        "batching_parameters": batching_parameters,
        "clients": list(config.clients),
        "calls_per_workload": config.calls,
        "warmup_calls_per_client": config.warmup,
        "users": users,
        "top_k": TOP_K,
        "concurrency": "client workloads: one process per client (spawned), each with its own SQLite store "
        "preloaded with its share of the users' full MovieLens histories and their states; clients start "
        "each workload together at a barrier after warmup. in-process: one thread per client over one loaded "
        "model, measured once (no server involved) and reported under both batching settings",
        "latency": "per call, time.perf_counter around the whole call; percentiles over all clients' calls "
        "(numpy linear interpolation)",
        "throughput": "measured calls / (last call's end - first call's start), all clients together",
        "workloads": WORKLOAD_NOTES,
    }


def run_benchmark(
    model: ServedModel,
    events: Sequence[Event],
    items: Sequence[Item],
    config: BenchConfig,
    command: str,
    workdir: str,
) -> dict[str, Any]:
    """Measures everything in `config`.

    Args:
      model: the served model.
      events: the users' histories (every event of every user).
      items: the catalog.
      config: what to measure.
      command: the command line, for the protocol.
      workdir: for the server logs (kept, to read after a failure) and the
        clients' stores (replaced on every run).

    Returns:
      {"protocol", "results", "targets"}; results are setting -> clients ->
      workload -> {"p50_ms", "p95_ms", "p99_ms", "per_s"}.
    """
    load_before = os.getloadavg()
    histories = histories_by_user(events)
    users = list(histories)[: config.users or None]
    histories = {u: histories[u] for u in users}
    print(
        f"[serving] model {model.version_dir}; {len(users)} users, clients {list(config.clients)}, "
        f"{config.calls} calls per workload after {config.warmup} warmup calls per client",
        flush=True,
    )
    inprocess = measure_inprocess(model, histories, items, config)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    os.makedirs(workdir, exist_ok=True)
    for setting in config.settings:
        measured = measure_server(model, histories, items, config, setting, workdir)
        results[setting] = {c: {**row, **inprocess[c]} for c, row in measured.items()}
    return {
        "protocol": _protocol(model, config, len(users), command, load_before),
        "results": results,
        "targets": targets(results),
    }


def write_results(report: Mapping[str, Any], path: str) -> None:
    """Writes the report as indented JSON (creating the folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def markdown_table(report: Mapping[str, Any]) -> str:
    """The results and the target checks as markdown.

    Args:
      report: a results file's content.

    Returns:
      A table (setting, clients, workload, p50/p95/p99 ms, calls/s) and one
      line per target.
    """
    lines = ["| batching | clients | workload | p50 ms | p95 ms | p99 ms | calls/s |", "|---|---|---|---|---|---|---|"]
    for setting, by_clients in report["results"].items():
        for clients, row in by_clients.items():
            for workload, m in row.items():
                lines.append(
                    f"| {setting.removeprefix('batching_')} | {clients} | {workload} | {m['p50_ms']:.2f} | "
                    f"{m['p95_ms']:.2f} | {m['p99_ms']:.2f} | {m['per_s']:.1f} |"
                )
    lines.append("")
    for name, check in report["targets"].items():
        verdict = {True: "PASS", False: "FAIL", None: "not checked"}[check["pass"]]
        details = {k: v for k, v in check.items() if k not in ("pass", "definition")}
        lines.append(f"- `{name}`: **{verdict}** {json.dumps(details)}")
    return "\n".join(lines)
