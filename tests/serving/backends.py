"""Which store a test runs against, in a form a spawned process can receive (picklable)."""

from __future__ import annotations

import dataclasses

from serving.interest_store import InterestStore, open_store


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """A store's URL and Redis key prefix: enough to open it again anywhere.

    Attributes:
      backend: "sqlite" or "redis".
      url: what `open_store` takes.
      prefix: the Redis key prefix (unique per test, so tests share one Redis).
    """

    backend: str
    url: str
    prefix: str = "unused:"

    def open(self) -> InterestStore:
        return open_store(self.url, redis_prefix=self.prefix)
