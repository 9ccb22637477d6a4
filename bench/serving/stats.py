"""Latency summaries and the issue's targets, computed from raw timings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)
# Issue 4's targets on the 2-core machine.
OVERHEAD_LIMIT_MS = 1.0
RECORD_RECOMMEND_P99_LIMIT_MS = 25.0
OVERHEAD_CLIENTS = "1"
RECORD_RECOMMEND_CLIENTS = "4"
THROUGHPUT_CLIENTS = "16"


@dataclasses.dataclass(frozen=True)
class Timings:
    """Raw measurements of one workload at one concurrency.

    Attributes:
      latencies_s: every measured call's latency, in seconds, all clients together.
      wall_s: from the first measured call's start to the last one's end, over
        all clients (they start together, after warmup, at a barrier).
    """

    latencies_s: Sequence[float]
    wall_s: float


def summarize(timings: Timings) -> dict[str, float]:
    """p50/p95/p99 latency in ms and throughput in calls per second.

    Percentiles use numpy's default (linear interpolation between the closest
    ranks). Throughput is all measured calls divided by the wall time they
    took together, so it counts the concurrency.

    Args:
      timings: one workload's measurements.

    Returns:
      {"p50_ms", "p95_ms", "p99_ms", "per_s"}, rounded to 3 decimals.

    Raises:
      ValueError: if there are no calls or the wall time is not positive.
    """
    latencies = np.asarray(timings.latencies_s, dtype=np.float64)
    if latencies.size == 0 or timings.wall_s <= 0:
        raise ValueError(f"cannot summarize {latencies.size} calls over {timings.wall_s} s")
    summary = {f"p{p}_ms": round(float(np.percentile(latencies, p)) * 1000, 3) for p in PERCENTILES}
    summary["per_s"] = round(latencies.size / timings.wall_s, 3)
    return summary


def _check(passed: bool, **numbers: Any) -> dict[str, Any]:
    return {"pass": bool(passed), **numbers}


def overhead_target(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, Any]:
    """Server-side overhead at p50 with one client, batching off.

    Overhead of a signature = p50 of a raw Predict of it over gRPC (prebuilt
    request, plain TF Serving stub) minus p50 of the same signature called
    in-process on the same inputs. It counts everything serving adds: request
    serialization, gRPC in both directions, the server's decoding, checks and
    encoding. Batching off: with one client, batching can only add its timeout.

    Args:
      results: the results section (setting -> clients -> workload -> summary).

    Returns:
      The check, passing when both signatures' overheads are at most 1 ms.
    """
    off = results["batching_off"][OVERHEAD_CLIENTS]
    per_signature = {
        "update_interest": round(off["predict_update_interest"]["p50_ms"] - off["inprocess"]["p50_ms"], 3),
        "recommend": round(off["predict_recommend"]["p50_ms"] - off["inprocess_recommend"]["p50_ms"], 3),
    }
    return _check(
        all(v <= OVERHEAD_LIMIT_MS for v in per_signature.values()),
        limit_ms=OVERHEAD_LIMIT_MS,
        overhead_p50_ms=per_signature,
        definition="p50(raw Predict over gRPC) - p50(in-process signature call), same inputs, 1 client, "
        "batching off",
    )


def record_recommend_target(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, Any]:
    """`record` + `recommend` p99 with 4 clients, per batching setting.

    The sum of the two p99s: a record followed by a recommend finishes within
    it at least 98% of the time, so it is a conservative reading of the target.

    Args:
      results: the results section.

    Returns:
      The check per setting; the target passes if some setting meets it.
    """
    per_setting = {}
    for setting, by_clients in results.items():
        row = by_clients[RECORD_RECOMMEND_CLIENTS]
        total = round(row["record"]["p99_ms"] + row["recommend"]["p99_ms"], 3)
        per_setting[setting] = _check(
            total <= RECORD_RECOMMEND_P99_LIMIT_MS,
            record_p99_ms=row["record"]["p99_ms"],
            recommend_p99_ms=row["recommend"]["p99_ms"],
            sum_p99_ms=total,
        )
    return _check(
        any(c["pass"] for c in per_setting.values()),
        limit_ms=RECORD_RECOMMEND_P99_LIMIT_MS,
        definition="p99(record) + p99(recommend), 4 client processes",
        **per_setting,
    )


def batching_throughput_target(
    results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
) -> dict[str, Any]:
    """Whether batching raises throughput at 16 clients, for `record` and `recommend`.

    Args:
      results: the results section.

    Returns:
      The check with both settings' per_s and the ratio on/off per workload;
      passing when batching is faster for both workloads.
    """
    off, on = results["batching_off"][THROUGHPUT_CLIENTS], results["batching_on"][THROUGHPUT_CLIENTS]
    workloads = ("record", "recommend", "predict_update_interest", "predict_recommend")
    per_workload = {
        w: {
            "off_per_s": off[w]["per_s"],
            "on_per_s": on[w]["per_s"],
            "ratio": round(on[w]["per_s"] / off[w]["per_s"], 3),
        }
        for w in workloads
    }
    return _check(
        all(per_workload[w]["ratio"] > 1.0 for w in ("record", "recommend")),
        definition="per_s with batching on > per_s with batching off, 16 client processes, for record and "
        "recommend (raw Predict shown for reference)",
        **per_workload,
    )


def targets(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, Any]:
    """Every target that the measured settings and concurrencies allow checking.

    Args:
      results: the results section.

    Returns:
      Target name -> check; a target whose inputs were not measured (a
      smoke run with fewer settings or clients) is reported as not checked.
    """
    checks = {
        "overhead_p50_1_client": overhead_target,
        "record_recommend_p99_4_clients": record_recommend_target,
        "batching_raises_throughput_16_clients": batching_throughput_target,
    }
    out: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            out[name] = check(results)
        except KeyError as missing:
            out[name] = {"pass": None, "not_checked": f"not measured: {missing}"}
    return out
