"""Retries with exponential backoff: which codes, how long, how often."""

from __future__ import annotations

import random

import grpc
import pytest

from serving.grpc_retry import RetryPolicy, call_with_retries


class _Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _flaky(codes: list[grpc.StatusCode]):  # noqa: ANN202
    """A call that fails with `codes` in turn, then returns how many calls it took."""
    calls = []

    def call() -> int:
        calls.append(1)
        if len(calls) <= len(codes):
            raise _Failure(codes[len(calls) - 1])
        return len(calls)

    return call


def test_unavailable_is_retried_with_growing_pauses_until_it_succeeds() -> None:
    pauses: list[float] = []
    policy = RetryPolicy(attempts=5, initial_backoff_s=0.1, multiplier=2.0, max_backoff_s=0.3, jitter=0.0)
    result = call_with_retries(_flaky([grpc.StatusCode.UNAVAILABLE] * 4), policy, idempotent=False, sleep=pauses.append)
    assert result == 5
    assert pauses == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_gives_up_after_the_last_attempt_with_the_last_error() -> None:
    pauses: list[float] = []
    call = _flaky([grpc.StatusCode.UNAVAILABLE] * 3)
    with pytest.raises(grpc.RpcError) as raised:
        call_with_retries(call, RetryPolicy(attempts=3), idempotent=True, sleep=pauses.append)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(pauses) == 2


def test_deadline_exceeded_is_retried_only_for_idempotent_calls() -> None:
    pauses: list[float] = []
    deadline = [grpc.StatusCode.DEADLINE_EXCEEDED]
    assert call_with_retries(_flaky(deadline), RetryPolicy(), idempotent=True, sleep=pauses.append) == 2
    with pytest.raises(grpc.RpcError):
        call_with_retries(_flaky(deadline), RetryPolicy(), idempotent=False, sleep=pauses.append)
    assert len(pauses) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
def test_errors_of_the_request_itself_are_not_retried(code: grpc.StatusCode) -> None:
    pauses: list[float] = []
    with pytest.raises(grpc.RpcError):
        call_with_retries(_flaky([code]), RetryPolicy(), idempotent=True, sleep=pauses.append)
    assert pauses == []


def test_jitter_shortens_pauses_by_at_most_its_fraction() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, multiplier=1.0, max_backoff_s=1.0, jitter=0.5)
    rng = random.Random(0)
    pauses = [policy.backoff_s(0, rng) for _ in range(200)]
    assert all(0.5 <= p <= 1.0 for p in pauses)
    assert max(pauses) - min(pauses) > 0.3


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"jitter": 1.5}])
def test_policy_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
