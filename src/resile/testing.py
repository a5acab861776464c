"""Test your own code that uses resile without waiting for real.

::

    from resile.testing import no_waits

    def test_fetch_gives_up():
        with no_waits() as clock:
            with pytest.raises(ConnectionError):
                fetch("http://down")
        assert clock.sleeps == [0.1, 0.2, 0.4, 0.8]   # with a seeded / jitter-free policy

Inside ``no_waits()`` every wait resile would make (retry backoff, periodic
intervals, executor delays) returns at once; the fake clock advances by the
wait instead, so elapsed-time stop conditions and deadlines behave as if the
time had passed. The swap is process-wide: do not run such tests in parallel
threads of one process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from resile import _aio, _time

__all__ = ["FakeClock", "no_waits"]


class FakeClock:
    """A monotonic clock that only moves when something waits on it (or ``advance`` is called).

    Attributes:
        now: the current reading, in seconds.
        sleeps: every wait requested, in order.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward without recording a wait."""
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        # Still yield to the event loop, as a real sleep would.
        await _aio.checkpoint()

    @property
    def total(self) -> float:
        """Seconds waited in all."""
        return sum(self.sleeps)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r}, sleeps={len(self.sleeps)})"


@contextmanager
def no_waits(start: float = 1000.0) -> Iterator[FakeClock]:
    """Swap resile's clock for a ``FakeClock`` for the duration of the block; yields it."""
    fake = FakeClock(start)
    previous = _time.clock
    _time.clock = fake
    try:
        yield fake
    finally:
        _time.clock = previous
