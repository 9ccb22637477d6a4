"""The embedded model server as a subprocess, batching off or on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from bench import REPO_ROOT
from bench.serving.model import ServedModel
from serving.ports import free_port

BATCHING_PARAMETERS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "batching_parameters.txt")
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


def server_command(model: ServedModel, port: int, batching_file: str | None) -> list[str]:
    """The model server's command line, with TF Serving's flags.

    Args:
      model: what to serve.
      port: the gRPC port.
      batching_file: a BatchingParameters text file to enable batching with;
        None serves without batching.

    Returns:
      argv for `subprocess`.
    """
    command = [
        sys.executable,
        "-m",
        "serving.model_server",
        f"--port={port}",
        f"--model_name={model.name}",
        f"--model_base_path={model.base_path}",
    ]
    if batching_file is not None:
        command += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
    return command


def _ready(channel: grpc.Channel, model: ServedModel) -> bool:
    """True once the health service says SERVING and the model's version is AVAILABLE."""
    try:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            return False
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model.name
        request.model_spec.version.value = model.version
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=2)
    except grpc.RpcError:
        return False
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return any(v.state == available for v in status.model_version_status)


class ServerProcess:
    """`python -m serving.model_server` running one model, ready when constructed.

    Args:
      model: what to serve.
      batching_file: BatchingParameters file (batching on) or None (off).
      log_path: where the server's output goes.
    """

    def __init__(self, model: ServedModel, batching_file: str | None, log_path: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                server_command(model, self.port, batching_file),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(model)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, model: ServedModel) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with grpc.insecure_channel(self.target) as channel:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the model server exited with {self.process.returncode}; see {self.log_path}")
                if _ready(channel, model):
                    return
                time.sleep(0.5)
        raise TimeoutError(f"the model server was not ready within {READY_TIMEOUT_S:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM (the server drains in-flight requests), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
