"""Deadlines in a contextvar: nesting, remaining(), check(), async cancellation."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _examples import load_example
from resile import DeadlineExceeded, check, current_deadline, deadline, remaining
from resile.testing import no_waits

# Real-time cancellation tests use this short bound while awaiting an event that never fires.
SHORT = 0.05


class TestSyncDeadline:
    """with deadline(s): sets an absolute instant visible to everything called inside."""

    def test_sets_and_restores(self) -> None:
        """The deadline is set inside the block and gone after it."""
        with no_waits() as clock:
            assert current_deadline() is None
            with deadline(2.0) as d:
                assert current_deadline() == clock.now + 2.0
                assert d.when == clock.now + 2.0
            assert current_deadline() is None

    def test_restored_after_exception(self) -> None:
        """An exception leaving the block still restores the previous deadline."""
        with no_waits(), pytest.raises(KeyError), deadline(2.0):
            raise KeyError
        assert current_deadline() is None

    def test_remaining(self) -> None:
        """remaining() is the time left, shrinking as the clock moves, never negative."""
        with no_waits() as clock:
            assert remaining() is None
            with deadline(3.0) as d:
                assert remaining() == 3.0
                clock.advance(1.0)
                assert remaining() == 2.0
                assert d.remaining == 2.0
                clock.advance(5.0)
                assert remaining() == 0.0
                assert d.expired

    def test_check(self) -> None:
        """check() passes before the deadline and raises DeadlineExceeded (a TimeoutError) at it."""
        with no_waits() as clock:
            check()  # no deadline: nothing to do
            with deadline(1.0):
                check()
                clock.advance(1.0)
                with pytest.raises(DeadlineExceeded) as info:
                    check()
        assert isinstance(info.value, TimeoutError)

    def test_inner_earlier_wins(self) -> None:
        """A nested, shorter deadline tightens the limit and the outer one returns after it."""
        with no_waits() as clock, deadline(10.0):
            with deadline(2.0):
                assert current_deadline() == clock.now + 2.0
            assert current_deadline() == clock.now + 10.0

    def test_inner_later_cannot_extend(self) -> None:
        """A nested, longer deadline keeps the outer, earlier one."""
        with no_waits() as clock, deadline(2.0), deadline(10.0) as inner:
            assert current_deadline() == clock.now + 2.0
            assert inner.when == clock.now + 2.0
            assert remaining() == 2.0

    def test_none_keeps_the_enclosing(self) -> None:
        """deadline(None) adds no limit of its own."""
        with no_waits() as clock:
            with deadline(None) as d:
                assert current_deadline() is None
                assert d.remaining is None
                assert not d.expired
            with deadline(4.0), deadline(None):
                assert current_deadline() == clock.now + 4.0

    def test_at_absolute_instant(self) -> None:
        """at= sets an absolute instant on resile's monotonic clock."""
        with no_waits() as clock, deadline(at=clock.now + 7.5):
            assert remaining() == 7.5

    def test_timedelta(self) -> None:
        """A timedelta is accepted."""
        with no_waits() as clock, deadline(timedelta(milliseconds=250)):
            assert current_deadline() == clock.now + 0.25

    def test_zero(self) -> None:
        """deadline(0) has already passed."""
        with no_waits(), deadline(0), pytest.raises(DeadlineExceeded):
            check()

    def test_repr(self) -> None:
        """repr shows the seconds and the instant."""
        assert repr(deadline(1.5)) == "deadline(seconds=1.5, when=None)"

    @pytest.mark.parametrize(
        ("kwargs", "exc", "needle"),
        [
            ({"seconds": -1}, ValueError, "seconds.*-1"),
            ({"seconds": math.nan}, ValueError, "seconds.*nan"),
            ({"seconds": math.inf}, ValueError, "seconds.*inf"),
            ({"seconds": 1, "at": 5.0}, ValueError, "not both"),
            ({"at": math.nan}, ValueError, "at.*nan"),
            ({"at": True}, ValueError, "at.*True"),
            ({"seconds": "1"}, TypeError, "seconds"),
        ],
    )
    def test_bad_values(self, kwargs: dict[str, Any], exc: type[Exception], needle: str) -> None:
        """Bad values raise, naming the field and the value."""
        with pytest.raises(exc, match=needle):
            deadline(**kwargs)


async def _forever() -> None:
    await anyio.Event().wait()


@pytest.mark.anyio
class TestAsyncDeadline:
    """async with deadline(s): cancels the block under asyncio and trio."""

    async def test_cancels_with_deadline_exceeded(self) -> None:
        """A block still running at the deadline is canceled and raises DeadlineExceeded."""
        with pytest.raises(DeadlineExceeded) as info:
            async with deadline(SHORT):
                await _forever()
        assert isinstance(info.value, TimeoutError)
        assert current_deadline() is None

    async def test_finishing_in_time(self) -> None:
        """A block that finishes in time is left alone and sees the deadline."""
        async with deadline(60.0) as d:
            await anyio.lowlevel.checkpoint()
            assert current_deadline() == d.when
            left = remaining()
            assert left is not None and 0 < left <= 60.0
        assert current_deadline() is None

    async def test_inner_shorter_fires(self) -> None:
        """A nested, shorter deadline cancels only its own block; the outer block goes on."""
        async with deadline(60.0) as outer:
            with pytest.raises(DeadlineExceeded):
                async with deadline(SHORT):
                    await _forever()
            assert current_deadline() == outer.when
            await anyio.lowlevel.checkpoint()

    async def test_outer_shorter_fires_through_a_longer_inner(self) -> None:
        """An inner, longer deadline cannot extend the outer: the outer one cancels both."""
        with pytest.raises(DeadlineExceeded):
            async with deadline(SHORT), deadline(60.0) as inner:
                assert inner.when == current_deadline()
                await _forever()

    async def test_already_expired(self) -> None:
        """deadline(0) cancels at the first checkpoint."""
        with pytest.raises(DeadlineExceeded):
            async with deadline(0):
                await anyio.sleep(1)

    async def test_own_timeout_error_passes_through(self) -> None:
        """A TimeoutError raised by the block itself is not mistaken for the deadline."""
        with pytest.raises(TimeoutError) as info:
            async with deadline(60.0):
                raise TimeoutError("mine")
        assert not isinstance(info.value, DeadlineExceeded)
        assert str(info.value) == "mine"

    async def test_other_errors_pass_through(self) -> None:
        """Other exceptions leave the block unchanged."""
        with pytest.raises(KeyError):
            async with deadline(60.0):
                raise KeyError("k")
        assert current_deadline() is None

    async def test_none(self) -> None:
        """async with deadline(None) sets no limit."""
        async with deadline(None):
            assert current_deadline() is None
            await anyio.lowlevel.checkpoint()

    async def test_check_inside_async(self) -> None:
        """check() works in async code under the fake clock."""
        with no_waits() as clock:
            async with deadline(5.0):
                check()
                clock.advance(5.0)
                with pytest.raises(DeadlineExceeded):
                    check()


@pytest.mark.anyio
async def test_docs_example(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/examples/deadline_budget.py runs under asyncio and trio and prints what the docs say."""
    example = load_example("deadline_budget.py")
    await example["main"]()
    out = capsys.readouterr().out
    assert "query 'select 1' with a timeout of 0.50 s" in out
    assert "handler -> rows" in out
    assert "callee sees 2.00 s left" in out
    assert "canceled: deadline exceeded" in out
    assert "a TimeoutError: True" in out
