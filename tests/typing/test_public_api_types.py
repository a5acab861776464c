"""Public-API usages that ``mypy --strict`` checks (and pytest runs).

Each assignment to an annotated variable fails type-checking if a decorator loses
the original signature. Each ``# type: ignore[code]`` marks a call that must be
rejected: with ``warn_unused_ignores`` (part of ``--strict``) an ignore that is no
longer needed, because the types became ``Any``, is itself an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from resile import (
    AttemptManager,
    Backoff,
    BackoffExecutor,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Linear,
    Permanent,
    Retrying,
    RetryState,
    RetryStatistics,
    Stop,
    after_attempts,
    after_elapsed,
    deadline,
    never,
    presets,
    remaining,
    retry,
)
from resile.testing import FakeClock, no_waits


def log_it(state: RetryState) -> None:
    attempt: int = state.attempt
    delay: float = state.next_delay
    error: BaseException | None = state.exception
    del attempt, delay, error


@retry
def bare(x: int) -> str:
    return str(x)


@retry(
    on=(ConnectionError, TimeoutError),
    backoff=Exponential(0.1, max_delay=5.0),
    stop=after_attempts(5) | after_elapsed(30),
    on_retry=log_it,
)
def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@retry(on_result=lambda ok: not ok, backoff=Constant(0.5), stop=after_attempts(3))
async def ping() -> bool:
    return True


@Retrying(permanent_on=(PermissionError,), timeout=5.0)
async def load(key: str, default: int = 0) -> int:
    if key == "forbidden":
        raise Permanent(PermissionError(key))
    return default


class Client:
    @retry(backoff=Constant(0))
    def get(self, n: int) -> list[int]:
        return [n]


def test_sync_signatures_kept() -> None:
    """Decorated sync functions keep their parameter and return types."""
    as_callable: Callable[[int], str] = bare
    text: str = bare(3)
    data: bytes = fetch("http://x", timeout=2.0)
    items: list[int] = Client().get(1)
    assert (text, data, items) == ("3", b"http://x", [1])
    assert as_callable(4) == "4"
    if TYPE_CHECKING:  # checked by mypy, never run
        bare("three")  # type: ignore[arg-type]
        fetch("u", retries=3)  # type: ignore[call-arg]
        Client().get("1")  # type: ignore[arg-type]


def test_async_signatures_kept() -> None:
    """Decorated coroutine functions keep their types: awaiting gives the original result."""
    as_callable: Callable[[], Coroutine[Any, Any, bool]] = ping
    loader: Callable[[str, int], Coroutine[Any, Any, int]] = load

    async def main() -> tuple[bool, int]:
        ok: bool = await as_callable()
        n: int = await loader("k", 7)
        return ok, n

    assert asyncio.run(main()) == (True, 7)
    if TYPE_CHECKING:
        load(3)  # type: ignore[arg-type,unused-coroutine]
        ping(1)  # type: ignore[call-arg,unused-coroutine]


def test_iterator_forms() -> None:
    """for/async for over Retrying yield AttemptManager objects."""
    policy: Retrying = Retrying(backoff=Constant(0), stop=after_attempts(2))
    for attempt in policy:
        manager: AttemptManager = attempt
        with manager:
            manager.set_result(1)

    async def main() -> int:
        async for attempt in Retrying():
            with attempt:
                number: int = attempt.number
                return number
        return 0

    assert asyncio.run(main()) == 1
    stats: RetryStatistics = policy.statistics
    assert stats.calls == 1


def test_values() -> None:
    """Strategies, stop conditions, deadlines and the executor have precise types."""
    strategies: list[Backoff] = [Constant(1), Linear(1, 1), Exponential(), DecorrelatedJitter()]
    delays: list[float] = [b.delay(1) for b in strategies]
    stored: dict[str, Any] = strategies[0].to_dict()
    again: Backoff = Backoff.from_dict(stored)
    stop: Stop = after_attempts(3) | never
    with no_waits() as clock, deadline(2.0):
        fake: FakeClock = clock
        left: float | None = remaining()
    go: Retrying = presets.go()
    ex = BackoffExecutor(100, 1000, 2, jitter=True)
    done: bool = ex.execute(lambda: True)

    async def main() -> bool:
        ok: bool = await ex.execute_async(lambda: True)
        return ok

    assert asyncio.run(main()) is True
    assert all(d >= 0 for d in delays) and again == strategies[0] and stop and go and done
    assert left == 2.0 and fake.sleeps == []
