"""Pipeline configuration: one typed object."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from schemas.graph import EventWindowConfig
from schemas.signatures import DEFAULT_MODEL_NAME


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Where the pipeline reads and writes, and how it runs.

    Attributes:
      events_dir: directory of event files (CSV with header or JSONL) in the
        documented format (schemas/events.py).
      items_path: the item catalog file (CSV or JSONL).
      bert_dir: pretrained BERT folder (config.json, model.safetensors, vocab.txt).
      output_dir: root of everything the run writes: pipeline root, ML Metadata
        SQLite store, pushed models, rejected rows.
      pipeline_name: the TFX pipeline name.
      model_name: the served model's name (models/<model_name>/<version>/).
      window: the bounded event window of interest subgraphs.
      trainer: TrainerConfig fields overriding the defaults.
      beam_pipeline_args: passed to every Beam-based component, e.g.
        ["--runner=FlinkRunner", ...]; the default runs Beam in-process.
      cache_dir: where item text vectors are cached between runs.
      review_sentiment_dir: the review sentiment head that gives `review`
        events their `sentiment` edge feature (`interest-graph
        train-review-sentiment` writes one); needed only when events carry
        review text.
    """

    events_dir: str
    items_path: str
    bert_dir: str
    output_dir: str
    pipeline_name: str = "interest_graph"
    model_name: str = DEFAULT_MODEL_NAME
    window: EventWindowConfig = EventWindowConfig()
    trainer: dict[str, Any] = dataclasses.field(default_factory=dict)
    beam_pipeline_args: tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    cache_dir: str = ""
    review_sentiment_dir: str = ""

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def models_dir(self) -> str:
        """TF Serving's model base path: <models_dir>/<version>/saved_model.pb."""
        return os.path.join(self.output_dir, "models", self.model_name)

    @property
    def scratch_dir(self) -> str:
        """A run's temporary files (Beam's and TFX's), removed when the run ends."""
        return os.path.join(self.output_dir, "scratch")

    @property
    def rejected_events_path(self) -> str:
        return os.path.join(self.output_dir, "rejected_events.jsonl")
