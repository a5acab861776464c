"""The clock that every timed part of resile reads, swappable for tests.

Deadlines are absolute instants on this clock (``time.monotonic`` by default).
``resile.testing`` swaps it for a fake one so that no test really sleeps.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import Protocol

from resile import _aio


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
        await _aio.sleep(seconds)


SYSTEM = SystemClock()
# The one mutable slot: ``resile.testing`` replaces it and puts it back.
clock: Clock = SYSTEM

# The current deadline, an instant on ``clock`` (``None``: none); ``resile.deadline``
# sets it, and the retry engine reads it to skip waits that would end past it.
DEADLINE: ContextVar[float | None] = ContextVar("resile_deadline", default=None)


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


class Buckets:
    """Two counters summed over a sliding time window kept as ``count`` buckets.

    ``data`` is a list of ``[bucket index, a, b]``, oldest first: plain JSON,
    so a breaker's window can be stored in Redis as it is. The window is
    exact to one bucket width (``window / count``). Used by the adaptive
    throttle and the breaker's time window.
    """

    __slots__ = ("count", "data", "width")

    def __init__(
        self, window: float, count: int = 20, data: list[list[float]] | None = None
    ) -> None:
        self.width = window / count
        self.count = count
        self.data: list[list[float]] = data if data is not None else []

    def _trim(self, now: float) -> int:
        index = math.floor(now / self.width)
        oldest = index - self.count + 1
        data = self.data
        while data and data[0][0] < oldest:
            data.pop(0)
        return index

    def add(self, now: float, a: float, b: float) -> None:
        index = self._trim(now)
        data = self.data
        if data and data[-1][0] == index:
            data[-1][1] += a
            data[-1][2] += b
        else:
            data.append([index, a, b])

    def sums(self, now: float) -> tuple[float, float]:
        self._trim(now)
        return sum(d[1] for d in self.data), sum(d[2] for d in self.data)
