"""A model server that speaks TensorFlow Serving's gRPC API.

The real ``tensorflow_model_server`` cannot be installed on the development
machines, so this module stands in for it: it serves one model from TF
Serving's layout (``<model_base_path>/<version>/saved_model.pb`` plus
``assets.extra/tf_serving_warmup_requests``) over the
``tensorflow.serving.PredictionService`` and ``tensorflow.serving.ModelService``
gRPC services. Any TF Serving client works against it unchanged, and the same
SavedModels run later on the real server.

Run::

    python -m serving.model_server --port 8500 --model_name interest --model_base_path /models/interest
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_loader import (
    NoServableVersionError,
    ServableVersion,
    ServableVersions,
    VersionNotFoundError,
)

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


@dataclasses.dataclass
class ModelServerConfig:
    """Settings of one model server, named after tensorflow_model_server's flags.

    Attributes:
        model_name: Name clients put in ``ModelSpec.name``.
        model_base_path: Directory holding integer version subdirectories.
        port: gRPC port (0 picks a free one).
        host: Interface to bind.
        file_system_poll_wait_seconds: Seconds between scans for new versions;
            <= 0 scans only at start-up.
        max_message_bytes: Maximum gRPC message size, both directions.
        max_workers: Threads handling RPCs concurrently.
    """

    model_name: str
    model_base_path: str
    port: int = 8500
    host: str = "127.0.0.1"
    file_system_poll_wait_seconds: float = 1.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_workers: int = 8


class ServingError(Exception):
    """A request error carrying the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        """Initialises the error.

        Args:
            code: gRPC status code for the client.
            message: Human-readable details naming the problem.
        """
        super().__init__(message)
        self.code = code
        self.message = message


def _signature(servable: ServableVersion, name: str) -> tuple[str, Any]:
    """Resolves a signature name (empty means ``serving_default``)."""
    name = name or DEFAULT_SIGNATURE
    fn = servable.signatures.get(name)
    if fn is None:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature {name!r} not found in model {servable.model_name!r} version "
            f"{servable.version}; available signatures: {sorted(servable.signatures)}",
        )
    return name, fn


def _dtype_name(enum: int) -> str:
    """Names a DataType enum from a request, tolerating invalid values."""
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"invalid DataType {enum}"


def _convert_inputs(signature_name: str, fn: Any, request: predict_pb2.PredictRequest) -> dict[str, tf.Tensor]:
    """Checks request inputs against the signature and converts them to tensors.

    Args:
        signature_name: Name of the signature, for messages.
        fn: The signature's concrete function.
        request: The Predict request.

    Returns:
        Input name -> tensor, ready for ``fn(**inputs)``.

    Raises:
        ServingError: INVALID_ARGUMENT on missing/unknown names, dtype or shape
            mismatches and undecodable TensorProtos.
    """
    specs: dict[str, tf.TensorSpec] = fn.structured_input_signature[1]
    missing = sorted(set(specs) - set(request.inputs))
    unknown = sorted(set(request.inputs) - set(specs))
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing inputs {missing}")
        if unknown:
            problems.append(f"unknown inputs {unknown}")
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature {signature_name!r}: {'; '.join(problems)}; expected inputs {sorted(specs)}",
        )
    tensors = {}
    for name, spec in specs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature {signature_name!r}: input {name!r} expects dtype {spec.dtype.name}, "
                f"got {_dtype_name(proto.dtype)}",
            )
        try:
            array = tf.make_ndarray(proto)
        except Exception as exc:  # noqa: BLE001 - any malformed TensorProto is the caller's error
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: cannot decode TensorProto: {exc}"
            ) from exc
        if not spec.shape.is_compatible_with(array.shape):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature {signature_name!r}: input {name!r} expects shape {spec.shape}, got {list(array.shape)}",
            )
        # Strings come back as an object array of bytes; the explicit dtype
        # keeps tf from guessing (and keeps empty arrays typed).
        tensors[name] = tf.convert_to_tensor(array, dtype=spec.dtype)
    return tensors


def _to_tensor_proto(value: tf.Tensor) -> Any:
    """Converts one output tensor to a TensorProto the way TF Serving would."""
    # String tensors come back from .numpy() as object arrays of bytes (plain
    # bytes for a scalar); make_tensor_proto writes them to string_val.
    return tf.make_tensor_proto(value.numpy(), dtype=value.dtype)


def run_predict(servable: ServableVersion, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Runs one Predict request against a loaded version.

    Used both for client requests and for warmup replay, so warmup exercises
    exactly the serving code path. ``model_spec`` name/version are resolved by
    the caller; here only the signature name matters.

    Args:
        servable: The version to run.
        request: The request.

    Returns:
        The response, with ``model_spec`` naming the version actually used.

    Raises:
        ServingError: With the status code to answer.
    """
    signature_name, fn = _signature(servable, request.model_spec.signature_name)
    inputs = _convert_inputs(signature_name, fn, request)
    output_names = set(fn.structured_outputs)
    unknown_filter = sorted(set(request.output_filter) - output_names)
    if unknown_filter:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {unknown_filter}; signature {signature_name!r} "
            f"has outputs {sorted(output_names)}",
        )
    try:
        outputs = fn(**inputs)
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as exc:
        # Bad values the dtype/shape checks cannot see (e.g. an out-of-range id).
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the server must answer, never crash
        raise ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}") from exc
    wanted = set(request.output_filter) or output_names
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for name in sorted(wanted):
        response.outputs[name].CopyFrom(_to_tensor_proto(outputs[name]))
    return response


def _resolve(versions: ServableVersions, model_spec: Any) -> ServableVersion:
    """Maps a request's ModelSpec to the version that serves it.

    Raises:
        ServingError: NOT_FOUND for an unknown model or version, UNAVAILABLE
            while no version has loaded yet, INVALID_ARGUMENT for labels.
    """
    if model_spec.name != versions.model_name:
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            f"model {model_spec.name!r} not found; this server serves {versions.model_name!r}",
        )
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"version label {model_spec.version_label!r} is not configured; request a version number",
        )
    requested = model_spec.version.value if model_spec.HasField("version") else None
    try:
        return versions.get(requested)
    except NoServableVersionError as exc:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
    except VersionNotFoundError as exc:
        raise ServingError(grpc.StatusCode.NOT_FOUND, str(exc)) from exc


def _answer(context: grpc.ServicerContext, method: str, call: Any) -> Any:
    """Runs an RPC body, turning every failure into a gRPC status."""
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

    def __init__(self, versions: ServableVersions) -> None:
        """Initialises the servicer.

        Args:
            versions: The model's versions.
        """
        self._versions = versions

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Runs a signature of the requested model version."""
        return _answer(context, "Predict", lambda: run_predict(_resolve(self._versions, request.model_spec), request))

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        """Returns the SignatureDefs of the requested version."""
        return _answer(context, "GetModelMetadata", lambda: self._metadata(request))

    def _metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must name at least one field")
        unsupported = [field for field in fields if field != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata fields {unsupported} are not supported; only {SIGNATURE_DEF_FIELD!r} is",
            )
        servable = _resolve(self._versions, request.model_spec)
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


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus."""

    def __init__(self, versions: ServableVersions) -> None:
        """Initialises the servicer.

        Args:
            versions: The model's versions.
        """
        self._versions = versions

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> Any:
        """Reports serving (AVAILABLE), unloaded and failed (END) versions."""
        return _answer(context, "GetModelStatus", lambda: self._status(request))

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest) -> Any:
        spec = request.model_spec
        if spec.name != self._versions.model_name:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} not found; this server serves {self._versions.model_name!r}",
            )
        states = self._versions.states()
        if spec.HasField("version"):
            states = [state for state in states if state.version == spec.version.value]
            if not states:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"model {spec.name!r} has no version {spec.version.value}"
                )
        if not states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"model {spec.name!r} has no version yet; waiting for one to appear"
            )
        version_status = get_model_status_pb2.ModelVersionStatus
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in states:
            entry = response.model_version_status.add()
            entry.version = state.version
            entry.state = version_status.AVAILABLE if state.available else version_status.END
            if state.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = state.error
        return response

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not supported: this server serves one model from flags."""
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented; push a new version under --model_base_path instead",
        )


def serve(config: ModelServerConfig) -> tuple[grpc.Server, ServableVersions, int]:
    """Loads the newest version (if any) and starts the gRPC server.

    Args:
        config: Server settings.

    Returns:
        The started server, the model's versions (stop them on shutdown) and
        the bound port (useful with ``port=0``).

    Raises:
        RuntimeError: If the port cannot be bound.
    """
    versions = ServableVersions(
        config.model_name,
        config.model_base_path,
        poll_wait_seconds=config.file_system_poll_wait_seconds,
        warmup=_warmup,
    )
    # Like TF Serving, load what is already there before opening the port, so
    # that clients do not get UNAVAILABLE during a normal start.
    versions.poll_once()
    versions.start()
    options = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.max_workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(versions), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(versions), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        versions.stop()
        raise RuntimeError(f"cannot bind {config.host}:{config.port}")
    server.start()
    logger.info("Serving model %s from %s on %s:%d", config.model_name, config.model_base_path, config.host, port)
    return server, versions, port


def _warmup(servable: ServableVersion, request: predict_pb2.PredictRequest) -> None:
    """Replays one warmup request through the Predict code path."""
    try:
        run_predict(servable, request)
    except ServingError as exc:
        raise RuntimeError(f"warmup request failed: {exc.code.name}: {exc.message}") from exc


def _parse_args(argv: Sequence[str] | None) -> ModelServerConfig:
    parser = argparse.ArgumentParser(description="TensorFlow Serving-compatible gRPC model server.")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--model_name", required=True, help="name clients use in ModelSpec.name")
    parser.add_argument("--model_base_path", required=True, help="directory of integer version subdirectories")
    parser.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1.0, help="seconds between scans for new versions"
    )
    parser.add_argument(
        "--grpc_max_message_bytes", type=int, default=64 * 1024 * 1024, help="maximum gRPC message size"
    )
    parser.add_argument("--max_workers", type=int, default=8, help="RPC handler threads")
    args = parser.parse_args(argv)
    return ModelServerConfig(
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        port=args.port,
        host=args.host,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_message_bytes=args.grpc_max_message_bytes,
        max_workers=args.max_workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGTERM or SIGINT.

    Args:
        argv: Command-line arguments without the program name; None reads
            ``sys.argv``.

    Returns:
        The process exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _parse_args(argv)
    server, versions, _ = serve(config)
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        logger.info("Received signal %d; stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # Event.wait with a timeout keeps the main thread responsive to signals.
    while not stopping.wait(1.0):
        pass
    server.stop(grace=5).wait()
    versions.stop()
    logger.info("Stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
