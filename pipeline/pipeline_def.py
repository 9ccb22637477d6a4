"""The TFX pipeline definition (runner-independent).

EventExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator
  -> GraphBuilder -> Trainer -> RankingEvaluator (vs. last blessed) -> Pusher
"""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.components.event_example_gen import event_example_gen
from pipeline.components.graph_builder import GraphBuilder
from pipeline.components.ranking_evaluator import RankingEvaluator
from pipeline.config import PipelineConfig
from schemas import EVENTS_SCHEMA_PATH

TRAINER_MODULE = "trainer.task.run_fn"


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """Builds the pipeline; any TFX orchestrator can run the result.

    Args:
      config: data locations and run settings.

    Returns:
      The pipeline, with an ML Metadata SQLite store under `config.output_dir`.
    """
    example_gen = event_example_gen(config.events_dir, config.rejected_events_path)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=EVENTS_SCHEMA_PATH)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    graph_builder = GraphBuilder(
        examples=example_gen.outputs["examples"],
        anomalies=example_validator.outputs["anomalies"],
        items_path=config.items_path,
        max_events=config.window.max_events,
        review_sentiment_dir=config.review_sentiment_dir,
        bert_dir=config.bert_dir,
    )
    trainer = tfx.components.Trainer(
        run_fn=TRAINER_MODULE,
        examples=graph_builder.outputs["graph_examples"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={
            "bert_dir": config.bert_dir,
            "cache_dir": config.cache_dir or os.path.join(config.output_dir, "cache"),
            "trainer": dict(config.trainer),
        },
    )
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = RankingEvaluator(
        examples=graph_builder.outputs["graph_examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"],
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.models_dir)
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            graph_builder,
            trainer,
            latest_blessed,
            evaluator,
            pusher,
        ],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
        beam_pipeline_args=list(config.beam_pipeline_args),
        enable_cache=False,
    )
