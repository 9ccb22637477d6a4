"""Where users' events and interest states live between requests.

One interface (`InterestStore`), two backends with the same behaviour:
SQLite (`SqliteInterestStore`, the default: one file, zero setup) and Redis
(`RedisInterestStore`, for several machines). `open_store` picks one from a
URL, so a command line or a config file can name either.
"""

from __future__ import annotations

from serving.stores.base import InterestStateRecord, InterestStore, ItemEncoding
from serving.stores.redis_store import DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX
from serving.stores.redis_store import RedisInterestStore
from serving.stores.sqlite_store import SqliteInterestStore

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "InterestStateRecord",
    "InterestStore",
    "ItemEncoding",
    "RedisInterestStore",
    "SqliteInterestStore",
    "open_store",
]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_store(url: str, *, redis_prefix: str = DEFAULT_REDIS_PREFIX) -> InterestStore:
    """Opens the interest store a URL names.

    Args:
      url: one of
        - a file path, or `sqlite:///PATH` (`sqlite:////abs/path` for an
          absolute path, as SQLAlchemy writes it; `sqlite:///:memory:` for a
          private in-process store): SQLite;
        - `redis://HOST:PORT/DB`, `rediss://...` (TLS) or
          `unix:///path/to.sock?db=N`: Redis.
      redis_prefix: the namespace of every Redis key (several stores can
        share one Redis database); ignored for SQLite.

    Returns:
      The store; close it when done (it is also a context manager).

    Raises:
      ValueError: for a URL scheme that is not one of the above.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return SqliteInterestStore(url)
    if scheme in _REDIS_SCHEMES:
        return RedisInterestStore(url, prefix=redis_prefix)
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return SqliteInterestStore(rest[1:])
    raise ValueError(
        f"cannot open interest store {url!r}: expected a file path, sqlite:///PATH, redis://HOST:PORT/DB, "
        "rediss://... or unix:///SOCKET"
    )
