"""RankingEvaluator: full-ranking metrics of a SavedModel, and the push decision.

TFMA's Evaluator scores examples one by one; next-item recommendation needs a
ranking over the whole catalog per prediction point, so this component runs
the exported serving signatures themselves (what TF Serving will run) over the
validation split, with `trainer.metrics` (the code every other evaluation
uses). It blesses the candidate only if its NDCG@10 is at least that of the
last blessed model measured on the same split, so a worse model never reaches
the serving directory. When the two serve different score offsets (the
rare-item lift, e.g. at another strength), their served rankings follow
different rules, so both are judged without their offsets: model against
model, not lift against lift.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as eval_constants
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import path_utils

from schemas import signatures as s
from schemas.catalog import catalog_path, read_catalog
from trainer.graph_dataset import read_evaluation_points
from trainer.metrics import MAX_CUTOFF, items_by_popularity, popularity_ranking, ranking_metrics

METRICS_FILE = "metrics.json"
BLESSING_METRIC = "ndcg@10"


def _user_inputs(
    loaded: Any, subgraphs: Sequence[bytes], batch_size: int
) -> Iterator[tuple[int, list[bytes], dict[str, tf.Tensor]]]:
    """(first index, subgraphs, user inputs) of each batch, from `update_interest`.

    The user inputs are what `recommend` and `score` read of a user: the
    interest state and the recent items.
    """
    update = loaded.signatures[s.UPDATE_INTEREST]
    for start in range(0, len(subgraphs), batch_size):
        batch = list(subgraphs[start : start + batch_size])
        outputs = update(**{s.SUBGRAPH: tf.constant(batch)})
        yield start, batch, {name: outputs[name] for name in (s.INTEREST_STATE, s.RECENT_ITEM_IDS)}


def signature_rankings(
    loaded: Any, subgraphs: Sequence[bytes], exclude: Sequence[Sequence[str]], k: int, batch_size: int = 256
) -> list[list[str]]:
    """Top-k items per prediction point: `update_interest`, then `recommend` excluding seen items.

    Args:
      loaded: a SavedModel loaded with `tf.saved_model.load`.
      subgraphs: serialized interest subgraphs, one per prediction point.
      exclude: per point, the items the user already interacted with.
      k: how many items to rank.
      batch_size: points per signature call.

    Returns:
      Per point, item ids best first.
    """
    recommend = loaded.signatures[s.RECOMMEND]
    rankings: list[list[str]] = []
    for start, batch, user in _user_inputs(loaded, subgraphs, batch_size):
        width = max(1, max(len(x) for x in exclude[start : start + batch_size]))
        padded = [list(x) + [s.PADDING_ITEM_ID] * (width - len(x)) for x in exclude[start : start + batch_size]]
        top = recommend(
            **{
                **user,
                s.EXCLUDE_ITEM_IDS: tf.constant(padded, tf.string),
                s.K: tf.fill([len(batch)], tf.constant(k, tf.int32)),
            }
        )[s.ITEM_IDS].numpy()
        rankings.extend([i.decode() for i in row if i] for row in top)
    return rankings


def read_score_offsets(model_dir: str) -> dict[str, float]:
    """The score offsets an exported model serves on top of its own scores ({} for none)."""
    path = os.path.join(model_dir, s.SCORE_OFFSETS_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return {str(k): float(v) for k, v in json.load(f).items()}


def served_scores(
    loaded: Any, subgraphs: Sequence[bytes], item_ids: Sequence[str], batch_size: int = 256
) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, [batch, items] scores) of each batch: `update_interest`, then `score` of every item.

    Args:
      loaded: a SavedModel loaded with `tf.saved_model.load`.
      subgraphs: serialized interest subgraphs, one per prediction point.
      item_ids: the items to score (-inf for items the model does not know).
      batch_size: points per signature call.
    """
    score = loaded.signatures[s.SCORE]
    for start, batch, user in _user_inputs(loaded, subgraphs, batch_size):
        items = tf.constant([list(item_ids)] * len(batch))
        yield start, score(**user, **{s.ITEM_IDS: items})[s.SCORES].numpy()


def rankings_without_offsets(
    loaded: Any,
    subgraphs: Sequence[bytes],
    exclude: Sequence[Sequence[str]],
    item_ids: Sequence[str],
    offsets: Mapping[str, float],
    k: int,
    batch_size: int = 256,
) -> list[list[str]]:
    """Top-k items per point by the model's own scores: served scores (`score`) minus the offsets.

    Args:
      loaded: a SavedModel loaded with `tf.saved_model.load`.
      subgraphs: serialized interest subgraphs, one per prediction point.
      exclude: per point, the items the user already interacted with.
      item_ids: the catalog, every item that can be recommended.
      offsets: the model's score offsets (`read_score_offsets`).
      k: how many items to rank.
      batch_size: points per signature call.

    Returns:
      Per point, item ids best first.
    """
    catalog = np.array(item_ids, dtype=object)
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    shift = np.array([offsets.get(i, 0.0) for i in item_ids], np.float32)
    rankings: list[list[str]] = []
    for start, scores in served_scores(loaded, subgraphs, item_ids, batch_size):
        scores -= shift
        for row, seen in zip(scores, exclude[start : start + len(scores)], strict=True):
            row[[position[i] for i in seen if i in position]] = -np.inf
            top = np.argsort(-row, kind="stable")[:k]
            # Seen and unknown items (-inf) are never recommended.
            rankings.append([str(catalog[j]) for j in top if np.isfinite(row[j])])
    return rankings


@dataclasses.dataclass(frozen=True)
class _EvaluationSplit:
    """The prediction points of a split and its catalog, read once for every model judged on them."""

    subgraphs: list[bytes]
    targets: list[str]
    seen: list[list[str]]
    item_ids: list[str]
    train_counts: dict[str, int]

    @classmethod
    def read(cls, example_files: Sequence[str], catalog_file: str) -> _EvaluationSplit:
        subgraphs, targets, seen = read_evaluation_points(example_files)
        entries = read_catalog(catalog_file)
        return cls(
            list(subgraphs),
            list(targets),
            [list(x) for x in seen],
            [e.item.item_id for e in entries],
            {e.item.item_id: e.train_count for e in entries},
        )

    def metrics(self, rankings: Sequence[Sequence[str]]) -> dict[str, float]:
        return ranking_metrics(rankings, [[t] for t in self.targets])


def _model_metrics(loaded: Any, split: _EvaluationSplit, offsets: Mapping[str, float]) -> dict[str, float]:
    """The model's metrics on the split: as served, or without `offsets` when there are any."""
    if offsets:
        return split.metrics(
            rankings_without_offsets(loaded, split.subgraphs, split.seen, split.item_ids, offsets, MAX_CUTOFF)
        )
    return split.metrics(signature_rankings(loaded, split.subgraphs, split.seen, MAX_CUTOFF))


def _evaluation(loaded: Any, split: _EvaluationSplit, offsets: Mapping[str, float]) -> dict[str, Any]:
    popular = items_by_popularity(split.train_counts)
    return {
        "protocol": "chronological leave-one-out; full ranking over all items the user has not interacted with",
        "model": _model_metrics(loaded, split, offsets),
        "popularity": split.metrics([popularity_ranking(popular, exclude) for exclude in split.seen]),
    }


def evaluate(
    model_dir: str, example_files: Sequence[str], catalog_file: str, without_score_offsets: bool = False
) -> dict[str, Any]:
    """Metrics of the model and of the most-popular baseline on the same points.

    Args:
      model_dir: the exported SavedModel.
      example_files: the split's interest subgraphs.
      catalog_file: the item catalog of those examples.
      without_score_offsets: rank by the model's own scores, without the
        offsets its export adds (`SCORE_OFFSETS_FILE`); False ranks as served.

    Returns:
      {"model": metrics, "popularity": metrics, "protocol": description}.
    """
    offsets = read_score_offsets(model_dir) if without_score_offsets else {}
    return _evaluation(tf.saved_model.load(model_dir), _EvaluationSplit.read(example_files, catalog_file), offsets)


def judge(
    candidate_dir: str, baseline_dir: str | None, example_files: Sequence[str], catalog_file: str
) -> dict[str, Any]:
    """The candidate's metrics and whether it may replace the last blessed model.

    The split is read, and each model loaded, once.

    Args:
      candidate_dir: the candidate's exported SavedModel.
      baseline_dir: the last blessed model's (None: the first model, blessed).
      example_files: the split to judge on.
      catalog_file: its item catalog.

    Returns:
      `evaluate`'s result plus "blessed", "blessing_rule", "compared" (the two
      NDCG@10 values the rule compared) and, with a baseline, "baseline_model";
      when the two serve different score offsets, also both models' metrics
      without them ("model_without_score_offsets",
      "baseline_model_without_score_offsets"), which the rule then compares.
    """
    split = _EvaluationSplit.read(example_files, catalog_file)
    candidate = tf.saved_model.load(candidate_dir)
    result = _evaluation(candidate, split, {})
    value = result["model"][BLESSING_METRIC]
    baseline_value = None
    rule = f"{BLESSING_METRIC} >= last blessed model's"
    if baseline_dir is not None:
        baseline = tf.saved_model.load(baseline_dir)
        result["baseline_model"] = _model_metrics(baseline, split, {})
        baseline_value = result["baseline_model"][BLESSING_METRIC]
        own_offsets, their_offsets = read_score_offsets(candidate_dir), read_score_offsets(baseline_dir)
        if own_offsets != their_offsets:
            # An empty mapping ranks as served, which is then also the ranking without offsets.
            own = _model_metrics(candidate, split, own_offsets) if own_offsets else result["model"]
            theirs = _model_metrics(baseline, split, their_offsets) if their_offsets else result["baseline_model"]
            result["model_without_score_offsets"] = own
            result["baseline_model_without_score_offsets"] = theirs
            value, baseline_value = own[BLESSING_METRIC], theirs[BLESSING_METRIC]
            rule = f"{BLESSING_METRIC} without score offsets >= last blessed model's (their offsets differ)"
    result["blessed"] = baseline_value is None or value >= baseline_value
    result["blessing_rule"] = f"{rule} ({baseline_value})"
    result["compared"] = {"model": value, "baseline": baseline_value}
    return result


class RankingEvaluatorExecutor(base_executor.BaseExecutor):
    def Do(  # noqa: N802
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        split = exec_properties["split"]
        files = [os.path.join(artifact_utils.get_split_uri([examples], split), "*")]
        catalog_file = catalog_path(examples.uri)
        baselines = input_dict.get("baseline_model") or []
        baseline_dir = path_utils.serving_model_path(baselines[0].uri) if baselines else None
        result = judge(path_utils.serving_model_path(model.uri), baseline_dir, files, catalog_file)
        result["split"] = split
        blessed = result["blessed"]
        value, baseline_value = result["compared"]["model"], result["compared"]["baseline"]
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
            f.write(json.dumps(result, indent=2))
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        blessing.set_int_custom_property(eval_constants.ARTIFACT_PROPERTY_BLESSED_KEY, int(blessed))
        blessing.set_int_custom_property(eval_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        blessing.set_string_custom_property(eval_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        if baselines:
            blessing.set_int_custom_property(eval_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baselines[0].id)
        with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w") as f:
            f.write(json.dumps({BLESSING_METRIC: value, "baseline": baseline_value}))
        print(
            f"[evaluator] {split}: {BLESSING_METRIC}={result['model'][BLESSING_METRIC]:.4f} (popularity "
            f"{result['popularity'][BLESSING_METRIC]:.4f}); rule {result['blessing_rule']}: {value:.4f} -> "
            f"{'BLESSED' if blessed else 'NOT BLESSED'}",
            flush=True,
        )


class RankingEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {"split": ExecutionParameter(type=str)}
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class RankingEvaluator(base_component.BaseComponent):
    """Evaluates a trained model with full-ranking metrics and blesses it or not.

    Args:
      examples: graph examples (with the evaluation split and the catalog).
      model: the candidate model.
      baseline_model: the last blessed model (from a LatestBlessedModelStrategy
        resolver), if any.
      split: which split to evaluate on (validation by default).
    """

    SPEC_CLASS = RankingEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RankingEvaluatorExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: types.BaseChannel | None = None,
        split: str = "eval",
    ):
        super().__init__(
            spec=RankingEvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                split=split,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
