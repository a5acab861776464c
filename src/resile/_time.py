"""The clock that every timed part of resile reads, swappable for tests.

Deadlines are absolute instants on this clock (``time.monotonic`` by default).
``resile.testing`` swaps it for a fake one so that no test really sleeps.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What resile needs of a clock: read it, and wait on it."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def async_sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``; sleeps with ``time.sleep`` or the running async library."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def async_sleep(self, seconds: float) -> None:
        if current_async_library() == "trio":
            import trio

            await trio.sleep(seconds)
        else:
            await asyncio.sleep(seconds)


SYSTEM = SystemClock()
# The one mutable slot: ``resile.testing`` replaces it and puts it back.
clock: Clock = SYSTEM


def current_async_library() -> str:
    """Name the async library running this code: ``"asyncio"`` or ``"trio"``.

    Raises:
        RuntimeError: when called outside any event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    raise RuntimeError("resile: no running asyncio or trio event loop")


async def run_in_thread(fn: Callable[[], T]) -> T:
    """Run the sync ``fn()`` in a worker thread of the running async library, off its loop."""
    if current_async_library() == "trio":
        import trio

        return await trio.to_thread.run_sync(fn)
    return await asyncio.to_thread(fn)


def seconds(
    value: float | timedelta | None, field: str, owner: str, *, allow_none: bool = False
) -> float:
    """Check a duration given as seconds or ``timedelta`` and return seconds.

    Raises:
        ValueError: negative, NaN or infinite values, naming ``owner.field``.
        TypeError: anything that is not a number or a ``timedelta``.
    """
    if value is None:
        if allow_none:
            return math.inf
        raise TypeError(f"{owner}: {field} must be a number of seconds or a timedelta, got None")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: {field} must be a number of seconds or a timedelta, got {value!r}"
        )
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{owner}: {field} must be a finite number >= 0, got {value!r}")
    return value


def positive_seconds(value: float | timedelta, field: str, owner: str) -> float:
    """``seconds`` for a duration that must also be > 0.

    Raises:
        ValueError: zero, negative, NaN or infinite values, naming ``owner.field``.
        TypeError: anything that is not a number or a ``timedelta``.
    """
    got = seconds(value, field, owner)
    if got <= 0.0:
        raise ValueError(f"{owner}: {field} must be > 0 seconds, got {value!r}")
    return got
