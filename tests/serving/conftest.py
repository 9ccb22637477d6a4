"""Store fixtures: every store test runs on SQLite and on a real Redis server.

The Redis server is Debian's `redis-server` (installed by `make setup`),
started here on a free port in a temporary directory, without persistence,
and shut down after the session. Without the binary the Redis tests fail
under CI (CI=true) and are skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from serving.interest_store import InterestStore
from serving.ports import free_port
from tests.built_once import built_once
from tests.serving.backends import StoreSpec
from tests.serving.served_model import ModelServer, train_tiny_model

BACKENDS = ("sqlite", "redis")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed; `make setup` installs Debian's redis-server"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "redis.log"
                pytest.fail(f"redis-server did not start:\n{log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
    client.close()
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(params=BACKENDS)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """One backend per parameter; a Redis store gets a key prefix of its own."""
    if request.param == "redis":
        return StoreSpec("redis", request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex[:12]}:")
    return StoreSpec("sqlite", str(tmp_path / "state.sqlite"))


@pytest.fixture
def open_test_store(store_spec: StoreSpec) -> Iterator[Callable[[], InterestStore]]:
    """Opens (another connection to) the test's store; all are closed at the end."""
    opened: list[InterestStore] = []

    def open_store() -> InterestStore:
        opened.append(store_spec.open())
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(open_test_store: Callable[[], InterestStore]) -> InterestStore:
    return open_test_store()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, bert_dir: str) -> dict[str, str]:
    """A trained interest model exported as version 1: models_dir and catalog path."""
    return built_once(tmp_path_factory, "tiny_model", lambda root: train_tiny_model(root, bert_dir))


@pytest.fixture(scope="session")
def model_server(tiny_model: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(tiny_model["models_dir"], tmp_path_factory.mktemp("server") / "server.log")
    server.start()
    yield server
    server.stop()
