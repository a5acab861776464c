"""resile.testing: no_waits() and FakeClock, so users test their code without sleeping."""

from __future__ import annotations

import time

import anyio
import pytest

from resile import Constant, after_elapsed, deadline, remaining, retry
from resile import _time as resile_time
from resile.testing import FakeClock, no_waits


class TestNoWaits:
    """no_waits() swaps resile's clock for a fake one and puts the real one back."""

    def test_swaps_and_restores(self) -> None:
        """Inside, resile's clock is the yielded FakeClock; after, the system clock again."""
        before = resile_time.clock
        with no_waits() as clock:
            assert resile_time.clock is clock
            assert isinstance(clock, FakeClock)
        assert resile_time.clock is before

    def test_restores_after_exception(self) -> None:
        """The real clock comes back even when the block raises."""
        before = resile_time.clock
        with pytest.raises(RuntimeError), no_waits():
            raise RuntimeError
        assert resile_time.clock is before

    def test_nested(self) -> None:
        """Nested blocks restore the outer fake clock."""
        with no_waits() as outer:
            with no_waits(start=0.0) as inner:
                assert resile_time.clock is inner
            assert resile_time.clock is outer

    def test_records_and_never_sleeps(self) -> None:
        """Retry waits are recorded, in order, and take no real time."""
        t0 = time.monotonic()
        with no_waits() as clock, pytest.raises(OSError):

            @retry(backoff=Constant(100.0))
            def f() -> None:
                raise OSError

            f()
        assert clock.sleeps == [100.0] * 4
        assert clock.total == 400.0
        assert time.monotonic() - t0 < 5.0

    def test_elapsed_stop_sees_fake_time(self) -> None:
        """after_elapsed counts the fake waits as elapsed time."""
        with no_waits() as clock, pytest.raises(OSError):

            @retry(backoff=Constant(30.0), stop=after_elapsed(100))
            def f() -> None:
                raise OSError

            f()
        assert clock.sleeps == [30.0, 30.0, 30.0]
        assert clock.now == 1090.0

    def test_deadline_sees_fake_time(self) -> None:
        """Deadlines read the fake clock: waits move remaining() down."""
        with no_waits() as clock, deadline(10.0):
            clock.sleep(4.0)
            assert remaining() == 6.0

    def test_injected_sleep_wins(self) -> None:
        """A policy's own sleep= is used even inside no_waits()."""
        mine: list[float] = []
        with no_waits() as clock:
            retry(backoff=Constant(1.0), sleep=mine.append)(_flaky(2))()
        assert mine == [1.0, 1.0]
        assert clock.sleeps == []


def _flaky(n: int):  # type: ignore[no-untyped-def]
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= n:
            raise OSError
        return "ok"

    return fn


class TestFakeClock:
    """The fake clock only moves when waited on or advanced."""

    def test_start_and_monotonic(self) -> None:
        """It starts where asked and stands still."""
        c = FakeClock(start=5.0)
        assert c.monotonic() == 5.0
        assert c.monotonic() == 5.0

    def test_sleep_records(self) -> None:
        """sleep() records the wait and moves the clock."""
        c = FakeClock(0.0)
        c.sleep(1.5)
        c.sleep(0.5)
        assert (c.now, c.sleeps, c.total) == (2.0, [1.5, 0.5], 2.0)

    def test_advance_does_not_record(self) -> None:
        """advance() moves the clock without recording a wait."""
        c = FakeClock(0.0)
        c.advance(3.0)
        assert (c.now, c.sleeps) == (3.0, [])

    def test_repr(self) -> None:
        """repr shows the reading and the number of waits."""
        c = FakeClock(1.0)
        c.sleep(1.0)
        assert repr(c) == "FakeClock(now=2.0, sleeps=1)"

    @pytest.mark.anyio
    async def test_async_sleep_records_and_yields(self) -> None:
        """async_sleep records the wait and is a real checkpoint (cancellation is delivered there)."""
        c = FakeClock(0.0)
        after: list[str] = []
        with anyio.CancelScope() as scope:
            scope.cancel()
            await c.async_sleep(2.0)
            after.append("not reached")
        assert scope.cancelled_caught
        assert after == []
        assert c.sleeps == [2.0]
        assert c.now == 2.0

    @pytest.mark.anyio
    async def test_async_retry_under_no_waits(self) -> None:
        """Async retries under no_waits record their waits too."""
        calls = []

        @retry(backoff=Constant(7.0))
        async def f() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise OSError
            return "ok"

        with no_waits() as clock:
            assert await f() == "ok"
        assert clock.sleeps == [7.0, 7.0]
