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


# The async library's own names live in ``resile._aio``; these two stay importable here.
current_async_library = _aio.current_async_library
run_in_thread = _aio.run_in_thread


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
