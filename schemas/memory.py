"""Incremental long-term memory updates: what to fold, and the stored checkpoint.

The model's `fold_interest` signature merges newly evicted events into a
stored memory (see `trainer/long_term_memory.py`). This module decides, from
a user's history and the stored checkpoint, which events that is, and ages
the stored memory to the new prediction time. The client, the tests and the
consistency bench all use it, so "incremental" means the same everywhere.

A checkpoint is valid only while history is appended in time order: an
event that arrives late, older than something already folded, changes what
the memory should hold, so the plan falls back to a full recomputation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from schemas import graph as g
from schemas.events import Event
from schemas.signatures import (
    FOLD_INTEREST,
    LONG_TERM_MEMORY,
    MEMORY_WIDTH,
    NO_MEMORY_LOG_MASS,
    SUBGRAPH,
    UPDATE_INTEREST,
)


@dataclasses.dataclass(frozen=True)
class MemoryCheckpoint:
    """A user's long-term memory as stored after an update.

    Attributes:
      memory: MEMORY_WIDTH floats (mean vector, log-mass) at `time`.
      time: the prediction time the memory refers to (Unix seconds).
      folded: how many of the user's oldest events (in `event_order`) it holds.
      last_folded: `event_order` key of the newest folded event, if any.
      model_version: the model whose item vectors the mean is made of.
    """

    memory: tuple[float, ...]
    time: int
    folded: int
    last_folded: tuple[int, str] | None
    model_version: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> MemoryCheckpoint:
        last = record.get("last_folded")
        return cls(
            memory=tuple(float(v) for v in record["memory"]),
            time=int(record["time"]),
            folded=int(record["folded"]),
            last_folded=(int(last[0]), str(last[1])) if last else None,
            model_version=int(record["model_version"]),
        )


@dataclasses.dataclass(frozen=True)
class UpdatePlan:
    """One user's interest update.

    Attributes:
      window: the bounded event window.
      fold: the events to put in the subgraph's memory nodes.
      prior_memory: the stored memory aged to the prediction time (for
        `fold_interest`), or None for a full recomputation (`update_interest`
        with every old event in `fold`).
      remembered: all events older than the window (what the new memory holds).
      memory_model_version: the model that made `prior_memory`; folding is
        right only if the same model answers.
    """

    window: list[Event]
    fold: list[Event]
    prior_memory: np.ndarray | None
    remembered: list[Event]
    memory_model_version: int | None = None

    def full(self) -> UpdatePlan:
        """The same update as a full recomputation: every old event folded from nothing."""
        return UpdatePlan(self.window, self.remembered, None, self.remembered)


def age_memory(memory: Sequence[float], from_time: int, to_time: int) -> np.ndarray:
    """The memory at `to_time`: same mean, log-mass lower by the elapsed time over tau."""
    aged = np.asarray(memory, dtype=np.float64).copy()
    if aged[-1] > NO_MEMORY_LOG_MASS / 2:
        aged[-1] -= (to_time - from_time) / g.SECONDS_PER_DAY / g.MEMORY_TIME_SCALE_DAYS
    return aged.astype(np.float32)


def plan_update(
    history: Sequence[Event],
    prediction_time: int,
    max_events: int,
    checkpoint: MemoryCheckpoint | None,
) -> UpdatePlan:
    """Which events to fold, and from which memory.

    Args:
      history: all of the user's events.
      prediction_time: the update's prediction time (after the newest event).
      max_events: the window bound.
      checkpoint: the stored memory, if any.

    Returns:
      An incremental plan when the checkpoint is still valid (no late event
      among the folded ones, time moving forward), else a full one. Whether
      the model that answers is the one that made the memory is only known
      from the answer: compare it with `memory_model_version` and run
      `full()` when they differ.
    """
    remembered, window = g.split_history(history, prediction_time, max_events)
    valid = (
        checkpoint is not None
        and checkpoint.time <= prediction_time
        and checkpoint.folded <= len(remembered)
        and len(checkpoint.memory) == MEMORY_WIDTH
        and (checkpoint.folded == 0 or g.event_order(remembered[checkpoint.folded - 1]) == checkpoint.last_folded)
    )
    if not valid:
        return UpdatePlan(window, remembered, None, remembered)
    assert checkpoint is not None
    prior = age_memory(checkpoint.memory, checkpoint.time, prediction_time)
    return UpdatePlan(window, remembered[checkpoint.folded :], prior, remembered, checkpoint.model_version)


def interest_request(
    plan: UpdatePlan,
    prediction_time: int,
    item_categories: Mapping[str, Sequence[str]],
    review_sentiment: Mapping[str, float] | None = None,
) -> tuple[str, dict[str, np.ndarray]]:
    """The signature and inputs (one row) that carry out `plan`.

    Args:
      plan: from `plan_update` (or its `full()`).
      prediction_time: the plan's prediction time.
      item_categories: item_id -> categories of the window's items.
      review_sentiment: event_id -> sentiment of the window's review events.

    Returns:
      (`update_interest` or `fold_interest`, its inputs with a batch of one).
    """
    subgraph = g.encode_interest_subgraph(plan.window, prediction_time, item_categories, review_sentiment, plan.fold)
    inputs = {SUBGRAPH: np.array([subgraph.SerializeToString()], dtype=object)}
    if plan.prior_memory is None:
        return UPDATE_INTEREST, inputs
    inputs[LONG_TERM_MEMORY] = plan.prior_memory[None]
    return FOLD_INTEREST, inputs


def checkpoint_after(
    plan: UpdatePlan, memory: Sequence[float], prediction_time: int, model_version: int
) -> MemoryCheckpoint:
    """The checkpoint to store after running `plan` (the model returned `memory`)."""
    last = g.event_order(plan.remembered[-1]) if plan.remembered else None
    return MemoryCheckpoint(tuple(float(v) for v in memory), prediction_time, len(plan.remembered), last, model_version)
