"""What one call of each workload does, and the inputs it uses.

Client workloads (run in client processes, against the server):

    record                   InterestClient.record of one new event: store it,
                             rebuild the user's window, `update_interest` over
                             gRPC, save the new state
    recommend                InterestClient.recommend(user, 10): read state and
                             history, `recommend` over gRPC
    predict_update_interest  a raw Predict of `update_interest` (prebuilt
                             request, plain TF Serving stub) on a user's subgraph
    predict_recommend        a raw Predict of `recommend` (prebuilt request)

In-process workloads (the lower bound, no server): the same two signatures
called through `tf.saved_model.load` on the same inputs as the raw Predicts:

    inprocess                `update_interest`
    inprocess_recommend      `recommend`

Every client and thread works on its own share of the MovieLens users
(`partition`), cycling through them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from schemas import signatures as s
from schemas.events import Event, Item
from schemas.graph import event_order
from serving.client import InterestClient
from serving.interest_store import SqliteInterestStore

CLIENT_WORKLOADS = ("record", "recommend", "predict_update_interest", "predict_recommend")
INPROCESS_WORKLOADS = ("inprocess", "inprocess_recommend")
TOP_K = 10
# Users whose states are computed per update request while a store is prepared.
PRELOAD_BATCH = 32
# An input set per user: signature name -> input name -> array.
UserInputs = dict[str, dict[str, np.ndarray]]


def histories_by_user(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Each user's events in the pipeline's order (timestamp, then event id).

    Args:
      events: all events.

    Returns:
      user_id -> events, oldest first; users sorted by id length then id
      (numeric order for MovieLens ids).
    """
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    return {u: sorted(by_user[u], key=event_order) for u in sorted(by_user, key=lambda u: (len(u), u))}


def partition(users: Sequence[str], parts: int) -> list[list[str]]:
    """Splits users round-robin into `parts` non-empty shares.

    Args:
      users: all users of the run.
      parts: number of clients (or threads).

    Returns:
      `parts` lists of users.

    Raises:
      ValueError: if there are fewer users than parts.
    """
    if len(users) < parts:
        raise ValueError(f"{parts} clients need at least {parts} users, got {len(users)}")
    return [list(users[i::parts]) for i in range(parts)]


def preload(store: SqliteInterestStore, items: Iterable[Item], histories: Mapping[str, Sequence[Event]]) -> None:
    """Writes the catalog and the users' real histories into a store.

    Args:
      store: an empty store.
      items: the catalog.
      histories: user -> events.
    """
    store.upsert_items(items)
    store.add_events(e for history in histories.values() for e in history)


def signature_inputs(client: InterestClient, user_id: str, state: np.ndarray) -> UserInputs:
    """The inputs `record` and `recommend` send for a user, as arrays.

    The subgraph is built by the client's own code from the user's stored
    history, so raw Predicts and in-process calls see exactly what the client
    would send.

    Args:
      client: a client whose store holds the user's history.
      user_id: the user.
      state: the user's interest state, [interests, dim].

    Returns:
      {"update_interest": {...}, "recommend": {...}} input arrays, batch of one.
    """
    events = client.store.user_events(user_id)
    seen = sorted({e.item_id for e in events}) or [s.PADDING_ITEM_ID]
    return {
        s.UPDATE_INTEREST: {s.SUBGRAPH: np.array([client.subgraph(user_id)], dtype=object)},
        s.RECOMMEND: {
            s.INTEREST_STATE: np.asarray(state, dtype=np.float32)[None],
            s.RECENT_ITEM_IDS: client.recent_item_ids(events),
            s.EXCLUDE_ITEM_IDS: np.array([seen], dtype=object),
            s.K: np.array([TOP_K], dtype=np.int32),
        },
    }


class NewEvents:
    """Fresh events for `record`: each a rating of an item the user has not rated yet.

    Each event is newer than everything the user has, and its event_id is
    unique, so every `record` call stores it and really updates the state
    (a duplicate would skip the update and flatter the latency).

    Args:
      client_tag: makes event ids unique across clients.
      histories: the users' current histories.
      item_ids: the catalog's item ids.
      seed: picks items and ratings reproducibly.
    """

    def __init__(
        self, client_tag: str, histories: Mapping[str, Sequence[Event]], item_ids: Sequence[str], seed: int
    ) -> None:
        rng = random.Random(seed)
        self._tag = client_tag
        self._users = list(histories)
        self._last_time = {u: max((e.timestamp for e in h), default=0) for u, h in histories.items()}
        # Drawn up front so a call costs no catalog scan inside the timed region.
        self._unseen = {}
        for user, history in histories.items():
            seen = {e.item_id for e in history}
            self._unseen[user] = [i for i in item_ids if i not in seen]
            rng.shuffle(self._unseen[user])
        self._item_ids = list(item_ids)
        self._rng = rng
        self._count = 0

    def next(self) -> Event:
        """The next event, for the next user in turn."""
        user = self._users[self._count % len(self._users)]
        # A user who has rated every item rates one again (a new event all the same).
        item = self._unseen[user].pop() if self._unseen[user] else self._rng.choice(self._item_ids)
        self._last_time[user] += 60
        self._count += 1
        return Event(
            user,
            item,
            "rating",
            self._last_time[user],
            float(self._rng.randint(1, 5)),
            "",
            f"bench-{self._tag}-{self._count}",
        )


def client_calls(
    client: InterestClient,
    stub: Any,
    users: Sequence[str],
    inputs: Mapping[str, UserInputs],
    new_events: NewEvents,
    timeout_s: float,
) -> dict[str, Callable[[int], None]]:
    """One callable per client workload; call i works on user i modulo the share.

    Args:
      client: the interest client (its store is preloaded and has states).
      stub: a plain `PredictionServiceStub`.
      users: this client's users.
      inputs: user -> `signature_inputs`.
      new_events: the source of `record`'s events.
      timeout_s: deadline of the raw Predicts.

    Returns:
      workload name -> callable(i); each raises if the call did not do its work.
    """
    from tensorflow_serving.apis import predict_pb2

    def request(signature: str, arrays: Mapping[str, np.ndarray]) -> Any:
        import tensorflow as tf

        proto = predict_pb2.PredictRequest()
        proto.model_spec.name = client.model_name
        proto.model_spec.signature_name = signature
        for name, value in arrays.items():
            proto.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return proto

    update_requests = [request(s.UPDATE_INTEREST, inputs[u][s.UPDATE_INTEREST]) for u in users]
    recommend_requests = [request(s.RECOMMEND, inputs[u][s.RECOMMEND]) for u in users]

    def record(_: int) -> None:
        result = client.record([new_events.next()])
        if result.accepted != 1 or not result.updated_users:
            raise RuntimeError(f"record did not update a state: {result}")

    def recommend(i: int) -> None:
        got = client.recommend(users[i % len(users)], TOP_K)
        if len(got) != TOP_K:
            raise RuntimeError(f"recommend returned {len(got)} items, expected {TOP_K}")

    def predict_update(i: int) -> None:
        stub.Predict(update_requests[i % len(users)], timeout=timeout_s)

    def predict_recommend(i: int) -> None:
        stub.Predict(recommend_requests[i % len(users)], timeout=timeout_s)

    return {
        "record": record,
        "recommend": recommend,
        "predict_update_interest": predict_update,
        "predict_recommend": predict_recommend,
    }
