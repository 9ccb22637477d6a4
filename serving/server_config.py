"""Command-line flags and config files of the model server.

Flags are named like ``tensorflow_model_server``'s where TF Serving has one
(``--port``, ``--model_name``, ``--model_base_path``, ``--model_config_file``,
``--enable_batching=true``, ...), so a deployment can switch between the two
servers by changing the binary. Booleans accept ``--flag``, ``--flag=true`` and
``--flag=false`` as TF Serving's do.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REQUEST_BATCH_SIZE = 10_000


@dataclasses.dataclass
class ServerOptions:
    """Settings of one model server (see `parse_args` for each flag's meaning)."""

    port: int = 8500
    host: str = "127.0.0.1"
    model_name: str | None = None
    model_base_path: str | None = None
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    allow_version_labels_for_unavailable_models: bool = False
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    max_request_batch_size: int = DEFAULT_MAX_REQUEST_BATCH_SIZE
    grpc_max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 16
    rest_api_port: int = 0
    monitoring_config_file: str | None = None
    ssl_config_file: str | None = None
    auth_token_file: str | None = None
    allow_insecure_remote: bool = False
    shutdown_grace_seconds: float = 10.0


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interest-graph serve",
        description="TensorFlow Serving-compatible gRPC model server (PredictionService, ModelService, "
        "grpc.health.v1.Health). Flags follow tensorflow_model_server's.",
    )
    defaults = ServerOptions()

    def flag(name: str, help_text: str, **kwargs: object) -> None:
        parser.add_argument(f"--{name}", default=getattr(defaults, name), help=help_text, **kwargs)

    def bool_flag(name: str, help_text: str) -> None:
        flag(name, help_text, type=_bool, nargs="?", const=True, metavar="true|false")

    flag("port", "gRPC port (0 picks a free one)", type=int)
    flag("host", "interface to bind; anything but loopback needs TLS or a token (see --allow_insecure_remote)")
    flag("model_name", "name clients put in ModelSpec.name (single-model mode)")
    flag("model_base_path", "directory of integer version subdirectories (single-model mode)")
    flag("model_config_file", "ModelServerConfig text proto: several models, version policies and labels")
    flag(
        "model_config_file_poll_wait_seconds",
        "seconds between re-reads of --model_config_file (0: read once)",
        type=float,
    )
    flag("file_system_poll_wait_seconds", "seconds between scans for new versions (0: scan once)", type=float)
    bool_flag(
        "allow_version_labels_for_unavailable_models",
        "let a new version label point to a version that is not loaded yet",
    )
    bool_flag("enable_batching", "merge concurrent compatible Predict requests into one call")
    flag("batching_parameters_file", "BatchingParameters text proto (TF Serving's format)")
    flag(
        "max_request_batch_size",
        "most rows (batch dimension) one request may carry; 0: no limit (with batching, max_batch_size also applies)",
        type=int,
    )
    flag("grpc_max_message_bytes", "largest gRPC message accepted or sent, in bytes", type=int)
    flag("max_workers", "threads handling RPCs concurrently", type=int)
    flag("rest_api_port", "HTTP port for the metrics of --monitoring_config_file (0: no HTTP listener)", type=int)
    flag("monitoring_config_file", "MonitoringConfig text proto enabling Prometheus metrics")
    flag("ssl_config_file", "SSLConfig text proto (server_key, server_cert, custom_ca, client_verify) for TLS")
    flag("auth_token_file", "file holding a token every call must send as 'authorization: Bearer <token>'")
    bool_flag("allow_insecure_remote", "allow a non-loopback --host without TLS or token")
    flag("shutdown_grace_seconds", "on SIGTERM/SIGINT, seconds in-flight requests get to finish", type=float)
    return parser


def parse_args(argv: Sequence[str] | None) -> ServerOptions:
    """Parses the server's command line.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv``.

    Returns:
        The options.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    single = args.model_name is not None or args.model_base_path is not None
    if args.model_config_file and single:
        parser.error("give either --model_config_file or --model_name/--model_base_path, not both")
    if not args.model_config_file and not (args.model_name and args.model_base_path):
        parser.error("give --model_name and --model_base_path, or --model_config_file")
    if args.batching_parameters_file and not args.enable_batching:
        parser.error("--batching_parameters_file needs --enable_batching")
    return ServerOptions(**vars(args))


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ``ModelServerConfig`` text proto file.

    Raises:
        ValueError: If the file cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ValueError(f"{path}: not a valid ModelServerConfig text proto: {exc}") from exc


def initial_model_config(options: ServerOptions) -> model_server_config_pb2.ModelServerConfig:
    """The models to serve at start-up: the config file, or the one model of the flags."""
    if options.model_config_file:
        return read_model_server_config(options.model_config_file)
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name or ""
    model.base_path = options.model_base_path or ""
    model.model_platform = "tensorflow"
    return config
