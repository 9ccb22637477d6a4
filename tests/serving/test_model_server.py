"""End-to-end tests of ``python -m serving.model_server`` over real gRPC and HTTP.

The server runs as a subprocess on tiny SavedModels built here and is called
with the plain TF Serving stubs, exactly as any TF Serving client would call it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.ports import free_port
from tests.serving.toy import (
    MODEL,
    SIGNATURES,
    ServerProcess,
    VersionStatus,
    make_request,
    push_version,
    save_version,
    scale_request,
    top_request,
    wait_for,
    write_warmup,
)

MAX_MESSAGE_BYTES = 256 * 1024
MAX_ROWS = 100
METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("served")
    push_version(root / "models", 1, factor=2.0, staging=root)
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    proc = ServerProcess(
        [
            "--model_name", MODEL,
            "--model_base_path", str(root / "models"),
            "--file_system_poll_wait_seconds", "0.5",
            "--grpc_max_message_bytes", str(MAX_MESSAGE_BYTES),
            "--max_request_batch_size", str(MAX_ROWS),
            "--monitoring_config_file", str(monitoring),
            "--rest_api_port", str(free_port()),
        ],
        root / "server.log",
    )  # fmt: skip
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.close()


def _metrics_url(server: ServerProcess, path: str = METRICS_PATH) -> str:
    port = server.proc.args[server.proc.args.index("--rest_api_port") + 1]
    return f"http://127.0.0.1:{port}{path}"


def _metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(_metrics_url(server), timeout=5) as response:
        return response.read().decode()


def test_status_reports_available_version(server: ServerProcess) -> None:
    statuses = server.status().model_version_status
    assert [(s.version, s.state) for s in statuses] == [(1, VersionStatus.AVAILABLE)]
    assert statuses[0].status.error_code == 0


def test_warmup_replayed_and_logged(server: ServerProcess) -> None:
    log = server.log()
    assert f"Loaded model {MODEL} version 1" in log
    assert "warmup: 2 request(s)" in log


def test_predict_default_signature(server: ServerProcess) -> None:
    request = make_request("", x=np.array([1.0, 2.5], dtype=np.float32))
    response = server.predict.Predict(request, timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [2.0, 5.0])
    assert tf.make_ndarray(response.outputs["total"]) == pytest.approx(3.5)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_string_signature_with_explicit_version(server: ServerProcess) -> None:
    request = make_request("lookup", version=1, ids=np.array([b"pear", b"fig", "äpple".encode()], dtype=object))
    response = server.predict.Predict(request, timeout=10)
    assert response.outputs["index"].dtype == tf.int64.as_datatype_enum
    assert tf.make_ndarray(response.outputs["index"]).tolist() == [2, -1, -1]
    assert response.outputs["upper"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(response.outputs["upper"]).tolist() == [b"PEAR", b"FIG", "äPPLE".encode()]
    assert response.model_spec.signature_name == "lookup"


def test_output_filter(server: ServerProcess) -> None:
    request = scale_request([1.0, 2.0])
    request.output_filter.append("total")
    response = server.predict.Predict(request, timeout=10)
    assert set(response.outputs) == {"total"}
    assert tf.make_ndarray(response.outputs["total"]) == pytest.approx(3.0)


def test_metadata_lists_signatures(server: ServerProcess) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    response = server.predict.GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert set(signatures) == set(SIGNATURES)
    assert set(signatures["scale"].inputs) == {"x"}
    assert signatures["scale"].inputs["x"].dtype == tf.float32.as_datatype_enum
    assert set(signatures["scale"].outputs) == {"y", "total"}
    assert set(signatures["top"].inputs) == {"rows", "k"}
    assert signatures["top"].inputs["k"].dtype == tf.int32.as_datatype_enum
    assert signatures["lookup"].inputs["ids"].dtype == tf.string.as_datatype_enum


def test_metadata_rejects_unknown_field(server: ServerProcess) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("graph")
    with pytest.raises(grpc.RpcError) as info:
        server.predict.GetModelMetadata(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'graph'" in info.value.details()


def _with_spec(request: predict_pb2.PredictRequest, **fields: Any) -> predict_pb2.PredictRequest:
    for key, value in fields.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _with_extra_input(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(np.array([1.0], dtype=np.float32)))
    return request


def _with_dtype_enum(request: predict_pb2.PredictRequest, enum: int) -> predict_pb2.PredictRequest:
    request.inputs["x"].dtype = enum
    return request


def _with_filter(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    request.output_filter.append("nope")
    return request


def _with_declared_shape(request: predict_pb2.PredictRequest, *dims: int) -> predict_pb2.PredictRequest:
    shape = request.inputs["x"].tensor_shape
    del shape.dim[:]
    for size in dims:
        shape.dim.add(size=size)
    return request


@pytest.mark.parametrize(
    ("make", "code", "fragments"),
    [
        pytest.param(
            lambda: make_request("scale", x=np.array([1, 2], dtype=np.int32)),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "float32", "int32"], id="wrong-dtype",
        ),
        pytest.param(
            lambda: _with_dtype_enum(scale_request([1.0]), 0),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "invalid DataType 0"], id="invalid-dtype-enum",
        ),
        pytest.param(
            lambda: make_request("lookup"), grpc.StatusCode.INVALID_ARGUMENT, ["missing", "'ids'"], id="missing-input"
        ),
        pytest.param(
            lambda: _with_extra_input(scale_request([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT, ["unknown", "'z'"], id="unknown-input",
        ),
        pytest.param(
            lambda: make_request("scale", x=np.ones((2, 2), dtype=np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "shape"], id="wrong-rank",
        ),
        pytest.param(
            lambda: make_request("top", rows=np.ones((2, 3), np.float32), k=np.array([1], np.int32)),
            grpc.StatusCode.INVALID_ARGUMENT, ["'k'", "shape"], id="vector-for-scalar",
        ),
        pytest.param(
            lambda: _with_declared_shape(scale_request([1.0, 2.0, 3.0]), 5),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "decode"], id="content-does-not-match-shape",
        ),
        pytest.param(
            lambda: _with_declared_shape(scale_request([1.0]), -3),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "negative"], id="negative-dim",
        ),
        pytest.param(
            lambda: scale_request([1.0] * (MAX_ROWS + 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["'x'", f"{MAX_ROWS + 1} rows", f"maximum batch size per request is {MAX_ROWS}"],
            id="too-many-rows",
        ),
        pytest.param(
            lambda: _with_spec(scale_request([1.0]), signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION, ['"nope"', "not found", "lookup", "scale"], id="unknown-signature",
        ),
        pytest.param(
            lambda: _with_spec(scale_request([1.0]), name="other"),
            grpc.StatusCode.NOT_FOUND, ["'other'", f"'{MODEL}'"], id="unknown-model",
        ),
        pytest.param(
            lambda: _with_spec(scale_request([1.0]), version=7),
            grpc.StatusCode.NOT_FOUND, ["version 7", "available versions: [1]"], id="unknown-version",
        ),
        pytest.param(
            lambda: _with_spec(scale_request([1.0]), version_label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT, ["Unrecognized servable version label", "'canary'"], id="unknown-label",
        ),
        pytest.param(
            lambda: _with_filter(scale_request([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT, ["output_filter", "'nope'"], id="unknown-output-filter",
        ),
        pytest.param(
            lambda: scale_request([1.0, float("nan")]),
            grpc.StatusCode.INVALID_ARGUMENT, ["x must be finite"], id="error-inside-model",
        ),
    ],
)  # fmt: skip
def test_predict_errors(
    server: ServerProcess,
    make: Callable[[], predict_pb2.PredictRequest],
    code: grpc.StatusCode,
    fragments: list[str],
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(make(), timeout=10)
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    # The server is still alive and serving.
    assert server.served_version() == 1


def test_declared_elements_over_limit_rejected_before_decoding(server: ServerProcess) -> None:
    # One float broadcast to 10^12 elements: a few bytes on the wire, terabytes if decoded.
    request = make_request("top", rows=np.ones((1, 1), np.float32), k=np.int32(1))
    request.inputs["rows"].tensor_shape.dim[1].size = 10**12
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'rows'" in info.value.details() and "elements" in info.value.details()
    assert server.served_version() == 1


def test_oversized_message_resource_exhausted(server: ServerProcess) -> None:
    request = make_request("lookup", ids=np.array([b"x" * (MAX_MESSAGE_BYTES + 10)], dtype=object))
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_MESSAGE_BYTES) in info.value.details()
    assert server.served_version() == 1


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("Classify", classification_pb2.ClassificationRequest),
        ("Regress", regression_pb2.RegressionRequest),
        ("MultiInference", inference_pb2.MultiInferenceRequest),
    ],
)
def test_unimplemented_methods(server: ServerProcess, method: str, request_type: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(server.predict, method)(request_type(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method in info.value.details() and "Predict" in info.value.details()


def test_health_serving(server: ServerProcess) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def _sample(text: str, name: str) -> float:
    """The value of one sample line in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_metrics(server: ServerProcess) -> None:
    ok = f'interest_graph_serving_requests_total{{method="Predict",model="{MODEL}",signature="top",status="OK"}}'
    bad = ok.replace('"OK"', '"INVALID_ARGUMENT"')
    latency = f'interest_graph_serving_request_latency_seconds_count{{model="{MODEL}",signature="top"}}'
    before = _metrics(server)
    server.predict.Predict(top_request(np.ones((2, 3)), k=2), timeout=10)
    with pytest.raises(grpc.RpcError):
        server.predict.Predict(make_request("top", rows=np.ones((2, 3), np.float32), k=np.int64(2)), timeout=10)
    with pytest.raises(grpc.RpcError):
        server.predict.Predict(scale_request([1.0], model="other"), timeout=10)
    after = _metrics(server)
    assert _sample(after, ok) - _sample(before, ok) == 1
    assert _sample(after, bad) - _sample(before, bad) == 1
    assert _sample(after, latency) - _sample(before, latency) == 2
    assert _sample(after, f'interest_graph_serving_loaded_versions{{model="{MODEL}"}}') == 1
    # Unknown model names from clients are pooled under one label.
    assert 'model="other"' not in after
    assert 'model="unknown",signature="unknown",status="NOT_FOUND"' in after
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(_metrics_url(server, "/elsewhere"), timeout=5)
    assert info.value.code == 404


def test_lifecycle_empty_start_hot_swap_bad_versions_and_sigterm(tmp_path: Path) -> None:
    base = tmp_path / "models"
    base.mkdir()
    (base / "not-a-version").mkdir()  # ignored: not an integer
    (base / "5").mkdir()  # ignored: still being written (no saved_model.pb)
    server = ServerProcess(
        ["--model_name", MODEL, "--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.3"],
        tmp_path / "server.log",
    )
    health = health_pb2_grpc.HealthStub(server.channel)
    try:
        server.wait_ready()

        # No version yet: the server is up, says so, and is not healthy.
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(scale_request([1.0]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no loaded version" in info.value.details()
        check = health_pb2.HealthCheckRequest(service="")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING

        push_version(base, 1, factor=2.0, staging=tmp_path)
        wait_for(lambda: server.served_version() == 1, "version 1", server.problem)
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING

        # A higher version is picked up without a restart and takes traffic.
        push_version(base, 2, factor=3.0, staging=tmp_path)
        wait_for(lambda: server.served_version() == 2, "version 2", server.problem)
        response = server.predict.Predict(scale_request([1.0, 2.0]), timeout=10)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 6.0])
        states = server.status_map()
        assert states[2].state == VersionStatus.AVAILABLE
        assert states[1].state == VersionStatus.END
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(scale_request([1.0], version=1), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # A corrupt version 3 fails to load; version 2 keeps serving.
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"\x00garbage, not a SavedModel\xff" * 10)
        wait_for(lambda: 3 in server.status_map(), "version 3 failure", server.problem)
        wait_for(lambda: server.status_map()[3].state == VersionStatus.END, "version 3 END", server.problem)
        states = server.status_map()
        assert states[3].status.error_code == grpc.StatusCode.UNKNOWN.value[0]
        assert "not a valid SavedModel" in states[3].status.error_message
        assert states[2].state == VersionStatus.AVAILABLE
        assert server.served_version() == 2

        # A version whose warmup request fails is not loaded either.
        shutil.copytree(base / "2", tmp_path / "tmp-4")
        write_warmup(tmp_path / "tmp-4", [make_request("scale", x=np.array([1], dtype=np.int32))])
        os.rename(tmp_path / "tmp-4", base / "4")
        wait_for(lambda: 4 in server.status_map(), "version 4 failure", server.problem)
        wait_for(lambda: server.status_map()[4].state == VersionStatus.END, "version 4 END", server.problem)
        assert "warmup" in server.status_map()[4].status.error_message
        assert server.served_version() == 2
        assert server.proc.poll() is None

        # Fixing the broken version 3 in place makes it eligible again.
        shutil.rmtree(base / "3")
        save_version(base / "3", factor=4.0)
        wait_for(lambda: server.served_version() == 3, "repaired version 3", server.problem)
        states = server.status_map()
        assert states[3].state == VersionStatus.AVAILABLE and not states[3].status.error_message
        assert states[2].state == VersionStatus.END

        # SIGTERM stops gracefully.
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert "Stopped" in server.log()
    finally:
        server.close()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """A request in flight when SIGTERM arrives still succeeds, new ones are refused, then exit 0."""
    push_version(tmp_path / "models", 1, factor=2.0, staging=tmp_path)
    batching = tmp_path / "batching.txt"
    # A long batch timeout keeps a lone batched request in flight for seconds.
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 4000000 }\n")
    server = ServerProcess(
        [
            "--model_name", MODEL, "--model_base_path", str(tmp_path / "models"),
            "--enable_batching", "--batching_parameters_file", str(batching),
            "--shutdown_grace_seconds", "20",
        ],
        tmp_path / "server.log",
    )  # fmt: skip
    try:
        server.wait_ready()
        with futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.predict.Predict, top_request(np.array([[1.0, 3.0, 2.0]]), k=2), timeout=30)
            time.sleep(1.0)  # the request reaches the server's batch queue
            assert not pending.done()
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "draining" in server.log(), "the signal to be handled", server.problem)
            wait_for(lambda: server.served_version() is None, "new requests to be refused", server.problem)
            with pytest.raises(grpc.RpcError) as info:
                server.predict.Predict(scale_request([1.0]), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            response = pending.result(timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["values"]), [[6.0, 4.0]])
        assert server.proc.wait(timeout=30) == 0
        assert "Stopped" in server.log()
    finally:
        server.close()
