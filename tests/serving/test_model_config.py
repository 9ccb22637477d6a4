"""Several models from a ModelServerConfig: version policies, labels, reloads, hot swap under load."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.model_server import ModelServer
from serving.server_config import ServerOptions
from tests.serving.toy import (
    MODEL,
    Stubs,
    VersionStatus,
    in_process_server,
    push_version,
    save_version,
    scale_request,
    wait_for,
)

OTHER = "other"


def _config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def _config_text(root: Path, toy_extra: str, with_other: bool = True) -> str:
    other = f'config {{ name: "{OTHER}" base_path: "{root / OTHER}" model_platform: "tensorflow" }}'
    return f"""model_config_list {{
  config {{ name: "{MODEL}" base_path: "{root / MODEL}" model_platform: "tensorflow" {toy_extra} }}
  {other if with_other else ""}
}}"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for version in (1, 2, 3):
        push_version(root / MODEL, version, factor=float(version), staging=root)
    push_version(root / OTHER, 1, factor=10.0, staging=root, model=OTHER)
    return root


def _y(stubs: Stubs, **spec: object) -> tuple[int, float]:
    """(version, y for x=1) served for a ModelSpec."""
    request = scale_request([1.0], model=str(spec.pop("model", MODEL)))
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = int(value)  # type: ignore[call-overload]
        else:
            setattr(request.model_spec, key, value)
    response = stubs.predict.Predict(request, timeout=10)
    return response.model_spec.version.value, float(tf.make_ndarray(response.outputs["y"])[0])


def _reload(stubs: Stubs, text: str) -> None:
    request = model_management_pb2.ReloadConfigRequest(config=_config(text))
    stubs.models.HandleReloadConfigRequest(request, timeout=60)


def test_config_file_policies_labels_and_reload(models: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "models.config"
    labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    config_file.write_text(
        _config_text(models, f"model_version_policy {{ specific {{ versions: 1 versions: 2 }} }} {labels}")
    )
    options = ServerOptions(
        port=0,
        model_config_file=str(config_file),
        model_config_file_poll_wait_seconds=0.2,
        file_system_poll_wait_seconds=0,
    )
    with in_process_server(options) as (_server, stubs):
        # specific {1, 2}: both loaded, 3 is not; no version means the highest.
        assert _y(stubs, version_label="stable") == (1, 1.0)
        assert _y(stubs, version_label="canary") == (2, 2.0)
        assert _y(stubs) == (2, 2.0)
        assert _y(stubs, version=1) == (1, 1.0)
        assert _y(stubs, model=OTHER) == (1, 10.0)
        assert {v: s.state for v, s in stubs.status_map().items()} == {
            1: VersionStatus.AVAILABLE,
            2: VersionStatus.AVAILABLE,
        }
        assert [s.version for s in stubs.status(version_label="canary").model_version_status] == [2]
        with pytest.raises(grpc.RpcError) as info:
            _y(stubs, version=3)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "available versions: [1, 2]" in info.value.details()

        # HandleReloadConfigRequest: latest {2} for toy, labels move, "other" is removed.
        moved = 'version_labels { key: "stable" value: 2 } version_labels { key: "canary" value: 3 }'
        _reload(stubs, _config_text(models, f"model_version_policy {{ latest {{ num_versions: 2 }} }} {moved}", False))
        assert _y(stubs, version_label="stable") == (2, 2.0)
        assert _y(stubs, version_label="canary") == (3, 3.0)
        states = stubs.status_map()
        assert states[1].state == VersionStatus.END and not states[1].status.error_message
        assert states[3].state == VersionStatus.AVAILABLE
        with pytest.raises(grpc.RpcError) as info:
            _y(stubs, model=OTHER)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"'{OTHER}'" in info.value.details()

        # A label on a version that is not loaded breaks TF Serving's rule: refused, old labels kept.
        bad = 'version_labels { key: "stable" value: 1 }'
        with pytest.raises(grpc.RpcError) as info:
            _reload(
                stubs, _config_text(models, f"model_version_policy {{ latest {{ num_versions: 2 }} }} {bad}", False)
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 1" in info.value.details() and "not currently available" in info.value.details()
        assert _y(stubs, version_label="stable") == (2, 2.0)

        # An invalid config is refused as a whole.
        twice = f'config {{ name: "a" base_path: "{models}" }}'
        duplicate = f"model_config_list {{ {twice} {twice} }}"
        with pytest.raises(grpc.RpcError) as info:
            _reload(stubs, duplicate)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'a' is configured twice" in info.value.details()
        assert _y(stubs) == (3, 3.0)

        # Editing the config file is picked up by the file poll: policy all, new label.
        config_file.write_text(
            _config_text(models, 'model_version_policy { all {} } version_labels { key: "old" value: 2 }')
        )
        wait_for(lambda: OTHER in _server.manager.model_names(), "the edited config file to apply")
        assert _y(stubs, version_label="old") == (2, 2.0)
        assert _y(stubs, version=1) == (1, 1.0)
        assert _y(stubs, model=OTHER) == (1, 10.0)


def test_start_refuses_label_on_missing_version(models: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "models.config"
    config_file.write_text(_config_text(models, 'version_labels { key: "stable" value: 9 }'))
    server = ModelServer(ServerOptions(port=0, model_config_file=str(config_file), file_system_poll_wait_seconds=0))
    try:
        with pytest.raises(ServingError) as info:
            server.start()
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 9" in info.value.message
    finally:
        server.stop(grace=0)


def test_labels_for_unavailable_versions_flag(models: Path) -> None:
    # latest {1} serves only version 3.
    manager = ModelManager(allow_labels_for_unavailable=True)
    manager.apply_config(_config(_config_text(models, 'version_labels { key: "next" value: 4 }', False)))
    assert manager._labels[MODEL] == {"next": 4}  # a new label may point ahead of the push
    # ...but an existing label may not be moved to a version that is not available.
    with pytest.raises(ServingError) as info:
        manager.apply_config(_config(_config_text(models, 'version_labels { key: "next" value: 5 }', False)))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    strict = ModelManager()
    with pytest.raises(ServingError):
        strict.apply_config(_config(_config_text(models, 'version_labels { key: "next" value: 4 }', False)))


def test_hot_swap_under_load_fails_no_request(tmp_path: Path) -> None:
    base = tmp_path / "models"
    push_version(base, 1, factor=1.0, staging=tmp_path)
    staged = save_version(tmp_path / "staged-2", factor=2.0)
    options = ServerOptions(port=0, model_name=MODEL, model_base_path=str(base), file_system_poll_wait_seconds=0.2)
    failures: list[str] = []
    versions_seen: list[int] = []
    stop = threading.Event()

    with in_process_server(options) as (_server, stubs):

        def client() -> None:
            while not stop.is_set():
                try:
                    response = stubs.predict.Predict(scale_request([1.0, 2.0]), timeout=10)
                    version = response.model_spec.version.value
                    expected = [1.0, 2.0] if version == 1 else [2.0, 4.0]
                    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), expected)
                    versions_seen.append(version)
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                    failures.append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        # Copied in file by file, not renamed: the loader may see it half-written.
        shutil.copytree(staged, base / "2")
        wait_for(lambda: versions_seen[-20:] == [2] * 20 if len(versions_seen) > 20 else False, "version 2 served")
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []
        assert versions_seen.count(1) > 0 and versions_seen.count(2) > 0
        assert stubs.served_version() == 2
        assert stubs.status_map()[1].state == VersionStatus.END
