"""Transport security and authentication for the model server.

TLS is configured like TF Serving, with ``--ssl_config_file`` holding an
``SSLConfig`` text proto (``server_key``, ``server_cert``, ``custom_ca``,
``client_verify``: PEM contents, not paths). A bearer token
(``--auth_token_file``) is this project's addition: TF Serving has none, so in
production put it behind a proxy or mesh that authenticates. Binding anything
but a loopback interface without TLS or a token is refused unless
``--allow_insecure_remote`` says so explicitly.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

import grpc

from serving.config_protos import SSLConfig, parse_text_file

# Health probes (kubelet, load balancers) carry no credentials, and the answer
# reveals nothing but "serving or not".
UNAUTHENTICATED_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def is_loopback(host: str) -> bool:
    """True if ``host`` names only the local machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or wildcard: assume it is reachable from outside


def check_exposure(host: str, tls: bool, token: bool, allow_insecure_remote: bool) -> None:
    """Refuses to start an unprotected server on a non-loopback interface.

    Args:
        host: Interface to bind.
        tls: Whether TLS is configured.
        token: Whether a bearer token is required.
        allow_insecure_remote: The operator's explicit opt-out.

    Raises:
        ValueError: With a message saying what to add.
    """
    if is_loopback(host) or tls or token or allow_insecure_remote:
        return
    raise ValueError(
        f"refusing to bind {host!r} without protection: anyone who can reach it could call the model. "
        "Give --ssl_config_file and/or --auth_token_file, bind 127.0.0.1, or pass --allow_insecure_remote "
        "if a proxy or network policy already protects it"
    )


def load_server_credentials(path: str) -> grpc.ServerCredentials:
    """Builds TLS server credentials from an ``SSLConfig`` text proto.

    Args:
        path: The ``--ssl_config_file``.

    Returns:
        Credentials for ``add_secure_port``.

    Raises:
        ValueError: If the file is invalid, lacks key or certificate, or asks
            for client verification without a CA.
    """
    config = parse_text_file(path, SSLConfig)
    if not config.server_key or not config.server_cert:
        raise ValueError(f"{path}: SSLConfig needs both server_key and server_cert (PEM contents)")
    if config.client_verify and not config.custom_ca:
        raise ValueError(f"{path}: client_verify needs custom_ca to verify client certificates against")
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def read_token(path: str) -> str:
    """Reads a bearer token file (surrounding whitespace ignored).

    Raises:
        ValueError: If the file is empty.
    """
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path}: the auth token file is empty")
    return token


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED unless the call carries ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        """Initialises the interceptor.

        Args:
            token: The expected token.
        """
        self._expected = f"Bearer {token}".encode()

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong credentials: send metadata 'authorization: Bearer <token>'",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        """Lets the call through only with the right token (health checks always)."""
        if handler_call_details.method.startswith(UNAUTHENTICATED_METHOD_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        # Constant-time comparison so the token cannot be guessed byte by byte.
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return continuation(handler_call_details)
        return self._deny
