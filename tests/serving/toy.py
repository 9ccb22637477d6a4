"""Tiny SavedModels in TF Serving's layout, and servers running them, for the serving tests."""

from __future__ import annotations

import contextlib
import os
import signal
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
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server import ModelServer
from serving.ports import free_port
from serving.server_config import ServerOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "toy"
START_TIMEOUT_S = 60.0
WAIT_TIMEOUT_S = 20.0
VersionStatus = get_model_status_pb2.ModelVersionStatus


class ToyModule(tf.Module):
    """A tiny model: numeric, string and batchable signatures, and a lookup table."""

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

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.float32, name="rows"), tf.TensorSpec([], tf.int32, name="k")]
    )
    def top(self, rows: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Like `recommend`: batched rows plus a scalar k; every output is per row."""
        rows = tf.debugging.assert_all_finite(rows, "rows must be finite")
        values, indices = tf.math.top_k(rows * self.factor, k=k)
        return {"values": values, "indices": indices}


SIGNATURES = ("serving_default", "scale", "lookup", "top")


def make_request(signature: str, version: int | None = None, model: str = MODEL, **inputs: Any) -> Any:
    """A PredictRequest with inputs converted by tf.make_tensor_proto."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def scale_request(values: list[float], **kwargs: Any) -> predict_pb2.PredictRequest:
    return make_request("scale", x=np.array(values, dtype=np.float32), **kwargs)


def top_request(rows: np.ndarray, k: int, **kwargs: Any) -> predict_pb2.PredictRequest:
    return make_request("top", rows=rows.astype(np.float32), k=np.int32(k), **kwargs)


def write_warmup(version_dir: Path, requests: list[predict_pb2.PredictRequest]) -> None:
    extra = version_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


def save_version(target: Path, factor: float, model: str = MODEL) -> Path:
    """Saves a ToyModule with two warmup requests at ``target`` (not atomic)."""
    module = ToyModule(factor)
    signatures = {"serving_default": module.scale, "scale": module.scale, "lookup": module.lookup, "top": module.top}
    tf.saved_model.save(module, str(target), signatures=signatures)
    write_warmup(
        target,
        [
            scale_request([1.0, 2.0], model=model),
            make_request("lookup", model=model, ids=np.array([b"apple", b"kiwi"], dtype=object)),
        ],
    )
    return target


def push_version(base: Path, version: int, factor: float, staging: Path, model: str = MODEL) -> Path:
    """Saves a version elsewhere and renames it into place atomically (like a Pusher)."""
    tmp_dir = save_version(staging / f"tmp-{model}-{version}", factor, model)
    base.mkdir(parents=True, exist_ok=True)
    target = base / str(version)
    os.rename(tmp_dir, target)
    return target


def wait_for(condition: Callable[[], bool], what: str, alive: Callable[[], str | None] = lambda: None) -> None:
    """Polls ``condition``; ``alive`` returns an error text if the server died."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        problem = alive()
        assert problem is None, f"server died while waiting for {what}:\n{problem}"
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Stubs:
    """The plain TF Serving stubs on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)

    def status(self, model: str = MODEL, **spec: Any) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if "version_label" in spec:
            request.model_spec.version_label = spec["version_label"]
        return self.models.GetModelStatus(request, timeout=5)

    def status_map(self, model: str = MODEL) -> dict[int, Any]:
        return {entry.version: entry for entry in self.status(model).model_version_status}

    def served_version(self, **kwargs: Any) -> int | None:
        try:
            return self.predict.Predict(scale_request([1.0], **kwargs), timeout=5).model_spec.version.value
        except grpc.RpcError:
            return None


@contextlib.contextmanager
def in_process_server(options: ServerOptions) -> Iterator[tuple[ModelServer, Stubs]]:
    """Starts a ModelServer in this process on a free port; yields it and plain-channel stubs."""
    server = ModelServer(options)
    try:
        server.start()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, Stubs(channel)
    finally:
        server.stop(grace=1)


class ServerProcess(Stubs):
    """``python -m serving.model_server`` as a subprocess, with stubs on a plain channel."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "serving.model_server", "--port", str(self.port), *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        super().__init__(grpc.insecure_channel(f"127.0.0.1:{self.port}"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def problem(self) -> str | None:
        """The log if the process has exited, else None (for `wait_for`)."""
        return None if self.proc.poll() is None else self.log()

    def wait_ready(self) -> None:
        """Waits until the gRPC port answers (GetModelStatus gets any status but UNAVAILABLE)."""
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

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
