"""End-to-end tests of serving.model_server over real gRPC.

The server runs as a subprocess (``python -m serving.model_server``) on tiny
SavedModels built here, and is called with the plain TF Serving stubs, exactly
as any TF Serving client would call it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "toy"
START_TIMEOUT_S = 60.0
SWAP_TIMEOUT_S = 20.0
VersionStatus = get_model_status_pb2.ModelVersionStatus


class ToyModule(tf.Module):
    """A tiny model with a numeric and a string signature and a lookup table."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = tf.Variable(factor, dtype=tf.float32)
        # A table brings in the __saved_model_init_op the server must hide.
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(["apple", "pear"]), tf.constant([1, 2], dtype=tf.int64)),
            default_value=-1,
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.debugging.assert_all_finite(x, "x must be finite")
        return {"y": x * self.factor, "total": tf.reduce_sum(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="ids")])
    def lookup(self, ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"index": self.table.lookup(ids), "upper": tf.strings.upper(ids)}


def _request(signature: str, version: int | None = None, **inputs: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _scale_request(values: list[float], **kwargs: Any) -> predict_pb2.PredictRequest:
    return _request("scale", x=np.array(values, dtype=np.float32), **kwargs)


def _write_warmup(version_dir: Path, requests: list[predict_pb2.PredictRequest]) -> None:
    extra = version_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


def _push_version(base: Path, version: int, factor: float, staging: Path) -> Path:
    """Saves a ToyModule version and moves it into place atomically (like a Pusher)."""
    module = ToyModule(factor)
    tmp_dir = staging / f"tmp-{version}"
    tf.saved_model.save(
        module,
        str(tmp_dir),
        signatures={"serving_default": module.scale, "scale": module.scale, "lookup": module.lookup},
    )
    _write_warmup(
        tmp_dir,
        [_scale_request([1.0, 2.0]), _request("lookup", ids=np.array([b"apple", b"kiwi"], dtype=object))],
    )
    base.mkdir(parents=True, exist_ok=True)
    target = base / str(version)
    os.rename(tmp_dir, target)
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A model server subprocess, its channel and stubs."""

    def __init__(self, base: Path, log_path: Path) -> None:
        self.port = _free_port()
        self.log_path = log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "serving.model_server",
                    "--port", str(self.port),
                    "--model_name", MODEL,
                    "--model_base_path", str(base),
                    "--file_system_poll_wait_seconds", "0.5",
                ],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Waits until the gRPC port answers (GetModelStatus gets any status)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            try:
                self.status()
                return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    return  # the server answered (e.g. NOT_FOUND: no version yet)
            time.sleep(0.2)
        pytest.fail(f"server did not start in {START_TIMEOUT_S}s:\n{self.log()}")

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        return self.models.GetModelStatus(request, timeout=5)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_for(condition: Callable[[], bool], what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"server died while waiting for {what}:\n{server.log()}"
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{server.log()}")


def _served_version(server: ServerProcess) -> int | None:
    try:
        return server.predict.Predict(_scale_request([1.0]), timeout=5).model_spec.version.value
    except grpc.RpcError:
        return None


def _status_map(server: ServerProcess) -> dict[int, VersionStatus]:
    return {entry.version: entry for entry in server.status().model_version_status}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("served")
    _push_version(root / "models", 1, factor=2.0, staging=root)
    proc = ServerProcess(root / "models", root / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.close()


def test_status_reports_available_version(server: ServerProcess) -> None:
    statuses = server.status().model_version_status
    assert [(s.version, s.state) for s in statuses] == [(1, VersionStatus.AVAILABLE)]
    assert statuses[0].status.error_code == 0


def test_warmup_replayed_and_logged(server: ServerProcess) -> None:
    log = server.log()
    assert f"Loaded model {MODEL} version 1" in log
    assert "warmup: 2 request(s)" in log


def test_predict_default_signature(server: ServerProcess) -> None:
    request = _request("", x=np.array([1.0, 2.5], dtype=np.float32))
    response = server.predict.Predict(request, timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [2.0, 5.0])
    assert tf.make_ndarray(response.outputs["total"]) == pytest.approx(3.5)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_string_signature_with_explicit_version(server: ServerProcess) -> None:
    request = _request("lookup", version=1, ids=np.array([b"pear", b"fig", "äpple".encode()], dtype=object))
    response = server.predict.Predict(request, timeout=10)
    assert response.outputs["index"].dtype == tf.int64.as_datatype_enum
    assert tf.make_ndarray(response.outputs["index"]).tolist() == [2, -1, -1]
    assert response.outputs["upper"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(response.outputs["upper"]).tolist() == [b"PEAR", b"FIG", "äPPLE".encode()]
    assert response.model_spec.signature_name == "lookup"


def test_output_filter(server: ServerProcess) -> None:
    request = _scale_request([1.0, 2.0])
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
    assert set(signatures) == {"serving_default", "scale", "lookup"}
    assert set(signatures["scale"].inputs) == {"x"}
    assert signatures["scale"].inputs["x"].dtype == tf.float32.as_datatype_enum
    assert set(signatures["scale"].outputs) == {"y", "total"}
    assert set(signatures["lookup"].inputs) == {"ids"}
    assert signatures["lookup"].inputs["ids"].dtype == tf.string.as_datatype_enum
    assert set(signatures["lookup"].outputs) == {"index", "upper"}


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


@pytest.mark.parametrize(
    ("make_request", "code", "fragments"),
    [
        pytest.param(
            lambda: _request("scale", x=np.array([1, 2], dtype=np.int32)),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "float32", "int32"], id="wrong-dtype",
        ),
        pytest.param(
            lambda: _with_dtype_enum(_scale_request([1.0]), 0),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "invalid DataType 0"], id="invalid-dtype-enum",
        ),
        pytest.param(
            lambda: _request("lookup"), grpc.StatusCode.INVALID_ARGUMENT, ["missing", "'ids'"], id="missing-input"
        ),
        pytest.param(
            lambda: _with_extra_input(_scale_request([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT, ["unknown", "'z'"], id="unknown-input",
        ),
        pytest.param(
            lambda: _request("scale", x=np.ones((2, 2), dtype=np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT, ["'x'", "shape"], id="wrong-rank",
        ),
        pytest.param(
            lambda: _with_spec(_scale_request([1.0]), signature_name="nope"),
            grpc.StatusCode.INVALID_ARGUMENT, ["'nope'", "lookup", "scale"], id="unknown-signature",
        ),
        pytest.param(
            lambda: _with_spec(_scale_request([1.0]), name="other"),
            grpc.StatusCode.NOT_FOUND, ["'other'"], id="unknown-model",
        ),
        pytest.param(
            lambda: _with_spec(_scale_request([1.0]), version=7),
            grpc.StatusCode.NOT_FOUND, ["version 7"], id="unknown-version",
        ),
        pytest.param(
            lambda: _with_filter(_scale_request([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT, ["output_filter", "'nope'"], id="unknown-output-filter",
        ),
        pytest.param(
            lambda: _scale_request([1.0, float("nan")]),
            grpc.StatusCode.INVALID_ARGUMENT, ["x must be finite"], id="error-inside-model",
        ),
    ],
)  # fmt: skip
def test_predict_errors(
    server: ServerProcess,
    make_request: Callable[[], predict_pb2.PredictRequest],
    code: grpc.StatusCode,
    fragments: list[str],
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(make_request(), timeout=10)
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    # The server is still alive and serving.
    assert server.predict.Predict(_scale_request([1.0]), timeout=10).model_spec.version.value == 1


def test_classify_unimplemented(server: ServerProcess) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Classify(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Classify" in info.value.details()


def test_lifecycle_empty_start_hot_swap_bad_versions_and_sigterm(tmp_path: Path) -> None:
    base = tmp_path / "models"
    base.mkdir()
    (base / "not-a-version").mkdir()  # ignored: not an integer
    (base / "5").mkdir()  # ignored: still being written (no saved_model.pb)
    server = ServerProcess(base, tmp_path / "server.log")
    try:
        server.wait_ready()

        # No version yet: the server is up and says so.
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(_scale_request([1.0]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no loaded version" in info.value.details()

        _push_version(base, 1, factor=2.0, staging=tmp_path)
        _wait_for(lambda: _served_version(server) == 1, "version 1", server)

        # A higher version is picked up without a restart and takes traffic.
        _push_version(base, 2, factor=3.0, staging=tmp_path)
        _wait_for(lambda: _served_version(server) == 2, "version 2", server)
        response = server.predict.Predict(_scale_request([1.0, 2.0]), timeout=10)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 6.0])
        states = _status_map(server)
        assert states[2].state == VersionStatus.AVAILABLE
        assert states[1].state == VersionStatus.END
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(_scale_request([1.0], version=1), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # A corrupt version 3 fails to load; version 2 keeps serving.
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"\x00garbage, not a SavedModel\xff" * 10)
        _wait_for(lambda: 3 in _status_map(server), "version 3 failure", server)
        states = _status_map(server)
        assert states[3].state == VersionStatus.END
        assert states[3].status.error_code != 0 and states[3].status.error_message
        assert states[2].state == VersionStatus.AVAILABLE
        assert _served_version(server) == 2

        # A version whose warmup request fails is not loaded either.
        shutil.copytree(base / "2", tmp_path / "tmp-4")
        _write_warmup(tmp_path / "tmp-4", [_request("scale", x=np.array([1], dtype=np.int32))])
        os.rename(tmp_path / "tmp-4", base / "4")
        _wait_for(lambda: 4 in _status_map(server), "version 4 failure", server)
        assert "warmup" in _status_map(server)[4].status.error_message
        assert _served_version(server) == 2
        assert server.proc.poll() is None

        # Fixing the broken version 3 in place makes it eligible again.
        shutil.rmtree(base / "3")
        shutil.copytree(base / "2", base / "3")
        _wait_for(lambda: _served_version(server) == 3, "repaired version 3", server)
        states = _status_map(server)
        assert states[3].state == VersionStatus.AVAILABLE and not states[3].status.error_message
        assert states[2].state == VersionStatus.END

        # SIGTERM stops gracefully.
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert "Stopped" in server.log()
    finally:
        server.close()
