"""A model server that speaks TensorFlow Serving's gRPC API.

The real ``tensorflow_model_server`` cannot be installed on the development
machines, so this module stands in for it: it serves models from TF Serving's
layout (``<base_path>/<version>/saved_model.pb`` plus
``assets.extra/tf_serving_warmup_requests``) over
``tensorflow.serving.PredictionService``, ``tensorflow.serving.ModelService``
and ``grpc.health.v1.Health``. Any TF Serving client works against it
unchanged, and the same SavedModels and config files run later on the real
server (see serving/deploy/).

This module wires the parts together: request handling lives in
`serving.predict`, models and labels in `serving.model_manager`, batching in
`serving.batching`, metrics in `serving.monitoring`, TLS and tokens in
`serving.security`, flags and config files in `serving.server_config`.

Run::

    python -m serving.model_server --port 8500 --model_name interest --model_base_path /models/interest
    python -m serving.model_server --model_config_file models.config --enable_batching
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import security
from serving.batching import Batcher, load_batching_options
from serving.errors import ServingError
from serving.model_loader import ServableVersion
from serving.model_manager import ModelManager
from serving.monitoring import Metrics, MetricsHttpServer, load_monitoring_config
from serving.predict import DEFAULT_SIGNATURE, RequestLimits, predict, run_signature
from serving.server_config import ServerOptions, initial_model_config, parse_args, read_model_server_config

logger = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
# Health service names: "" is the whole server (what probes ask by default).
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
# Label for metrics when a request names no configured model/signature, so
# random names from clients cannot blow up the number of time series.
UNKNOWN_LABEL = "unknown"


def _abort(context: grpc.ServicerContext, method: str, call: Callable[[], Any]) -> Any:
    """Runs an RPC body, turning every failure into a gRPC status with a message."""
    try:
        return call()
    except ServingError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - log and answer INTERNAL instead of crashing
        logger.exception("%s failed", method)
        error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    # abort() raises; called outside the try so it is not caught above.
    context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(
        self,
        manager: ModelManager,
        limits: RequestLimits,
        execute: Callable[..., Any],
        metrics: Metrics,
    ) -> None:
        """Initialises the servicer.

        Args:
            manager: The served models.
            limits: Per-request limits.
            execute: Runs a signature (directly or through the batcher).
            metrics: Where requests are counted and timed.
        """
        self._manager = manager
        self._limits = limits
        self._execute = execute
        self._metrics = metrics

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Runs a signature of the requested model version."""
        start = time.perf_counter()
        labels = {"model": UNKNOWN_LABEL, "signature": UNKNOWN_LABEL}
        status = grpc.StatusCode.OK

        def call() -> predict_pb2.PredictResponse:
            servable = self._manager.resolve(request.model_spec)
            labels["model"] = servable.model_name
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in servable.signatures:
                labels["signature"] = signature_name
            return predict(servable, request, self._limits, self._execute)

        try:
            return _abort(context, "Predict", call)
        except Exception:
            status = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            self._metrics.observe_request(
                labels["model"], labels["signature"], "Predict", status.name, time.perf_counter() - start
            )

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        """Returns the SignatureDefs of the requested version, packed as TF Serving does."""
        return _abort(context, "GetModelMetadata", lambda: self._metadata(request))

    def _metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must name at least one field")
        unsupported = [field for field in fields if field != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Metadata field(s) {unsupported} not supported; only {SIGNATURE_DEF_FIELD!r} is",
            )
        servable = self._manager.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.model_name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def _unimplemented(self, method: str, context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not implemented by this model server; call Predict with the model's signatures",
        )

    def Classify(self, request: Any, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not supported: the project's models expose Predict signatures only."""
        self._unimplemented("Classify", context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not supported: the project's models expose Predict signatures only."""
        self._unimplemented("Regress", context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not supported: the project's models expose Predict signatures only."""
        self._unimplemented("MultiInference", context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager) -> None:
        """Initialises the servicer.

        Args:
            manager: The served models.
        """
        self._manager = manager

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> Any:
        """Reports each version's state, with the error of a failed load."""
        return _abort(context, "GetModelStatus", lambda: self._status(request))

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest) -> Any:
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in self._manager.status(request.model_spec):
            entry = response.model_version_status.add()
            entry.version = state.version
            entry.state = state.state
            if state.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = state.error
        return response

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> Any:
        """Applies a new ModelServerConfig; returns once new models have loaded."""

        def call() -> model_management_pb2.ReloadConfigResponse:
            self._manager.apply_config(request.config)
            logger.info("Applied a new config via HandleReloadConfigRequest: models %s", self._manager.model_names())
            return model_management_pb2.ReloadConfigResponse()

        return _abort(context, "HandleReloadConfigRequest", call)


class _Periodic:
    """Calls a function every ``seconds`` in a daemon thread until stopped."""

    def __init__(self, name: str, seconds: float, fn: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._seconds = seconds
        self._fn = fn
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                self._fn()
            except Exception:  # noqa: BLE001 - a poller must survive e.g. a vanished directory
                logger.exception("%s failed", self._thread.name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ModelServer:
    """One running server: models, gRPC services, batching, metrics, pollers."""

    def __init__(self, options: ServerOptions) -> None:
        """Prepares the server; `start` loads the models and opens the ports.

        Args:
            options: Server settings.
        """
        self.options = options
        self.metrics = Metrics()
        self.health = health.HealthServicer()
        self._draining = False
        self.manager = ModelManager(
            warmup=self._warmup,
            allow_labels_for_unavailable=options.allow_version_labels_for_unavailable_models,
            on_change=self._on_models_changed,
        )
        self.batcher: Batcher | None = None
        max_rows = options.max_request_batch_size
        if options.enable_batching:
            batching = load_batching_options(options.batching_parameters_file)
            self.batcher = Batcher(batching, run_signature, self._on_batch)
            max_rows = min(max_rows, batching.max_batch_size) if max_rows else batching.max_batch_size
        self.limits = RequestLimits(max_rows=max_rows, max_elements=options.grpc_max_message_bytes)
        self.port = 0
        self.metrics_port = 0
        self._grpc: grpc.Server | None = None
        self._http: MetricsHttpServer | None = None
        self._pollers: list[_Periodic] = []
        self._config_text = ""
        self._on_models_changed()

    def start(self) -> None:
        """Loads the configured models, then opens the gRPC (and metrics) ports.

        Raises:
            ValueError: For an unsafe bind, an invalid TLS/token/monitoring
                file or a port that cannot be bound.
            ServingError: If the initial model config is invalid.
        """
        options = self.options
        credentials = security.load_server_credentials(options.ssl_config_file) if options.ssl_config_file else None
        token = security.read_token(options.auth_token_file) if options.auth_token_file else None
        security.check_exposure(options.host, credentials is not None, token is not None, options.allow_insecure_remote)
        monitoring = load_monitoring_config(options.monitoring_config_file)
        prometheus = monitoring.prometheus_config
        if prometheus.enable and not options.rest_api_port:
            raise ValueError("Prometheus metrics are served over HTTP: --monitoring_config_file needs --rest_api_port")

        # Like TF Serving, load what is there before opening the port, so that
        # clients do not get UNAVAILABLE during a normal start.
        config = initial_model_config(options)
        self.manager.apply_config(config)
        self._config_text = str(config)

        interceptors = [security.BearerTokenInterceptor(token)] if token else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.max_workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", options.grpc_max_message_bytes),
                ("grpc.max_receive_message_length", options.grpc_max_message_bytes),
            ],
        )
        execute = self.batcher.run if self.batcher else run_signature
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.limits, execute, self.metrics), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{options.host}:{options.port}"
        self.port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        if self.port == 0:
            raise ValueError(f"cannot bind {address}")
        server.start()
        self._grpc = server
        if prometheus.enable:
            path = prometheus.path or "/monitoring/prometheus/metrics"
            self._http = MetricsHttpServer(self.metrics, options.host, options.rest_api_port, path)
            self.metrics_port = self._http.port
            logger.info("Prometheus metrics on http://%s:%d%s", options.host, self.metrics_port, path)
        if options.file_system_poll_wait_seconds > 0:
            self._pollers.append(
                _Periodic("file-system-poll", options.file_system_poll_wait_seconds, self.manager.poll_file_system)
            )
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._pollers.append(
                _Periodic("config-poll", options.model_config_file_poll_wait_seconds, self._reload_config_file)
            )
        logger.info(
            "Serving models %s on %s:%d (%s%s)",
            self.manager.model_names(),
            options.host,
            self.port,
            "TLS" if credentials else "plaintext",
            ", bearer token" if token else "",
        )

    def stop(self, grace: float | None = None) -> None:
        """Drains and stops: NOT_SERVING, refuse new RPCs, finish in-flight ones, stop threads.

        Args:
            grace: Seconds in-flight RPCs get; None uses the option.
        """
        self._draining = True
        self._on_models_changed()
        if self._grpc is not None:
            self._grpc.stop(self.options.shutdown_grace_seconds if grace is None else grace).wait()
        if self.batcher is not None:
            self.batcher.stop()
        for poller in self._pollers:
            poller.stop()
        if self._http is not None:
            self._http.stop()

    def _reload_config_file(self) -> None:
        """Applies ``--model_config_file`` again if its content changed."""
        config = read_model_server_config(self.options.model_config_file or "")
        if str(config) == self._config_text:
            return
        self._config_text = str(config)
        try:
            self.manager.apply_config(config)
        except ServingError as exc:
            logger.error("New model config from %s not fully applied: %s", self.options.model_config_file, exc.message)
            return
        logger.info(
            "Applied model config from %s: models %s", self.options.model_config_file, self.manager.model_names()
        )

    def _warmup(self, servable: ServableVersion, request: predict_pb2.PredictRequest) -> None:
        """Replays one warmup request through the Predict code path (unbatched)."""
        try:
            predict(servable, request, self.limits, run_signature)
        except ServingError as exc:
            raise RuntimeError(f"warmup request failed: {exc.code.name}: {exc.message}") from exc

    def _on_models_changed(self) -> None:
        """Keeps the health status and the loaded-versions gauge in step with the models."""
        serving = not self._draining and self.manager.ready()
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in HEALTH_SERVICES:
            self.health.set(service, status)
        self.metrics.set_loaded_versions(self.manager.loaded_versions())

    def _on_batch(self, signature: Any, requests: int, _rows: int) -> None:
        self.metrics.batch_requests.labels(signature.servable.model_name, signature.name).observe(requests)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGTERM or SIGINT, then drains and exits 0.

    Args:
        argv: Command-line arguments without the program name; None reads
            ``sys.argv``.

    Returns:
        The process exit code: 0 after a clean stop, 2 if start-up failed.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = parse_args(argv)
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("Received signal %d; draining", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = ModelServer(options)
    try:
        server.start()
    except (ValueError, ServingError) as exc:
        logger.error("Failed to start server: %s", exc)
        server.stop(grace=0)
        return 2
    # Event.wait with a timeout keeps the main thread responsive to signals.
    while not stopping.wait(1.0):
        pass
    server.stop()
    logger.info("Stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
