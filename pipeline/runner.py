"""Runs the pipeline on TFX's LocalDagRunner and reports what it produced."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from ml_metadata import metadata_store  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline_def import create_pipeline  # noqa: E402


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    """What a pipeline run produced.

    Attributes:
      stage_seconds: wall time of each component's last execution.
      pushed_model_dir: the versioned SavedModel pushed by this run, or None
        when the model was not blessed.
      evaluation: the RankingEvaluator's metrics.json content.
      graph_examples_uri: the GraphBuilder's output (splits and catalog).
      rejected_events: how many event rows were rejected.
      training_run_dir: the Trainer's run directory (training history and
        its loss-curve picture).
    """

    stage_seconds: dict[str, float]
    pushed_model_dir: str | None
    evaluation: dict
    graph_examples_uri: str
    rejected_events: int
    training_run_dir: str


def _latest_artifact_uri(store: metadata_store.MetadataStore, type_name: str) -> str:
    artifacts = store.get_artifacts_by_type(type_name)
    if not artifacts:
        raise RuntimeError(f"the pipeline produced no {type_name} artifact")
    return max(artifacts, key=lambda a: a.id).uri


@contextlib.contextmanager
def _run_scratch(path: str) -> Iterator[None]:
    """Points this process's temporary files at `path` and removes it afterwards.

    Every Beam-based component repackages the installed TFX into a ~50 MB
    sdist under the temporary directory (for remote Beam workers) and never
    deletes it; a few pipeline runs a day would fill the disk.
    """
    os.makedirs(path, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(path, ignore_errors=True)


def run_pipeline(config: PipelineConfig) -> PipelineRun:
    """Runs the whole pipeline once, in this process.

    Args:
      config: data locations and run settings.

    Returns:
      The run's outputs; raises if any component fails.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    started = time.time()
    print(f"[pipeline] running {config.pipeline_name} (root {config.pipeline_root})", flush=True)
    with _run_scratch(config.scratch_dir):
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    print(f"[pipeline] finished in {time.time() - started:.0f}s", flush=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    with metadata.Metadata(connection) as m:
        store = m.store
        type_names = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
        stage_seconds: dict[str, float] = {}
        for execution in sorted(store.get_executions(), key=lambda e: e.id):
            if execution.create_time_since_epoch < started * 1000 - 1:
                continue
            stage_seconds[type_names[execution.type_id]] = (
                execution.last_update_time_since_epoch - execution.create_time_since_epoch
            ) / 1000
        evaluation_uri = _latest_artifact_uri(store, "ModelEvaluation")
        training_run_dir = _latest_artifact_uri(store, "ModelRun")
        graph_examples_uri = [a.uri for a in store.get_artifacts_by_type("Examples") if "GraphBuilder" in a.uri][-1]
        pushed = store.get_artifacts_by_type("PushedModel")
        pushed_dir = None
        if pushed:
            latest = max(pushed, key=lambda a: a.id)
            if latest.custom_properties["pushed"].int_value == 1:
                pushed_dir = latest.custom_properties["pushed_destination"].string_value
    with open(os.path.join(evaluation_uri, "metrics.json")) as f:
        evaluation = json.load(f)
    rejected = 0
    if os.path.exists(config.rejected_events_path):
        with open(config.rejected_events_path) as f:
            rejected = sum(1 for _ in f)
    for name, seconds in stage_seconds.items():
        print(f"[pipeline]   {name:<32} {seconds:7.1f}s", flush=True)
    return PipelineRun(stage_seconds, pushed_dir, evaluation, graph_examples_uri, rejected, training_run_dir)
