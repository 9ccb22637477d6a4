"""The serving benchmark's statistics, results shape and batching file, and a tiny end-to-end run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bench.serving import harness
from bench.serving.model import ServedModel, existing_model
from bench.serving.server import BATCHING_PARAMETERS_FILE, server_command
from bench.serving.stats import Timings, summarize, targets
from bench.serving.workers import split_calls
from bench.serving.workloads import CLIENT_WORKLOADS, INPROCESS_WORKLOADS, NewEvents, histories_by_user, partition
from schemas import signatures as s
from schemas.events import Event, Item
from serving.batching import load_batching_options

SUMMARY_KEYS = {"p50_ms", "p95_ms", "p99_ms", "per_s"}


def test_summary_percentiles_and_throughput() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = summarize(Timings(latencies, wall_s=2.0))
    assert summary == {"p50_ms": 50.5, "p95_ms": 95.05, "p99_ms": 99.01, "per_s": 50.0}
    with pytest.raises(ValueError):
        summarize(Timings([], wall_s=1.0))


def test_calls_are_split_evenly_and_users_round_robin() -> None:
    assert split_calls(10, 4) == [3, 3, 2, 2] and sum(split_calls(1000, 16)) == 1000
    assert partition(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    with pytest.raises(ValueError):
        partition(["a"], 2)


def test_record_events_are_new_and_newer_than_the_history() -> None:
    history = [Event("u", f"i{k}", "rating", 100 + k, 3.0, "", f"e{k}") for k in range(3)]
    events = NewEvents("0", {"u": history}, [f"i{k}" for k in range(6)], seed=0)
    made = [events.next() for _ in range(4)]
    assert {e.item_id for e in made[:3]} == {"i3", "i4", "i5"}  # unrated items first
    assert len({e.event_id for e in made}) == 4
    assert [e.timestamp for e in made] == sorted(e.timestamp for e in made) and made[0].timestamp > 102


def _fake_results(scale_on: float) -> dict:
    def summary(p50: float, per_s: float) -> dict:
        return {"p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50, "per_s": per_s}

    def row(per_s: float) -> dict:
        return {
            "record": summary(5.0, per_s),
            "recommend": summary(2.0, per_s),
            "predict_update_interest": summary(4.0, per_s),
            "predict_recommend": summary(1.5, per_s),
            "inprocess": summary(3.5, per_s),
            "inprocess_recommend": summary(1.0, per_s),
        }

    return {
        "batching_off": {c: row(100.0) for c in ("1", "4", "16")},
        "batching_on": {c: row(100.0 * scale_on) for c in ("1", "4", "16")},
    }


def test_targets_are_computed_from_the_results() -> None:
    checks = targets(_fake_results(scale_on=1.2))
    overhead = checks["overhead_p50_1_client"]
    assert overhead["overhead_p50_ms"] == {"update_interest": 0.5, "recommend": 0.5} and overhead["pass"]
    pair = checks["record_recommend_p99_4_clients"]
    assert pair["batching_off"]["sum_p99_ms"] == 21.0 and pair["pass"]
    assert checks["batching_raises_throughput_16_clients"]["record"]["ratio"] == 1.2
    assert checks["batching_raises_throughput_16_clients"]["pass"]
    assert not targets(_fake_results(scale_on=0.9))["batching_raises_throughput_16_clients"]["pass"]
    partial = targets({"batching_on": _fake_results(1.0)["batching_on"]})
    assert partial["overhead_p50_1_client"]["pass"] is None


def test_batching_file_parses_with_the_servers_own_parser() -> None:
    options = load_batching_options(BATCHING_PARAMETERS_FILE)
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads) == (64, 1000, 2)
    model = ServedModel("/models/m", "m", 1, "test")
    assert "--enable_batching=true" in server_command(model, 1, BATCHING_PARAMETERS_FILE)
    assert not any("batching" in a for a in server_command(model, 1, None))


class TinyInterestModel(tf.Module):
    """The serving contract's `update_interest` and `recommend` on a toy catalog (latency, not quality).

    The state is a function of the request's bytes, so every user gets their
    own; recommend scores items by their best match and skips excluded ones.
    """

    def __init__(self, item_ids: list[str]) -> None:
        super().__init__()
        self.item_ids = tf.constant(item_ids)
        self.item_vectors = tf.Variable(tf.random.stateless_normal([len(item_ids), s.INTEREST_DIM], seed=[0, 1]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=s.SUBGRAPH)])
    def update_interest(self, subgraph: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._interest(subgraph)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=s.SUBGRAPH),
            tf.TensorSpec([None, s.MEMORY_WIDTH], tf.float32, name=s.LONG_TERM_MEMORY),
        ]
    )
    def fold_interest(self, subgraph: tf.Tensor, long_term_memory: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._interest(subgraph)

    def _interest(self, subgraph: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.strings.to_hash_bucket_fast(subgraph, len(self.item_ids.numpy()))
        batch = tf.shape(subgraph)[0]
        no_memory = tf.concat([tf.zeros([batch, s.INTEREST_DIM]), tf.fill([batch, 1], s.NO_MEMORY_LOG_MASS)], axis=1)
        return {
            s.INTEREST_STATE: tf.gather(self.item_vectors, rows)[:, None, :],
            s.LONG_TERM_MEMORY: no_memory,
            s.INTEREST_ITEM_IDS: tf.fill([batch, s.TOP_INTEREST_ITEMS], ""),
            s.INTEREST_ITEM_WEIGHTS: tf.zeros([batch, s.TOP_INTEREST_ITEMS]),
            s.INTEREST_CATEGORIES: tf.fill([batch, s.TOP_INTEREST_CATEGORIES], ""),
            s.INTEREST_CATEGORY_WEIGHTS: tf.zeros([batch, s.TOP_INTEREST_CATEGORIES]),
            s.RECENT_ITEM_IDS: tf.fill([batch, s.RECENT_ITEMS], ""),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, s.INTEREST_DIM], tf.float32, name=s.INTEREST_STATE),
            tf.TensorSpec([None, s.RECENT_ITEMS], tf.string, name=s.RECENT_ITEM_IDS),
            tf.TensorSpec([None, None], tf.string, name=s.EXCLUDE_ITEM_IDS),
            tf.TensorSpec([None], tf.int32, name=s.K),
        ]
    )
    def recommend(
        self, interest_state: tf.Tensor, recent_item_ids: tf.Tensor, exclude_item_ids: tf.Tensor, k: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        scores = tf.reduce_max(tf.einsum("bid,nd->bin", interest_state, self.item_vectors), axis=1)
        excluded = tf.reduce_any(tf.equal(exclude_item_ids[:, :, None], self.item_ids[None, None, :]), axis=1)
        values, indices = tf.math.top_k(tf.where(excluded, float("-inf"), scores), k=tf.reduce_max(k))
        return {s.ITEM_IDS: tf.gather(self.item_ids, indices), s.SCORES: values}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServedModel, list[Event], list[Item]]:
    """A TinyInterestModel in TF Serving's layout, its catalog, and 4 users with 9 events each."""
    base = tmp_path_factory.mktemp("serving_bench") / "models" / "tiny"
    items = [Item(f"item{i}", f"Item {i}", "", (f"cat{i % 3}",)) for i in range(30)]
    module = TinyInterestModel([i.item_id for i in items])
    signatures = {
        s.UPDATE_INTEREST: module.update_interest,
        s.DEFAULT_SIGNATURE: module.update_interest,
        s.FOLD_INTEREST: module.fold_interest,
        s.RECOMMEND: module.recommend,
    }
    tf.saved_model.save(module, str(base / "1"), signatures=signatures)
    events = [
        Event(f"user{u}", f"item{(3 * u + k) % 30}", "rating", 1_000_000 + 3600 * k, 4.0, "", f"u{u}-{k}")
        for u in range(4)
        for k in range(9)
    ]
    return existing_model(str(base), "tiny"), events, items


def test_end_to_end_smoke_run_writes_the_documented_shape(tiny_model: tuple, tmp_path: Path) -> None:
    model, events, items = tiny_model
    assert list(histories_by_user(events)) == ["user0", "user1", "user2", "user3"]
    config = harness.BenchConfig(clients=(2,), settings=("batching_on",), calls=6, warmup=1)
    report = harness.run_benchmark(model, events, items, config, "test", str(tmp_path / "run"))
    path = str(tmp_path / "serving.json")
    harness.write_results(report, path)
    assert set(report) == {"protocol", "results", "targets"}
    assert report["protocol"]["model"]["version"] == 1 and report["protocol"]["users"] == 4
    row = report["results"]["batching_on"]["2"]
    assert set(row) == set(CLIENT_WORKLOADS) | set(INPROCESS_WORKLOADS)
    for workload, summary in row.items():
        assert set(summary) == SUMMARY_KEYS, workload
        assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] and summary["per_s"] > 0
        assert np.isfinite(list(summary.values())).all()
    # Only batching on and 2 clients were measured: no target can be checked.
    assert all(check["pass"] is None for check in report["targets"].values())
    assert "| on | 2 | record |" in harness.markdown_table(report)
