"""The interest client: folds new events into users' interest states over gRPC.

It talks to any server that speaks TensorFlow Serving's PredictionService (our
embedded model server or the real tensorflow_model_server) and keeps events and
states in an interest store.

    record(events)      validate, store, rebuild each touched user's bounded
                        subgraph, call `update_interest`, save the new state
                        with the model version that produced it
    recommend(user, k)  top-k items the user has not interacted with yet
    recommend_new_items(user, k)
                        the same among the items added after training only
                        (a "new for you" shelf)
    score(user, items)  the model's score of given items for the user
    add_items(items)    put items added to the catalog after training in the
                        served model's item space (`encode_items`), so
                        recommend and score include them
    forget(user)        remove everything stored about the user

Concurrent writers: a state is saved only if the user's state revision is still
the one read before the events were read (compare-and-set); otherwise the
events are re-read and the state recomputed, so two processes recording for
the same user never leave a state that misses an event.

Outages: every gRPC call has a deadline and is retried with exponential
backoff on UNAVAILABLE and DEADLINE_EXCEEDED (all calls are pure reads of the
model). If the server stays away, `record` still stores the events and marks
the users' states stale; the next call that needs a state (or `catch_up()`)
recomputes them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from schemas import signatures as s
from schemas.events import Event, InvalidRecordError, Item, RejectedRecord, parse_event, parse_item, reviews_with_text
from schemas.graph import EventWindowConfig, recent_item_ids
from schemas.memory import MemoryCheckpoint, UpdatePlan, checkpoint_after, interest_request, plan_update
from serving.grpc_retry import RETRYABLE_IF_IDEMPOTENT, RetryPolicy, call_with_retries
from serving.interest_store import InterestStateRecord, InterestStore, ItemEncoding

logger = logging.getLogger(__name__)

# Compare-and-set rounds before a user's state is left marked stale (each
# failed round means another writer saved in between, so progress is made).
MAX_SAVE_ATTEMPTS = 8
# Stale users a `record` call brings up to date besides its own (so the first
# call after an outage does not take as long as all of them together).
CATCH_UP_PER_RECORD = 64
# Items per `encode_items` request (each runs BERT over its texts).
ENCODE_ITEMS_BATCH = 32
# A channel retries a dead server with growing pauses; cap them so a server
# that is back is noticed within the retry policy's patience.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class EventSentiment(Protocol):
    """What scores review events (`trainer.review_sentiment.ReviewSentiment`)."""

    def event_sentiments(self, events: Iterable[Event]) -> dict[str, float]: ...


class MissingReviewSentimentError(RuntimeError):
    """A review with text must be encoded, but no review sentiment head was given."""


@dataclasses.dataclass(frozen=True)
class RecordResult:
    """What `record` did.

    Attributes:
      accepted: events stored now (duplicates of stored events are not counted).
      duplicates: events whose event_id was already stored.
      rejected: records that broke the event contract, with the reason.
      updated_users: users whose interest state was recomputed.
      model_version: the model version that computed the new states.
      stale_users: users whose events are stored but whose state could not be
        saved now (the model server was unavailable, or other writers won
        every compare-and-set round); a later call or `InterestClient.catch_up`
        brings them up to date.
    """

    accepted: int
    duplicates: int
    rejected: list[RejectedRecord]
    updated_users: list[str]
    model_version: int | None
    stale_users: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class AddItemsResult:
    """What `add_items` did.

    Attributes:
      stored: items written to the store's catalog (new or replaced).
      encoded: those the served model was not trained on, now placed in its
        item space by `encode_items`; the others it scores itself.
      rejected: records that broke the item contract, with the reason.
      model_version: the model version that encoded them.
    """

    stored: int
    encoded: list[str]
    rejected: list[RejectedRecord]
    model_version: int | None


@dataclasses.dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float


@dataclasses.dataclass(frozen=True)
class InterestGraph:
    """A user's readable interest graph.

    Attributes:
      items: (item_id, weight) of the window items that weigh most in the
        user's current interests, heaviest first.
      categories: (category, weight), heaviest first.
      category_changes: category -> weight now minus weight in the previous
        state (what the latest events moved), largest moves first.
      model_version: the model version that computed it.
      event_count: how many of the user's events it reflects.
    """

    items: list[tuple[str, float]]
    categories: list[tuple[str, float]]
    category_changes: list[tuple[str, float]]
    model_version: int
    event_count: int

    @classmethod
    def from_record(cls, record: InterestStateRecord) -> InterestGraph:
        now = dict(record.interest_graph.get("categories", []))
        before = dict((record.previous_graph or {}).get("categories", []))
        changes = {c: now.get(c, 0.0) - before.get(c, 0.0) for c in set(now) | set(before)}
        return cls(
            items=[tuple(x) for x in record.interest_graph.get("items", [])],
            categories=[tuple(x) for x in record.interest_graph.get("categories", [])],
            category_changes=sorted(changes.items(), key=lambda kv: -abs(kv[1])),
            model_version=record.model_version,
            event_count=record.event_count,
        )


def _readable(outputs: Mapping[str, np.ndarray], row: int) -> dict[str, list[list[Any]]]:
    """The readable interest graph of one row of an update_interest response."""

    def pairs(names: str, weights: str) -> list[list[Any]]:
        return [
            [name.decode(), round(float(weight), 6)]
            for name, weight in zip(outputs[names][row], outputs[weights][row], strict=True)
            if name
        ]

    return {
        "items": pairs(s.INTEREST_ITEM_IDS, s.INTEREST_ITEM_WEIGHTS),
        "categories": pairs(s.INTEREST_CATEGORIES, s.INTEREST_CATEGORY_WEIGHTS),
    }


class InterestClient:
    """Client library for incremental interest updates and recommendations.

    Args:
      target: the model server's gRPC address, e.g. "127.0.0.1:8500".
      store: where events and states are kept.
      model_name: the served model's name.
      window: the bounded event window (must match the one used in training).
      timeout_s: deadline of each gRPC call attempt.
      retry: how transient gRPC failures are retried.
      review_sentiment: scores `review` events' text (a
        `trainer.review_sentiment.ReviewSentiment`, the head the pipeline used),
        so a review weighs online as it did in training; needed only when
        events carry review text.
    """

    def __init__(
        self,
        target: str,
        store: InterestStore,
        model_name: str = s.DEFAULT_MODEL_NAME,
        window: EventWindowConfig | None = None,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        review_sentiment: EventSentiment | None = None,
    ) -> None:
        self.target = target
        self.review_sentiment = review_sentiment
        self.store = store
        self.model_name = model_name
        self.window = window or EventWindowConfig()
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        # ((model version, store revision), table): reused until either moves.
        self._added_items_cache: tuple[tuple[int, int], _AddedItemTable] | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InterestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _predict(self, signature: str, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
        )
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = call_with_retries(
            lambda: self._stub.Predict(request, timeout=self.timeout_s), self.retry, idempotent=True
        )
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def record(self, records: Iterable[Mapping[str, Any] | Event], source: str = "<record>") -> RecordResult:
        """Stores new events and brings the touched users' interest states up to date.

        Args:
          records: events as `Event`s or raw mappings in the documented format.
          source: a name for where the records came from, used in rejections.

        Returns:
          A `RecordResult`; invalid records are returned in `rejected` and do
          not stop the valid ones. If the model server cannot be reached
          (after retries), the events are stored all the same and their users
          are listed in `stale_users`.

        Raises:
          grpc.RpcError: when the server rejects the update (not for outages);
            the events are stored and the users marked stale first.
        """
        events, rejected = _validated(records, Event, parse_event, source)
        added = self.store.add_events(events)
        users = list(dict.fromkeys(e.user_id for e in added))
        try:
            version, stale = self._update(users)
        except grpc.RpcError as error:
            for user_id in users:
                self.store.mark_stale(user_id)
            if error.code() not in RETRYABLE_IF_IDEMPOTENT:
                raise
            return RecordResult(len(added), len(events) - len(added), rejected, [], None, users)
        # The server answers: a good moment to fold in what an outage left behind.
        # Those users stay marked stale if this fails; it must not fail this call.
        try:
            self.catch_up(CATCH_UP_PER_RECORD)
        except grpc.RpcError as error:
            logger.warning("catching up stale interest states failed: %s", error.details())
        updated = [u for u in users if u not in stale]
        return RecordResult(len(added), len(events) - len(added), rejected, updated, version, stale)

    def subgraph(self, user_id: str, events: Sequence[Event] | None = None) -> bytes:
        """The serialized full-recomputation subgraph of a user (window + every older event as memory).

        What `update_interest` takes for this user right after the last stored event.
        """
        history = self.store.user_events(user_id) if events is None else list(events)
        return self._request(*self._plan(history, None))[1][s.SUBGRAPH][0]

    def _plan(self, history: Sequence[Event], record: InterestStateRecord | None) -> tuple[UpdatePlan, int]:
        """How to update one user: the window, the events to fold, and from which stored memory."""
        prediction_time = (max(e.timestamp for e in history) + 1) if history else int(time.time())
        checkpoint = None
        if record is not None and record.long_term_memory and not record.stale:
            checkpoint = MemoryCheckpoint.from_json(record.long_term_memory)
        return plan_update(history, prediction_time, self.window.max_events, checkpoint), prediction_time

    def _request(self, plan: UpdatePlan, prediction_time: int) -> tuple[str, dict[str, np.ndarray]]:
        categories = self.store.item_categories([e.item_id for e in plan.window])
        return interest_request(plan, prediction_time, categories, self._review_sentiments(plan.window))

    def _review_sentiments(self, window: Sequence[Event]) -> dict[str, float]:
        if not reviews_with_text(window):
            return {}
        if self.review_sentiment is None:
            raise MissingReviewSentimentError(
                "the event window has review text but the client has no review sentiment head: pass "
                "review_sentiment=ReviewSentiment.load(DIR) (the head the pipeline used)"
            )
        return self.review_sentiment.event_sentiments(window)

    def update_interests(self, user_ids: Sequence[str]) -> int | None:
        """Recomputes and saves the interest states of users; returns the model version (None for no users).

        Raises:
          grpc.RpcError: when the model server fails (after retries).
        """
        return self._update(user_ids)[0]

    def _update(self, user_ids: Sequence[str]) -> tuple[int | None, list[str]]:
        """Recomputes and saves states with compare-and-set; returns the model version and the users left stale.

        Each round reads every pending user's revision, then their events,
        computes all states in one request, and saves each with
        compare-and-set. Users whose save was refused (another writer saved
        in between) go round again, after a short random pause so that two
        writers fall out of step; a user still refused after
        MAX_SAVE_ATTEMPTS rounds is marked stale, for a later call to finish.
        """
        pending = list(dict.fromkeys(user_ids))
        if not pending:
            return None, []
        version = None
        for attempt in range(MAX_SAVE_ATTEMPTS):
            revisions = {u: self.store.revision(u) for u in pending}
            histories = {u: self.store.user_events(u) for u in pending}
            plans = {u: self._plan(histories[u], self.store.load_state(u)) for u in pending}
            results, version = self._compute(plans)
            pending = [
                user_id
                for user_id in pending
                if not self.store.save_state(
                    user_id,
                    results[user_id][0],
                    results[user_id][2].model_version,
                    len(histories[user_id]),
                    results[user_id][1],
                    long_term_memory=results[user_id][2].to_json(),
                    expected_revision=revisions[user_id],
                )
            ]
            if not pending:
                return version, []
            time.sleep(random.uniform(0.0, 0.005 * 2**attempt))
        for user_id in pending:
            self.store.mark_stale(user_id)
        return version, pending

    def _compute(
        self, plans: Mapping[str, tuple[UpdatePlan, int]]
    ) -> tuple[dict[str, tuple[np.ndarray, dict[str, Any], MemoryCheckpoint]], int]:
        """Interest states, readable graphs and memory checkpoints of planned updates.

        Users with a stored memory go through `fold_interest` (only the newly
        evicted events are sent); the others, and any whose memory was made
        by another model version than the one that answered, through
        `update_interest` with their whole old history as memory.
        """
        results: dict[str, tuple[np.ndarray, dict[str, Any], MemoryCheckpoint]] = {}
        version = 0

        def run(users: list[str], chosen: Mapping[str, tuple[UpdatePlan, int]]) -> int:
            # The users of one call are all incremental or all full: one signature.
            requests = [self._request(*chosen[u]) for u in users]
            signature = requests[0][0]
            inputs = {name: np.concatenate([r[1][name] for r in requests]) for name in requests[0][1]}
            outputs, answered = self._predict(signature, inputs)
            for row, user_id in enumerate(users):
                plan, prediction_time = chosen[user_id]
                checkpoint = checkpoint_after(plan, outputs[s.LONG_TERM_MEMORY][row], prediction_time, answered)
                results[user_id] = (outputs[s.INTEREST_STATE][row], _readable(outputs, row), checkpoint)
            return answered

        incremental = [u for u, (plan, _) in plans.items() if plan.prior_memory is not None]
        full = [u for u, (plan, _) in plans.items() if plan.prior_memory is None]
        if incremental:
            version = run(incremental, plans)
            # A memory made of another model's item vectors cannot be folded into.
            full += [u for u in incremental if plans[u][0].memory_model_version != version]
        if full:
            version = run(full, {u: (plans[u][0].full(), plans[u][1]) for u in full})
        return results, version

    def catch_up(self, max_users: int | None = None) -> list[str]:
        """Recomputes the states marked stale (e.g. during a model server outage).

        Args:
          max_users: at most this many users (default all).

        Returns:
          The users whose states were recomputed.

        Raises:
          grpc.RpcError: when the model server fails (after retries); the
            users stay marked stale.
        """
        users = self.store.stale_users(max_users)
        for start in range(0, len(users), CATCH_UP_PER_RECORD):
            self.update_interests(users[start : start + CATCH_UP_PER_RECORD])
        return users

    def interest_state(self, user_id: str) -> InterestStateRecord:
        """The user's up-to-date state; computed now for new users and stale states."""
        record = self.store.load_state(user_id)
        if record is None or record.stale:
            self.update_interests([user_id])
            record = self.store.load_state(user_id)
        if record is None:
            raise RuntimeError(f"the interest state of user {user_id!r} could not be saved (concurrent writers)")
        return record

    def forget(self, user_id: str) -> int:
        """Removes everything stored about the user; returns how many events were removed."""
        return self.store.forget(user_id)

    def interests(self, user_id: str) -> InterestGraph:
        """The user's readable interest graph and how it moved with the latest events."""
        record = self.interest_state(user_id)
        return InterestGraph.from_record(record)

    def add_items(self, records: Iterable[Mapping[str, Any] | Item], source: str = "<items>") -> AddItemsResult:
        """Adds catalog items after training: stored, and encoded by the served model if it does not know them.

        Until the pipeline trains on them, such items are scored from their
        text and categories alone (the `encode_items` signature): `recommend`
        and `score` include them. A later model version re-encodes them the
        first time it is asked for recommendations; one trained on them scores
        them itself. Adding an item again replaces its text and re-encodes it.

        Args:
          records: items as `Item`s or raw mappings in the catalog format.
          source: a name for where the records came from, used in rejections.

        Returns:
          An `AddItemsResult`; invalid records are returned in `rejected` and
          do not stop the valid ones.

        Raises:
          grpc.RpcError: when the model server cannot encode them (for example
            a model exported without `encode_items`); the items stay stored
            and are encoded by the next call that needs them.
        """
        items, rejected = _validated(records, Item, parse_item, source)
        items = list({i.item_id: i for i in items}.values())
        stored = self.store.upsert_items(items)
        self.store.mark_added_items(i.item_id for i in items)
        if not items:
            return AddItemsResult(stored, [], rejected, None)
        version, encodings = self._encode_added_items([i.item_id for i in items])
        encoded = sorted(i for i, e in encodings.items() if e is not None)
        return AddItemsResult(stored, encoded, rejected, version)

    def _encode_added_items(
        self, item_ids: Sequence[str], attempts: int = 3
    ) -> tuple[int, dict[str, ItemEncoding | None]]:
        """Encodes added items with the served model and stores the result under its version.

        Returns:
          (the model version, item id -> encoding, None for items the model
          was trained on).

        Raises:
          RuntimeError: when the served version changed during each of `attempts` tries.
        """
        known, version = self._model_knows(item_ids)
        encodings: dict[str, ItemEncoding | None] = {i: None for i in item_ids if i in known}
        in_catalog = self.store.items([i for i in item_ids if i not in known])
        items = [in_catalog[i] for i in dict.fromkeys(item_ids) if i in in_catalog]
        for start in range(0, len(items), ENCODE_ITEMS_BATCH):
            chunk = items[start : start + ENCODE_ITEMS_BATCH]
            width = max(1, *(len(i.categories) for i in chunk))
            outputs, answered = self._predict(
                s.ENCODE_ITEMS,
                {
                    s.TITLES: np.array([i.title for i in chunk], dtype=object),
                    s.DESCRIPTIONS: np.array([i.description for i in chunk], dtype=object),
                    s.ITEM_CATEGORIES: np.array(
                        [list(i.categories) + [""] * (width - len(i.categories)) for i in chunk], dtype=object
                    ),
                },
            )
            if answered != version:
                # Another version was loaded meanwhile: start again with it.
                if attempts <= 1:
                    raise RuntimeError(f"the served model version kept changing while encoding {len(items)} items")
                return self._encode_added_items(item_ids, attempts - 1)
            for item, vector, bias in zip(chunk, outputs[s.ITEM_VECTORS], outputs[s.ITEM_BIAS], strict=True):
                encodings[item.item_id] = ItemEncoding(vector.astype(np.float32), float(bias))
        self.store.save_item_encodings(version, encodings)
        return version, encodings

    def _model_knows(self, item_ids: Sequence[str]) -> tuple[set[str], int]:
        """The items the served model was trained on (`score` gives the others -inf), and its version."""
        nobody = {
            s.INTEREST_STATE: np.zeros((1, 1, s.INTEREST_DIM), np.float32),
            s.RECENT_ITEM_IDS: np.array([recent_item_ids([], s.RECENT_ITEMS)], dtype=object),
        }
        outputs, version = self._predict(s.SCORE, {**nobody, s.ITEM_IDS: np.array([list(item_ids)], dtype=object)})
        return {i for i, v in zip(item_ids, outputs[s.SCORES][0], strict=True) if np.isfinite(v)}, version

    def _added_items(self, model_version: int) -> _AddedItemTable:
        """Added items the model version was not trained on, with its encodings (encoding any missing now).

        What was read is kept while the store's `added_items_revision` and the
        served version stay the same, so a `recommend` costs one small read
        instead of every encoding; a write by any process moves the revision.
        An outage or a model without `encode_items` leaves the missing ones
        out (logged, and not kept): recommendations then come from the
        model's own items and the items encoded before.
        """
        # Read before the data: what follows is at least as new as this revision.
        revision = self.store.added_items_revision()
        cached = self._added_items_cache
        if cached is not None and cached[0] == (model_version, revision):
            return cached[1]
        encodings = self.store.item_encodings(model_version)
        pending = [i for i in self.store.added_item_ids() if i not in encodings]
        if pending:
            try:
                version, fresh = self._encode_added_items(pending)
            except grpc.RpcError as error:
                logger.warning("added items left out: encoding them failed: %s", error.details())
                fresh, version = {}, model_version
            if version == model_version:
                encodings.update(fresh)
        table = _AddedItemTable.of({i: e for i, e in encodings.items() if e is not None})
        if not pending:
            # With items pending, this client's own save (or a failure) moved on from `revision`.
            self._added_items_cache = ((model_version, revision), table)
        return table

    def recommend(self, user_id: str, k: int = 10, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """Top-k items for the user, excluding items the user already interacted with.

        A user the store has never seen gets recommendations from an empty
        history (the model's answer for a newcomer), not an error. If the
        state was computed by an older model version than the one now served,
        it is recomputed first so state and item vectors always match. Items
        added after training (`add_items`) compete with the model's own, scored
        as `score` scores them.

        Args:
          user_id: whose interest state ranks the catalog.
          k: how many items to return.
          exclude: further items to leave out, e.g. what is already on the page
            or in the cart. The model drops them before it takes the top k, so
            the caller gets k items without over-fetching. Unknown ids are ignored.

        Returns:
          Up to k recommendations, best first.
        """
        extra = _caller_exclusions(k, exclude)
        state = self.interest_state(user_id)
        events = self.store.user_events(user_id)
        excluded = {e.item_id for e in events} | extra
        inputs = {
            s.INTEREST_STATE: state.state[None],
            s.RECENT_ITEM_IDS: self.recent_item_ids(events),
            s.EXCLUDE_ITEM_IDS: np.array([sorted(excluded) or [s.PADDING_ITEM_ID]], dtype=object),
            s.K: np.array([k], dtype=np.int32),
        }
        outputs, version = self._predict(s.RECOMMEND, inputs)
        if version != state.model_version:
            self.update_interests([user_id])
            state = self.interest_state(user_id)
            inputs[s.INTEREST_STATE] = state.state[None]
            outputs, version = self._predict(s.RECOMMEND, inputs)
        ranked = [
            Recommendation(item.decode(), float(score))
            for item, score in zip(outputs[s.ITEM_IDS][0], outputs[s.SCORES][0], strict=False)
            if item
        ]
        added = self._added_items(version).best(state.state, k, excluded)
        ranked += [Recommendation(i, v) for i, v in added]
        return sorted(ranked, key=lambda r: -r.score)[:k]

    def recommend_new_items(self, user_id: str, k: int = 10, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """A "new for you" shelf: only the items added after training (`add_items`), ranked for the user.

        A new item is known by its text and categories alone, so in the full
        ranking it rarely beats items with a training history (in
        bench/quality's item cold start, no never-seen item reached a full top
        20). Ranked among themselves, the model orders new items well (there,
        NDCG@10 0.0855 against 0.0169 without the text view). A shop shows
        them on a shelf of their own; this is that shelf. Each item's score is
        the one `recommend` and `score` give it.

        Args:
          user_id: whose interest state ranks the new items.
          k: how many items to return.
          exclude: further items to leave out, as in `recommend`.

        Returns:
          Up to k added items the user has not interacted with, best first;
          empty when none were added since the served model was trained.
        """
        extra = _caller_exclusions(k, exclude)
        state = self.interest_state(user_id)
        _, served = self._model_knows([s.PADDING_ITEM_ID])
        if served != state.model_version:
            self.update_interests([user_id])
            state = self.interest_state(user_id)
        excluded = {e.item_id for e in self.store.user_events(user_id)} | extra
        added = self._added_items(state.model_version).best(state.state, k, excluded)
        return [Recommendation(item_id, score) for item_id, score in added]

    def recent_item_ids(self, events: Sequence[Event]) -> np.ndarray:
        """[1, RECENT_ITEMS] the user's latest items, as `update_interest` read them from the window."""
        window = events[-self.window.max_events :] if self.window.max_events else []
        return np.array([recent_item_ids(window, s.RECENT_ITEMS)], dtype=object)

    def score(self, user_id: str, item_ids: Sequence[str]) -> dict[str, float]:
        """The model's score of each given item for the user (-inf for unknown items).

        Items added after training (`add_items`) are scored from their encodings.
        """
        if not item_ids:
            return {}
        state = self.interest_state(user_id)
        inputs = {
            s.INTEREST_STATE: state.state[None],
            s.RECENT_ITEM_IDS: self.recent_item_ids(self.store.user_events(user_id)),
            s.ITEM_IDS: np.array([list(item_ids)], dtype=object),
        }
        outputs, version = self._predict(s.SCORE, inputs)
        scores = {item: float(v) for item, v in zip(item_ids, outputs[s.SCORES][0], strict=False)}
        unknown = [i for i, v in scores.items() if v == float("-inf")]
        if unknown and version == state.model_version:
            scores |= self._added_items(version).scores(state.state, unknown)
        return scores


def _caller_exclusions(k: int, exclude: Iterable[str]) -> set[str]:
    """The items a caller asks `recommend` to leave out, checked along with k."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if isinstance(exclude, str | bytes):
        # A lone id would otherwise be read as its characters.
        raise TypeError(f"exclude must be a collection of item ids, not one id ({exclude!r})")
    extra = set(exclude)
    if not_ids := [i for i in extra if not isinstance(i, str)]:
        raise TypeError(f"exclude must hold item ids as strings, got {not_ids[:5]!r}")
    return extra


def _validated(
    records: Iterable[Any], record_type: type, parse: Callable[[Mapping[str, Any]], Any], source: str
) -> tuple[list[Any], list[RejectedRecord]]:
    """Records of `record_type` as they are, raw mappings through `parse`; the bad ones kept with line and reason."""
    accepted: list[Any] = []
    rejected: list[RejectedRecord] = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, record_type):
            accepted.append(record)
            continue
        try:
            accepted.append(parse(record))
        except InvalidRecordError as e:
            raw = repr(dict(record)) if isinstance(record, Mapping) else repr(record)
            rejected.append(RejectedRecord(source, number, str(e), raw))
    return accepted, rejected


@dataclasses.dataclass(frozen=True)
class _AddedItemTable:
    """One model version's encodings of the added items it was not trained on, stacked for scoring.

    Attributes:
      item_ids: the items, in the rows' order.
      vectors: [items, INTEREST_DIM] their vectors in the model's item space.
      bias: [items] their score offsets.
      row_of: item id -> its row.
    """

    item_ids: tuple[str, ...]
    vectors: np.ndarray
    bias: np.ndarray
    row_of: dict[str, int]

    @classmethod
    def of(cls, encodings: Mapping[str, ItemEncoding]) -> _AddedItemTable:
        if not encodings:
            return cls((), np.zeros((0, s.INTEREST_DIM), np.float32), np.zeros((0,), np.float32), {})
        vectors = np.stack([e.vector for e in encodings.values()]).astype(np.float32)
        bias = np.array([e.bias for e in encodings.values()], np.float32)
        return cls(tuple(encodings), vectors, bias, {item_id: row for row, item_id in enumerate(encodings)})

    def _scores(self, interest_state: np.ndarray, rows: Any = None) -> np.ndarray:
        # As the model's `score`: the best match over the user's interests, plus the bias.
        rows = slice(None) if rows is None else rows
        return (np.asarray(interest_state, np.float32) @ self.vectors[rows].T).max(axis=0) + self.bias[rows]

    def scores(self, interest_state: np.ndarray, item_ids: Iterable[str]) -> dict[str, float]:
        """The user's scores of those of the given items that are in the table."""
        known = [i for i in item_ids if i in self.row_of]
        if not known:
            return {}
        scores = self._scores(interest_state, [self.row_of[i] for i in known])
        return dict(zip(known, scores.tolist(), strict=True))

    def best(self, interest_state: np.ndarray, k: int, exclude: set[str]) -> list[tuple[str, float]]:
        """The k best-scoring items for the user that are not in `exclude`, best first."""
        if not self.item_ids:
            return []
        scores = self._scores(interest_state)
        scores[[self.row_of[i] for i in exclude if i in self.row_of]] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[row], float(scores[row])) for row in top if np.isfinite(scores[row])]
