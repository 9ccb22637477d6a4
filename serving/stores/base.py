"""The contract every interest-store backend keeps, and the record it returns.

A store holds three things per user: the user's events (keyed by event_id, so a
retried batch is stored once), the latest interest state with the model
version that computed it, and a revision counter that makes concurrent updates
safe. Writers follow one protocol (read the revision, then the events, compute,
then `save_state(..., expected_revision=...)`), and a save based on an outdated
read is refused, so the last saved state always reflects every stored event
whose writer has finished. The item catalog lives next to them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from schemas.events import Event, Item


@dataclasses.dataclass(frozen=True)
class InterestStateRecord:
    """A user's interest state, the model version that computed it, and its readable graph.

    Attributes:
      user_id: whose state this is.
      state: the interest state tensor of one user (float32).
      model_version: the model version that computed it.
      event_count: how many of the user's events it was computed from.
      updated_at: Unix time of the save.
      interest_graph: the readable interest graph of this state (JSON-like:
        top items and categories with weights).
      previous_graph: the readable graph of the state this one replaced, so
        what moved with the latest events can be shown.
      revision: bumped by every save and every `mark_stale`; a writer passes
        the revision it read to `save_state` so that a save computed from an
        outdated view of the events is refused (compare-and-set).
      stale: True when events were stored that this state does not reflect yet
        (the model server was unavailable); the next update recomputes it.
      long_term_memory: optional JSON-serialisable data the model keeps
        across updates; stored and returned unchanged.
    """

    user_id: str
    state: np.ndarray
    model_version: int
    event_count: int
    updated_at: float
    interest_graph: dict[str, Any]
    previous_graph: dict[str, Any] | None
    revision: int = 0
    stale: bool = False
    long_term_memory: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class ItemEncoding:
    """An added item as one model version placed it: its vector and bias (`encode_items`)."""

    vector: np.ndarray
    bias: float

    def to_bytes(self) -> bytes:
        """float32 vector then float32 bias, the form both backends store."""
        return np.append(np.asarray(self.vector, np.float32), np.float32(self.bias)).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemEncoding:
        values = np.frombuffer(data, dtype=np.float32)
        return cls(values[:-1].copy(), float(values[-1]))


class InterestStore(abc.ABC):
    """Events, interest states and the item catalog, behind one interface.

    Every method is safe to call from several threads and several processes at
    once. Event identity is (user_id, event_id).
    """

    def __enter__(self) -> InterestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the connection."""

    @abc.abstractmethod
    def add_events(self, events: Iterable[Event]) -> list[Event]:
        """Stores events; returns those that were new (by user_id and event_id), in input order."""

    @abc.abstractmethod
    def user_events(self, user_id: str) -> list[Event]:
        """All of a user's events ordered by timestamp, then event_id (late arrivals fall into place)."""

    @abc.abstractmethod
    def revision(self, user_id: str) -> int:
        """The user's state revision (0 for a user never saved nor marked stale).

        Read it before reading the events a new state is computed from, and
        pass it to `save_state` as `expected_revision`.
        """

    @abc.abstractmethod
    def save_state(
        self,
        user_id: str,
        state: np.ndarray,
        model_version: int,
        event_count: int,
        interest_graph: dict[str, Any] | None = None,
        *,
        long_term_memory: dict[str, Any] | None = None,
        expected_revision: int | None = None,
    ) -> bool:
        """Saves the user's interest state unless another writer got there first.

        The readable graph of the replaced state is kept as `previous_graph`;
        the revision goes up by one and the stale mark is cleared.

        Args:
          user_id: whose state.
          state: the interest state tensor.
          model_version: the model version that computed it.
          event_count: how many events it was computed from.
          interest_graph: its readable graph.
          long_term_memory: JSON-serialisable model memory, stored unchanged.
          expected_revision: the revision read before the events were read;
            None saves unconditionally.

        Returns:
          True if saved; False if the revision moved on (re-read and recompute).
        """

    @abc.abstractmethod
    def load_state(self, user_id: str) -> InterestStateRecord | None:
        """The user's latest saved state, or None if none was ever saved."""

    @abc.abstractmethod
    def mark_stale(self, user_id: str) -> None:
        """Records that the user's state misses stored events; bumps the revision.

        Bumping the revision makes any save computed before this call fail its
        compare-and-set, so the mark is only cleared by a state that was
        computed after the missing events were stored.
        """

    @abc.abstractmethod
    def stale_users(self, limit: int | None = None) -> list[str]:
        """Users whose state is marked stale (at most `limit`), sorted."""

    @abc.abstractmethod
    def forget(self, user_id: str) -> int:
        """Removes everything stored about the user: events, state, revision, stale mark.

        Returns:
          How many events were removed.
        """

    @abc.abstractmethod
    def upsert_items(self, items: Iterable[Item]) -> int:
        """Adds or replaces catalog items; returns how many were written."""

    @abc.abstractmethod
    def item_categories(self, item_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Categories of the given items that are in the catalog."""

    @abc.abstractmethod
    def items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """The given items that are in the catalog, by id, read in one go."""

    def item(self, item_id: str) -> Item | None:
        """One catalog item, or None."""
        return self.items([item_id]).get(item_id)

    @abc.abstractmethod
    def mark_added_items(self, item_ids: Iterable[str]) -> None:
        """Remembers items added to the catalog after training (they need `encode_items`)."""

    @abc.abstractmethod
    def added_item_ids(self) -> list[str]:
        """Every item ever passed to `mark_added_items`, sorted."""

    @abc.abstractmethod
    def save_item_encodings(self, model_version: int, encodings: Mapping[str, ItemEncoding | None]) -> None:
        """Stores what a model version made of added items (None: that version was trained on the item)."""

    @abc.abstractmethod
    def item_encodings(self, model_version: int) -> dict[str, ItemEncoding | None]:
        """Everything `save_item_encodings` stored for the model version."""

    @abc.abstractmethod
    def added_items_revision(self) -> int:
        """A counter that every change by `mark_added_items` or `save_item_encodings` raises.

        It lets a reader keep what it read of the added items and their
        encodings, in any process, for as long as the counter stays where it
        was when it started reading: someone else's write moves it.
        """


def encode_state(state: np.ndarray) -> tuple[bytes, str]:
    """A state tensor as float32 bytes and its shape ("2,4"), the form both backends store."""
    array = np.asarray(state, dtype=np.float32)
    return array.tobytes(), ",".join(map(str, array.shape))


def decode_state(data: bytes, shape: str) -> np.ndarray:
    """The inverse of `encode_state` (a writable copy)."""
    dims = tuple(int(d) for d in shape.split(",") if d)
    return np.frombuffer(data, dtype=np.float32).reshape(dims).copy()
