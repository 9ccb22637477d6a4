"""A tiny trained interest model behind a real model server subprocess, for client tests.

The model is the real one (trainer.task.build_model) trained for one epoch on
the synthetic cycle data of tests/trainer/synthetic.py: what it learns does not
matter here, only that the client talks to a genuine SavedModel over gRPC.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from serving.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "interest"
START_TIMEOUT_S = 120.0


def train_tiny_model(root: Path, bert_dir: str) -> dict[str, str]:
    """Trains and exports the model as version 1 under `root/models`; returns the paths.

    Item text goes through the real BERT, so the export has `encode_items`.
    """
    import tensorflow as tf

    from schemas.catalog import read_catalog
    from tests.trainer import synthetic
    from trainer.config import TrainerConfig
    from trainer.export import export_serving_model
    from trainer.graph_dataset import training_dataset
    from trainer.new_item_encoder import NewItemEncoder
    from trainer.task import build_model
    from trainer.text_encoder import ItemTextEncoder

    paths = synthetic.make_dataset(str(root), num_users=40)
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(epochs=1, batch_size=32, num_sampled=8, event_dim=8, category_dim=8)
    tf.keras.utils.set_random_seed(1)
    text_encoder = ItemTextEncoder(bert_dir, sequence_length=config.text_sequence_length)
    model = build_model(entries, text_encoder.encode([e.item.text for e in entries]), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=False)
    model(next(iter(train))[0])  # builds the layers, which export needs
    model.fit(train, epochs=1, verbose=0)
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(2)]
    models_dir = root / "models"
    export_serving_model(
        model, str(models_dir / "1"), warmup, new_items=NewItemEncoder(model.item_tower, text_encoder, bias=-1.0)
    )
    return {"models_dir": str(models_dir), "catalog": paths["catalog"]}


class ModelServer:
    """`python -m serving.model_server` on a fixed port, which can be stopped and started again.

    Args:
      models_dir: the model's base path (integer version subdirectories).
      log_path: where the server's output goes (appended across restarts).
    """

    def __init__(self, models_dir: str, log_path: Path) -> None:
        self.models_dir = models_dir
        self.log_path = log_path
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Starts the server and waits until the model is AVAILABLE."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable, "-m", "serving.model_server",
                    "--port", str(self.port),
                    "--model_name", MODEL_NAME,
                    "--model_base_path", self.models_dir,
                ],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL_NAME
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        deadline = time.monotonic() + START_TIMEOUT_S
        with grpc.insecure_channel(self.target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"model server exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
                try:
                    status = stub.GetModelStatus(request, timeout=2)
                    if any(v.state == available for v in status.model_version_status):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"model server not ready in {START_TIMEOUT_S}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
