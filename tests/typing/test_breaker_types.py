"""Typed usages of the breaker, the throttle and hedging that ``mypy --strict`` checks (and pytest runs).

An assignment to an annotated variable fails type-checking if a decorator loses
the original signature; each ``# type: ignore[code]`` marks a call that must be
rejected (``warn_unused_ignores`` turns a no longer needed ignore into an error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from resile import (
    AdaptiveThrottle,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    Constant,
    RetryBudget,
    hedge,
    retry,
)

breaker = CircuitBreaker(failure_threshold=3, recovery=Constant(1))
throttle = AdaptiveThrottle(k=2.0, seed=1)


@breaker
def read(key: str, *, default: int = 0) -> int:
    return default


@breaker
async def aread(key: str) -> bytes:
    return key.encode()


@throttle
def send(n: int) -> float:
    return n / 2


@hedge(delay=0.01, max_attempts=2, budget=RetryBudget())
async def lookup(user_id: int) -> str:
    return str(user_id)


@retry(budget=throttle)
@breaker
def guarded(x: int) -> int:
    return x


def test_signatures_are_kept() -> None:
    """The decorated functions keep their parameters and return types."""
    r: Callable[..., int] = read
    value: int = read("a", default=3)
    half: float = send(3)
    g: int = guarded(2)
    a: Callable[[str], Coroutine[Any, Any, bytes]] = aread
    state: CircuitState = breaker.state
    retry_after: float = breaker.retry_after
    assert (value, half, g, state, retry_after) == (3, 1.5, 2, CircuitState.CLOSED, 0.0)
    del r, a


def test_async_results_are_typed() -> None:
    """Awaiting a hedged or guarded coroutine gives the declared type."""

    async def main() -> tuple[str, bytes]:
        name: str = await lookup(7)
        raw: bytes = await aread("k")
        return name, raw

    assert asyncio.run(main()) == ("7", b"k")


def _wrong_arguments() -> None:
    """Never called: mypy must reject each call (an unneeded ignore is an error)."""
    read(1)  # type: ignore[arg-type]
    send("x")  # type: ignore[arg-type]
    lookup("x")  # type: ignore[arg-type, unused-coroutine]


def test_circuit_open_is_typed() -> None:
    """CircuitOpen carries a float retry_after."""
    err: CircuitOpen = CircuitOpen("db", 1.0)
    assert err.retry_after == 1.0
