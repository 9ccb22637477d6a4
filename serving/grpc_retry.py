"""Retrying gRPC calls with exponential backoff.

A model server that restarts (a new version, a redeploy, a crash) answers
UNAVAILABLE for a moment; a busy one may miss a deadline. Both are worth
another try after a pause that doubles each time, with jitter so that many
clients do not retry in lockstep. Other codes (INVALID_ARGUMENT, NOT_FOUND, ...)
say the request itself is wrong, and retrying would only repeat the answer.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

T = TypeVar("T")

# Transient for any call; a missed deadline is transient too, but retrying is
# only safe when running the call twice does no harm.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
RETRYABLE_IF_IDEMPOTENT = RETRYABLE | {grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried.

    Attributes:
      attempts: tries in all (1: no retry).
      initial_backoff_s: the pause before the second try.
      multiplier: each further pause is this many times the previous one...
      max_backoff_s: ...but never longer than this.
      jitter: each pause is scaled by a random factor in [1 - jitter, 1].
    """

    attempts: int = 5
    initial_backoff_s: float = 0.2
    multiplier: float = 2.0
    max_backoff_s: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The pause before retry number `retry` (0 for the first retry)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry)
        return base * (1.0 - self.jitter * (rng or random).random())


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    idempotent: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Runs `call`, retrying transient gRPC failures as `policy` says.

    Args:
      call: the RPC, with its own deadline (a fresh one per try).
      policy: attempts and backoff.
      idempotent: whether running the call twice is harmless; only then is
        DEADLINE_EXCEEDED retried (the first try may have taken effect).
      sleep: how to wait (tests pass a recorder).

    Returns:
      The first successful result.

    Raises:
      grpc.RpcError: the last error, when it is not retryable or the
        attempts are used up.
    """
    retryable = RETRYABLE_IF_IDEMPOTENT if idempotent else RETRYABLE
    failures = 0
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            failures += 1
            if error.code() not in retryable or failures >= policy.attempts:
                raise
            sleep(policy.backoff_s(failures - 1))
