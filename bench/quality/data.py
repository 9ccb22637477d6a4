"""The benchmark's data: events and the spine's chronological leave-one-out split.

The split is the one the pipeline's GraphBuilder writes
(`pipeline.components.graph_builder.split_user_history`), rebuilt here from the
raw events so that models outside the TFX pipeline see exactly the same
prediction points:

- each user's events are sorted by `schemas.graph.event_order` (timestamp, then
  event id);
- the last event is the test point, the one before it the validation point,
  the rest are training events;
- a point's exclusion set is every item of the user's events that come before
  it in that order (ranking is over all other catalog items);
- a point's model input is `select_event_window(earlier events, t, window)`:
  the most recent `window` events strictly before the target's timestamp.

Because the input is "strictly before t" and the exclusions are "earlier in the
order", an event that shares the target's timestamp is excluded from the
ranking but not visible to the model (MovieLens has many such ties: ratings
entered in the same second).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

import schemas  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from bench import REPO_ROOT
from schemas.events import Event, Item, RejectedRecord, read_events, read_items
from schemas.graph import event_order, select_event_window

DEFAULT_WINDOW = 50
DEFAULT_COLD_THRESHOLD = 5
DEFAULT_CACHE_DIR = os.path.join(REPO_ROOT, ".cache", "bench", "quality")


@dataclasses.dataclass(frozen=True)
class PredictionPoint:
    """One validation or test point.

    Attributes:
      user_id: whose point it is.
      target: the held-out event (its item is what the model should rank high).
      window: the model input, oldest first: the user's most recent events
        strictly before `target.timestamp` (at most the window size).
      exclude: items of every event of the user that precedes the target in
        `event_order`; they are never recommended.
      history: every event of the user that precedes the target in
        `event_order` (a superset of `window`), for models that want more.
    """

    user_id: str
    target: Event
    window: tuple[Event, ...]
    exclude: frozenset[str]
    history: tuple[Event, ...]

    @property
    def target_item(self) -> str:
        return self.target.item_id

    @property
    def timestamp(self) -> int:
        return self.target.timestamp


@dataclasses.dataclass
class LeaveOneOutSplit:
    """Per-user chronological leave-one-out split of a set of events.

    Attributes:
      train: user -> training events, in `event_order` (every event but the last
        two; a user with fewer than three events has fewer or none).
      eval_points: one validation point per user with at least two events.
      test_points: one test point per user.
      item_ids: the candidate items (catalog plus any item seen in the events),
        sorted; every recommender ranks over these.
      train_item_counts: item -> number of training events (training events
        only; items never trained on are absent).
      window: the input window bound (`select_event_window`'s `max_events`).
      items: the catalog, item_id -> Item (may be empty).
      cold_start_items: items withheld from every model until they are a
        target (`without_items`; empty in the spine's protocol).
    """

    train: dict[str, list[Event]]
    eval_points: list[PredictionPoint]
    test_points: list[PredictionPoint]
    item_ids: list[str]
    train_item_counts: dict[str, int]
    window: int = DEFAULT_WINDOW
    items: dict[str, Item] = dataclasses.field(default_factory=dict)
    cold_start_items: frozenset[str] = frozenset()

    @property
    def users(self) -> list[str]:
        return sorted(self.train)

    def cold_items(self, threshold: int = DEFAULT_COLD_THRESHOLD) -> set[str]:
        """Candidate items with fewer than `threshold` training interactions."""
        return {i for i in self.item_ids if self.train_item_counts.get(i, 0) < threshold}

    def points(self, which: str) -> list[PredictionPoint]:
        if which == "eval":
            return self.eval_points
        if which == "test":
            return self.test_points
        raise ValueError(f"unknown split {which!r}; expected 'eval' or 'test'")

    def train_points(self) -> Iterator[PredictionPoint]:
        """The pipeline's training points: every training event with a non-empty window.

        Same rule as the GraphBuilder: a training event with nothing strictly
        earlier is no training point.
        """
        for user_id in self.users:
            history = self.train[user_id]
            for i in range(len(history)):
                point = _point(user_id, history, i, self.window)
                if point.window:
                    yield point

    def tie_stats(self) -> dict[str, int]:
        """How often an evaluation point shares its timestamp with events before it in the order.

        Such events are excluded from the ranking but are not in the model input
        (which holds only events strictly before the target's timestamp).
        """
        stats = {}
        for which in ("eval", "test"):
            points = self.points(which)
            stats[f"{which}_points"] = len(points)
            stats[f"{which}_points_with_tied_earlier_events"] = sum(
                1 for p in points if p.history and p.history[-1].timestamp >= p.timestamp
            )
        return stats

    def subset(self, users: Iterable[str]) -> LeaveOneOutSplit:
        """The same split restricted to some users (catalog and counts recomputed from their training events)."""
        keep = set(users)
        train = {u: events for u, events in self.train.items() if u in keep}
        counts = Counter(e.item_id for events in train.values() for e in events)
        return LeaveOneOutSplit(
            train=train,
            eval_points=[p for p in self.eval_points if p.user_id in keep],
            test_points=[p for p in self.test_points if p.user_id in keep],
            item_ids=self.item_ids,
            train_item_counts=dict(counts),
            window=self.window,
            items=self.items,
            cold_start_items=self.cold_start_items,
        )

    def without_items(self, items: Iterable[str]) -> LeaveOneOutSplit:
        """The same points, with some items unseen by any model until they are predicted (item cold start).

        A shop adds items every day, and a user's next event is often one of them. The spine's split cannot
        ask for that: almost every target item has many training events. Here every event of the given items
        leaves the training events and every point's input, as if the items had not existed before, so a
        model meets them first as targets. They stay candidates, and stay excluded for a user who touched
        them before the point. Each point's window is selected again from the remaining events (older
        events move up into it), as the pipeline would write it.

        Args:
          items: the items to withhold (`cold_start_sample` draws them).

        Returns:
          The split with those items in `cold_start_items`; the points keep their order.
        """
        withheld = self.cold_start_items | frozenset(items)
        train = {u: [e for e in events if e.item_id not in withheld] for u, events in self.train.items()}

        def unseen(point: PredictionPoint) -> PredictionPoint:
            history = tuple(e for e in point.history if e.item_id not in withheld)
            window = tuple(select_event_window(history, point.timestamp, self.window))
            return dataclasses.replace(point, window=window, history=history)

        return LeaveOneOutSplit(
            train=train,
            eval_points=[unseen(p) for p in self.eval_points],
            test_points=[unseen(p) for p in self.test_points],
            item_ids=self.item_ids,
            train_item_counts=dict(Counter(e.item_id for events in train.values() for e in events)),
            window=self.window,
            items=self.items,
            cold_start_items=withheld,
        )


def cold_start_sample(item_ids: Sequence[str], fraction: float, seed: int = 0) -> frozenset[str]:
    """A uniform random share of the catalog to withhold (`LeaveOneOutSplit.without_items`).

    Args:
      item_ids: the catalog.
      fraction: the share, in (0, 1).
      seed: the draw's seed; part of the protocol, so every model is measured on the same items.

    Returns:
      round(fraction * len(item_ids)) item ids.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the share of items to withhold must be in (0, 1); got {fraction}")
    rng = np.random.default_rng(seed)
    return frozenset(rng.choice(sorted(item_ids), size=round(fraction * len(item_ids)), replace=False).tolist())


def _point(user_id: str, history: Sequence[Event], i: int, window: int) -> PredictionPoint:
    target = history[i]
    earlier = tuple(history[:i])
    return PredictionPoint(
        user_id=user_id,
        target=target,
        window=tuple(select_event_window(earlier, target.timestamp, window)),
        exclude=frozenset(e.item_id for e in earlier),
        history=earlier,
    )


def build_split(events: Iterable[Event], window: int = DEFAULT_WINDOW, items: Iterable[Item] = ()) -> LeaveOneOutSplit:
    """Builds the leave-one-out split exactly as the pipeline's GraphBuilder does.

    Args:
      events: every event (any order, any users).
      window: the input window bound.
      items: the catalog; its items are candidates even if nobody touched them.

    Returns:
      The split.
    """
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    catalog = {i.item_id: i for i in items}
    train: dict[str, list[Event]] = {}
    eval_points: list[PredictionPoint] = []
    test_points: list[PredictionPoint] = []
    all_items = set(catalog)
    for user_id in sorted(by_user):
        history = sorted(by_user[user_id], key=event_order)
        all_items.update(e.item_id for e in history)
        n = len(history)
        train[user_id] = history[: max(n - 2, 0)]
        if n >= 2:
            eval_points.append(_point(user_id, history, n - 2, window))
        test_points.append(_point(user_id, history, n - 1, window))
    counts = Counter(e.item_id for events in train.values() for e in events)
    return LeaveOneOutSplit(
        train=train,
        eval_points=eval_points,
        test_points=test_points,
        item_ids=sorted(all_items),
        train_item_counts=dict(counts),
        window=window,
        items=catalog,
    )


def load_events(events_path: str) -> list[Event]:
    """Reads an event file; rejected rows are reported and skipped."""
    events, rejected = [], 0
    for record in read_events(events_path):
        if isinstance(record, RejectedRecord):
            rejected += 1
        else:
            events.append(record)
    if rejected:
        print(f"[quality] {rejected} rejected rows in {events_path}", flush=True)
    return events


def movielens_100k_files(cache_dir: str = DEFAULT_CACHE_DIR) -> tuple[str, str]:
    """MovieLens-100k in the project's event format (converted once into `cache_dir`)."""
    from pipeline.assets import MOVIELENS_100K, fetch
    from pipeline.datasets.movielens import convert_movielens_100k

    target = os.path.join(cache_dir, "ml-100k")
    events_path, items_path = os.path.join(target, "events.csv"), os.path.join(target, "items.csv")
    if os.path.exists(events_path) and os.path.exists(items_path):
        return events_path, items_path
    partial = target + f".partial-{os.getpid()}"
    convert_movielens_100k(fetch(MOVIELENS_100K), partial)
    os.makedirs(target, exist_ok=True)
    for name in ("events.csv", "items.csv"):
        os.replace(os.path.join(partial, name), os.path.join(target, name))
    os.rmdir(partial)
    return events_path, items_path


def load_movielens_100k(window: int = DEFAULT_WINDOW, cache_dir: str = DEFAULT_CACHE_DIR) -> LeaveOneOutSplit:
    """The benchmark split of MovieLens-100k."""
    events_path, items_path = movielens_100k_files(cache_dir)
    items, _ = read_items(items_path)
    return build_split(load_events(events_path), window=window, items=items)
