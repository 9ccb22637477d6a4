"""TLS with a certificate made at test time, the bearer token, and the refusal to bind unprotected."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.model_server import ModelServer
from serving.security import check_exposure, is_loopback
from serving.server_config import ServerOptions
from tests.serving.toy import MODEL, ServerProcess, Stubs, push_version, scale_request


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secure")
    push_version(root / "models", 1, factor=2.0, staging=root)
    return root / "models"


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _options(models: Path, **kwargs: object) -> ServerOptions:
    return ServerOptions(
        port=0, model_name=MODEL, model_base_path=str(models), file_system_poll_wait_seconds=0, **kwargs
    )  # type: ignore[arg-type]


def test_tls_with_self_signed_certificate(models: Path, tmp_path: Path) -> None:
    key_pem, cert_pem = _self_signed()
    ssl_config = tmp_path / "ssl.config"
    # SSLConfig holds the PEM contents themselves, as TF Serving's does.
    ssl_config.write_text(f"server_key: {key_pem.decode()!r}\nserver_cert: {cert_pem.decode()!r}\n")
    server = ModelServer(_options(models, ssl_config_file=str(ssl_config)))
    server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            assert Stubs(channel).served_version() == 1
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                Stubs(channel).predict.Predict(scale_request([1.0]), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=0)


def test_bearer_token(models: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = ModelServer(_options(models, auth_token_file=str(token_file)))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stubs = Stubs(channel)
            for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret-token"),)]:
                with pytest.raises(grpc.RpcError) as info:
                    stubs.predict.Predict(scale_request([1.0]), metadata=metadata, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "authorization: Bearer" in info.value.details()
            response = stubs.predict.Predict(
                scale_request([1.0]), metadata=(("authorization", "Bearer s3cret-token"),), timeout=5
            )
            assert response.model_spec.version.value == 1
            # Probes carry no credentials: health checking stays open.
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("10.1.2.3", False),
     ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_rules() -> None:
    check_exposure("0.0.0.0", tls=True, token=False, allow_insecure_remote=False)
    check_exposure("0.0.0.0", tls=False, token=True, allow_insecure_remote=False)
    check_exposure("0.0.0.0", tls=False, token=False, allow_insecure_remote=True)
    with pytest.raises(ValueError, match="--allow_insecure_remote"):
        check_exposure("0.0.0.0", tls=False, token=False, allow_insecure_remote=False)


def test_cli_refuses_unprotected_remote_bind(models: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        ["--host", "0.0.0.0", "--model_name", MODEL, "--model_base_path", str(models)], tmp_path / "server.log"
    )
    try:
        assert server.proc.wait(timeout=60) == 2
        log = server.log()
        assert "Failed to start server" in log and "refusing to bind '0.0.0.0'" in log
        assert "--ssl_config_file" in log and "--allow_insecure_remote" in log
    finally:
        server.close()
