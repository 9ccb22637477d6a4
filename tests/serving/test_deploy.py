"""serving/deploy/: the configs parse with TF Serving's messages and the embedded server runs with them."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from schemas.signatures import DEFAULT_MODEL_NAME
from serving.batching import load_batching_options
from serving.config_protos import BatchingParameters, MonitoringConfig, parse_text_file
from serving.ports import free_port
from serving.server_config import ServerOptions
from tests.serving.toy import REPO_ROOT, in_process_server, push_version, scale_request

DEPLOY = REPO_ROOT / "serving" / "deploy"
CONFIG_FILES = ("models.config", "batching_parameters.txt", "monitoring.config")
IMAGE = "tensorflow/serving:2.16.1"


def _model_config() -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse((DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())


def test_configs_parse_with_tf_serving_messages() -> None:
    (model,) = _model_config().model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME
    assert model.base_path == f"/models/{DEFAULT_MODEL_NAME}"
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    assert sorted(model.model_version_policy.specific.versions) == [1, 2]
    batching = parse_text_file(str(DEPLOY / "batching_parameters.txt"), BatchingParameters)
    assert batching.max_batch_size.value == 64
    monitoring = parse_text_file(str(DEPLOY / "monitoring.config"), MonitoringConfig)
    assert monitoring.prometheus_config.enable


def _flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def _check_flags(flags: dict[str, str]) -> None:
    assert flags["model_config_file"] == "/config/models.config"
    assert flags["batching_parameters_file"] == "/config/batching_parameters.txt"
    assert flags["monitoring_config_file"] == "/config/monitoring.config"
    assert flags["enable_batching"] == "true" and flags["rest_api_port"] == "8501"


def test_compose_runs_tf_serving_with_the_configs_and_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    server = compose["services"]["model-server"]
    assert server["image"] == IMAGE
    _check_flags(_flags(server["command"]))
    mounts = {volume.rsplit(":", 2)[1] for volume in server["volumes"]}
    assert {f"/config/{name}" for name in CONFIG_FILES} <= mounts and "/models" in mounts
    assert compose["services"]["redis"]["image"].startswith("redis:")


def test_kubernetes_manifests_mount_the_configs() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert sorted(generator["files"]) == sorted(CONFIG_FILES)
    documents = [
        doc for resource in kustomization["resources"] for doc in yaml.safe_load_all((DEPLOY / resource).read_text())
    ]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    assert {("Deployment", "interest-graph-model-server"), ("Service", "interest-graph-model-server")} <= kinds
    assert {("Deployment", "interest-graph-redis"), ("Service", "interest-graph-redis")} <= kinds
    deployment = next(d for d in documents if d["metadata"]["name"] == "interest-graph-model-server")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    _check_flags(_flags(container["args"]))
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == generator["name"]
    assert {"name": "config", "mountPath": "/config", "readOnly": True} in container["volumeMounts"]


def test_embedded_server_runs_with_the_deploy_configs(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in (1, 2):
        push_version(models / DEFAULT_MODEL_NAME, version, factor=float(version), staging=tmp_path)
    config = _model_config()
    config.model_config_list.config[0].base_path = str(models / DEFAULT_MODEL_NAME)  # the only path adapted
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(config))
    options = ServerOptions(
        port=0,
        model_config_file=str(config_file),
        enable_batching=True,
        batching_parameters_file=str(DEPLOY / "batching_parameters.txt"),
        monitoring_config_file=str(DEPLOY / "monitoring.config"),
        rest_api_port=free_port(),
        file_system_poll_wait_seconds=0,
    )
    with in_process_server(options) as (server, stubs):
        assert server.limits.max_rows == load_batching_options(str(DEPLOY / "batching_parameters.txt")).max_batch_size
        for label, version in (("stable", 1), ("canary", 2)):
            request = scale_request([1.0], model=DEFAULT_MODEL_NAME)
            request.model_spec.version_label = label
            response = stubs.predict.Predict(request, timeout=10)
            assert response.model_spec.version.value == version
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [float(version)])
        url = f"http://127.0.0.1:{server.metrics_port}/monitoring/prometheus/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            text = page.read().decode()
        assert f'interest_graph_serving_loaded_versions{{model="{DEFAULT_MODEL_NAME}"}} 2.0' in text
