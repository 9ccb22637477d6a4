"""Request batching on a real SavedModel signature, counting the underlying calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from serving.batching import Batcher, BatchingOptions, load_batching_options
from serving.config_protos import BatchingParameters
from serving.errors import ServingError
from serving.model_loader import load_servable_version
from serving.predict import Arrays, Signature, find_signature, run_signature
from tests.serving.toy import MODEL, save_version

ITEMS = ("a", "b", "c", "d", "e", "f")


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = save_version(tmp_path_factory.mktemp("batching") / "1", factor=2.0)
    return load_servable_version(MODEL, 1, str(path))


class ExcludeModule(tf.Module):
    """Like the real ``recommend``: top-k of per-row scores, leaving out a variable-width list of item ids."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, len(ITEMS)], tf.float32, name="scores"),
            tf.TensorSpec([None, None], tf.string, name="exclude_item_ids"),
            tf.TensorSpec([], tf.int32, name="k"),
        ]
    )
    def recommend(self, scores: tf.Tensor, exclude_item_ids: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        excluded = tf.reduce_any(tf.equal(exclude_item_ids[:, :, None], tf.constant(ITEMS)[None, None, :]), axis=1)
        top = tf.math.top_k(tf.where(excluded, float("-inf"), scores), k=k)
        return {"item_ids": tf.gather(tf.constant(ITEMS), top.indices), "scores": top.values}


@pytest.fixture(scope="module")
def recommend(tmp_path_factory: pytest.TempPathFactory) -> Signature:
    module = ExcludeModule()
    path = tmp_path_factory.mktemp("exclude") / "1"
    tf.saved_model.save(module, str(path), signatures={"recommend": module.recommend})
    return find_signature(load_servable_version("exclude", 1, str(path)), "recommend")


class CountingExecutor:
    """Runs signatures for real and records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, signature: Signature, inputs: Arrays) -> Arrays:
        with self._lock:
            self.calls.append(inputs[signature.batch_inputs[0]].shape[0] if signature.batch_inputs else 0)
        return run_signature(signature, inputs)


def _top_inputs(seed: int, rows: int, k: int, width: int = 5) -> Arrays:
    values = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return {"rows": values, "k": np.array(k, dtype=np.int32)}


def _concurrently(batcher: Batcher, signature: Signature, requests: list[Arrays]) -> list[Arrays]:
    with futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda inputs: batcher.run(signature, inputs), requests))


def _batcher(executor: Callable[[Signature, Arrays], Arrays], **options: object) -> Batcher:
    return Batcher(BatchingOptions(**options), executor)  # type: ignore[arg-type]


def test_concurrent_requests_merged_and_results_equal_unbatched(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    requests = [_top_inputs(seed, rows=1 + seed % 3, k=2) for seed in range(8)]
    rows = sum(r["rows"].shape[0] for r in requests)
    executor = CountingExecutor()
    # The batch is full exactly when all requests are in, so it runs once, right then.
    batcher = _batcher(executor, max_batch_size=rows, batch_timeout_micros=5_000_000, num_batch_threads=1)
    try:
        results = _concurrently(batcher, signature, requests)
    finally:
        batcher.stop()
    assert executor.calls == [rows]
    for inputs, result in zip(requests, results, strict=True):
        expected = run_signature(signature, inputs)
        assert set(result) == {"values", "indices"}
        np.testing.assert_allclose(result["values"], expected["values"])
        np.testing.assert_array_equal(result["indices"], expected["indices"])


def test_different_scalar_inputs_go_to_different_batches(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    requests = [_top_inputs(seed, rows=1, k=1 + seed % 2) for seed in range(6)]
    executor = CountingExecutor()
    batcher = _batcher(executor, max_batch_size=3, batch_timeout_micros=5_000_000, num_batch_threads=2)
    try:
        results = _concurrently(batcher, signature, requests)
    finally:
        batcher.stop()
    assert sorted(executor.calls) == [3, 3]
    for inputs, result in zip(requests, results, strict=True):
        assert result["values"].shape == (1, int(inputs["k"]))
        np.testing.assert_allclose(result["values"], run_signature(signature, inputs)["values"])


def test_different_row_widths_are_not_merged(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    requests = [_top_inputs(0, rows=1, k=1, width=4), _top_inputs(1, rows=1, k=1, width=6)]
    executor = CountingExecutor()
    batcher = _batcher(executor, max_batch_size=2, batch_timeout_micros=100_000, num_batch_threads=1)
    try:
        _concurrently(batcher, signature, requests)
    finally:
        batcher.stop()
    assert executor.calls == [1, 1]


def _recommend_inputs(seed: int, excluded: list[list[str]], k: int = 3) -> Arrays:
    scores = np.random.default_rng(seed).normal(size=(len(excluded), len(ITEMS))).astype(np.float32)
    return {"scores": scores, "exclude_item_ids": np.array(excluded, dtype=object), "k": np.array(k, np.int32)}


# Different widths; the two-row request's second row must not pick up row 0's "a".
VARIABLE_WIDTH_REQUESTS = [
    _recommend_inputs(0, [["a"]]),
    _recommend_inputs(1, [["b", "c", "d"]]),
    _recommend_inputs(2, [["a", "e"], ["f", "b"]]),
    _recommend_inputs(3, [["c", "c", "f", "e"]]),
]
VARIABLE_WIDTH_REQUESTS[2]["scores"][1, 0] = 10.0  # "a" is row 1's best item


def test_padding_merges_variable_width_inputs_and_keeps_results(recommend: Signature) -> None:
    executor = CountingExecutor()
    batcher = _batcher(
        executor, max_batch_size=5, batch_timeout_micros=5_000_000, num_batch_threads=1, pad_variable_length_inputs=True
    )
    try:
        results = _concurrently(batcher, recommend, VARIABLE_WIDTH_REQUESTS)
    finally:
        batcher.stop()
    assert executor.calls == [5]
    for inputs, result in zip(VARIABLE_WIDTH_REQUESTS, results, strict=True):
        expected = run_signature(recommend, inputs)
        np.testing.assert_array_equal(result["item_ids"], expected["item_ids"])
        np.testing.assert_allclose(result["scores"], expected["scores"])
    # Padding with the whole tensor's first element (TF Serving's choice) would have excluded "a" from row 1 too.
    assert results[2]["item_ids"][1, 0] == b"a"


def test_without_padding_variable_width_inputs_are_not_merged(recommend: Signature) -> None:
    executor = CountingExecutor()
    batcher = _batcher(executor, max_batch_size=5, batch_timeout_micros=200_000, num_batch_threads=1)
    try:
        _concurrently(batcher, recommend, VARIABLE_WIDTH_REQUESTS)
    finally:
        batcher.stop()
    assert sorted(executor.calls) == [1, 1, 1, 2]


def test_padding_still_separates_different_scalars(recommend: Signature) -> None:
    requests = [_recommend_inputs(seed, [["a"] * (1 + seed % 3)], k=1 + seed % 2) for seed in range(4)]
    executor = CountingExecutor()
    batcher = _batcher(
        executor, max_batch_size=2, batch_timeout_micros=5_000_000, num_batch_threads=2, pad_variable_length_inputs=True
    )
    try:
        results = _concurrently(batcher, recommend, requests)
    finally:
        batcher.stop()
    assert sorted(executor.calls) == [2, 2]
    for inputs, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["item_ids"], run_signature(recommend, inputs)["item_ids"])


def test_padding_an_empty_input_falls_back_to_running_alone(recommend: Signature) -> None:
    # Nothing to pad with (TF Serving refuses such a batch); each request still gets its own answer.
    requests = [_recommend_inputs(0, [[]]), _recommend_inputs(1, [["a", "b"]])]
    executor = CountingExecutor()
    batcher = _batcher(
        executor, max_batch_size=2, batch_timeout_micros=5_000_000, num_batch_threads=1, pad_variable_length_inputs=True
    )
    try:
        results = _concurrently(batcher, recommend, requests)
    finally:
        batcher.stop()
    assert executor.calls == [1, 1]
    for inputs, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["item_ids"], run_signature(recommend, inputs)["item_ids"])


def test_padding_to_allowed_batch_sizes(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    executor = CountingExecutor()
    batcher = _batcher(executor, max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1)
    try:
        inputs = _top_inputs(3, rows=3, k=2)
        result = batcher.run(signature, inputs)
    finally:
        batcher.stop()
    assert executor.calls == [4]
    np.testing.assert_allclose(result["values"], run_signature(signature, inputs)["values"])


def test_bad_request_does_not_fail_its_batch_mates(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    good = _top_inputs(0, rows=2, k=1)
    bad = _top_inputs(1, rows=2, k=1)
    bad["rows"][0, 0] = np.nan
    batcher = _batcher(CountingExecutor(), max_batch_size=4, batch_timeout_micros=5_000_000, num_batch_threads=1)
    try:
        with futures.ThreadPoolExecutor(2) as pool:
            good_future = pool.submit(batcher.run, signature, good)
            bad_future = pool.submit(batcher.run, signature, bad)
            np.testing.assert_allclose(good_future.result()["values"], run_signature(signature, good)["values"])
            with pytest.raises(ServingError) as info:
                bad_future.result()
    finally:
        batcher.stop()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows must be finite" in info.value.message


def test_request_larger_than_max_batch_size_rejected(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    batcher = _batcher(CountingExecutor(), max_batch_size=4, num_batch_threads=1)
    try:
        with pytest.raises(ServingError) as info:
            batcher.run(signature, _top_inputs(0, rows=5, k=1))
    finally:
        batcher.stop()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 5" in info.value.message and "maximum input batch size 4" in info.value.message


def test_full_queue_answers_unavailable(servable: object) -> None:
    signature = find_signature(servable, "top")  # type: ignore[arg-type]
    release = threading.Event()

    def blocked(sig: Signature, inputs: Arrays) -> Arrays:
        release.wait(10)
        return run_signature(sig, inputs)

    # One thread, busy; one batch of one row may wait; the next request finds the queue full.
    batcher = _batcher(blocked, max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    try:
        with futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(batcher.run, signature, _top_inputs(0, rows=1, k=1))
            _wait_until(lambda: not batcher._queues)  # taken by the (blocked) thread
            second = pool.submit(batcher.run, signature, _top_inputs(1, rows=1, k=1))
            _wait_until(lambda: bool(batcher._queues))  # queued behind it
            with pytest.raises(ServingError) as info:
                batcher.run(signature, _top_inputs(2, rows=1, k=1))
            release.set()
            first.result()
            second.result()
    finally:
        release.set()
        batcher.stop()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "queue" in info.value.message and "full" in info.value.message


def _wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        threading.Event().wait(0.01)
    pytest.fail("condition not reached")


def test_unbatchable_signature_runs_directly(servable: object) -> None:
    # "scale" has a scalar output (a sum over rows): rows of different requests must not be merged.
    signature = find_signature(servable, "scale")  # type: ignore[arg-type]
    assert not signature.batchable
    executor = CountingExecutor()
    batcher = _batcher(executor, max_batch_size=4, batch_timeout_micros=5_000_000)
    try:
        result = batcher.run(signature, {"x": np.array([1.0, 2.0], np.float32)})
    finally:
        batcher.stop()
    assert float(result["total"]) == 3.0
    assert executor.calls == [2]


def test_batching_parameters_text_format(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 50 }\nnum_batch_threads { value: 2 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\npad_variable_length_inputs: false\n"
    )
    assert load_batching_options(str(path)) == BatchingOptions(32, 2000, 50, 2, (8, 32))
    path.write_text("pad_variable_length_inputs: true\n")
    assert load_batching_options(str(path)).pad_variable_length_inputs
    defaults = load_batching_options(None)
    assert defaults.max_batch_size == 1000 and defaults.batch_timeout_micros == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
        ("max_batch_size { value: 16 } allowed_batch_sizes: 8", "must be increasing and end with max_batch_size 16"),
        ("max_batch_size { value: 16 } allowed_batch_sizes: 16 allowed_batch_sizes: 8", "increasing"),
    ],
)
def test_invalid_batching_parameters(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        BatchingOptions.from_proto(text_format.Parse(text, BatchingParameters()))


def test_unknown_batching_field_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_sise { value: 32 }\n")
    with pytest.raises(ValueError, match="max_batch_sise"):
        load_batching_options(str(path))
