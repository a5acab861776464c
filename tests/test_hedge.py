"""Tests of resile.hedge: hedged async calls under asyncio and trio."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from _examples import assert_page_shows, run_example
from resile import RetryBudget, hedge
from resile.testing import FakeClock


async def checkpoints(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


class TestValidation:
    def test_negative_delay_is_rejected(self) -> None:
        """delay=-1 is refused, naming the field."""
        with pytest.raises(ValueError, match=r"hedge: delay must be a finite number >= 0, got -1"):
            hedge(delay=-1)

    def test_max_attempts_below_one_is_rejected(self) -> None:
        """max_attempts=0 is refused."""
        with pytest.raises(ValueError, match="max_attempts must be an int >= 1, got 0"):
            hedge(delay=1, max_attempts=0)

    def test_on_must_be_exception_types(self) -> None:
        """on='ConnectionError' (a string) is refused."""
        with pytest.raises(TypeError, match="on must be an exception type"):
            hedge(delay=1, on="ConnectionError")  # type: ignore[arg-type]

    def test_budget_needs_the_protocol(self) -> None:
        """A budget without can_retry/record_* is refused."""
        with pytest.raises(TypeError, match="budget must be"):
            hedge(delay=1, budget=object())  # type: ignore[arg-type]

    def test_sync_function_is_rejected(self) -> None:
        """Hedging a sync function is refused: only coroutines can race."""
        with pytest.raises(TypeError, match="not an async function"):
            hedge(delay=1)(lambda: None)  # type: ignore[arg-type, return-value]

    def test_metadata_is_kept(self) -> None:
        """The wrapper keeps the function's name and docstring."""

        @hedge(delay=1)
        async def fetch() -> int:
            """Fetch."""
            return 1

        assert fetch.__name__ == "fetch"
        assert fetch.__doc__ == "Fetch."


class TestRace:
    @pytest.mark.anyio
    async def test_second_copy_wins_and_first_is_canceled(self, clock: FakeClock) -> None:
        """The first copy hangs; after the delay a second copy answers; the first is canceled."""
        never = anyio.Event()
        started: list[int] = []
        canceled: list[int] = []

        @hedge(delay=0.5, max_attempts=2)
        async def fetch() -> str:
            n = len(started) + 1
            started.append(n)
            if n == 1:
                try:
                    await never.wait()
                finally:
                    canceled.append(n)
            return f"copy {n}"

        assert await fetch() == "copy 2"
        assert started == [1, 2]
        assert canceled == [1]
        assert clock.sleeps == [0.5]

    @pytest.mark.anyio
    async def test_a_fast_answer_starts_no_hedge(self) -> None:
        """A first copy that answers before the delay is the only copy."""
        calls: list[int] = []

        @hedge(delay=30, max_attempts=3)
        async def fetch() -> str:
            calls.append(1)
            return "fast"

        with anyio.fail_after(5):
            assert await fetch() == "fast"
        assert calls == [1]

    @pytest.mark.anyio
    async def test_first_success_wins_over_a_later_copy(self, clock: FakeClock) -> None:
        """Two copies run; the one that answers first is returned and the other canceled."""
        started: list[int] = []
        canceled: list[int] = []

        @hedge(delay=0.1, max_attempts=2)
        async def fetch() -> int:
            n = len(started) + 1
            started.append(n)
            try:
                await checkpoints(20 if n == 1 else 1000)
            except BaseException:
                canceled.append(n)
                raise
            return n

        assert await fetch() == 1
        assert started == [1, 2]
        assert canceled == [2]

    @pytest.mark.anyio
    async def test_max_attempts_one_never_hedges(self, clock: FakeClock) -> None:
        """With max_attempts=1 a slow call is never copied."""
        calls: list[int] = []

        @hedge(delay=0.1, max_attempts=1)
        async def fetch() -> str:
            calls.append(1)
            await checkpoints(20)
            return "only"

        assert await fetch() == "only"
        assert calls == [1]
        assert clock.sleeps == []

    @pytest.mark.anyio
    async def test_non_fatal_failure_starts_the_next_copy_at_once(self) -> None:
        """A copy failing with an `on` error starts the next one without waiting for the delay."""
        calls: list[int] = []

        @hedge(delay=60, max_attempts=2, on=ConnectionError)
        async def fetch() -> str:
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("reset")
            return "second"

        with anyio.fail_after(5):
            assert await fetch() == "second"
        assert calls == [1, 1]

    @pytest.mark.anyio
    async def test_fatal_error_cancels_the_others(self) -> None:
        """An error outside `on` is raised at once and the running copies are canceled."""
        never = anyio.Event()
        started: list[int] = []
        canceled: list[int] = []

        @hedge(delay=0, max_attempts=2, on=ConnectionError)
        async def fetch() -> None:
            n = len(started) + 1
            started.append(n)
            if n == 2:
                raise ValueError("bad request")
            try:
                await never.wait()
            finally:
                canceled.append(n)

        with anyio.fail_after(5), pytest.raises(ValueError, match="bad request"):
            await fetch()
        assert canceled == [1]

    @pytest.mark.anyio
    async def test_all_copies_fail_raises_the_last(self, clock: FakeClock) -> None:
        """When every copy fails with a non-fatal error, the last failure is raised with a note."""
        calls: list[int] = []

        @hedge(delay=1, max_attempts=3)
        async def fetch() -> None:
            calls.append(1)
            raise ConnectionError(f"copy {len(calls)}")

        with pytest.raises(ConnectionError, match="copy 3") as info:
            await fetch()
        assert len(calls) == 3
        assert any("all 3 copies failed" in n for n in getattr(info.value, "__notes__", []))

    @pytest.mark.anyio
    async def test_drained_budget_stops_hedging(self, clock: FakeClock) -> None:
        """With a drained RetryBudget, no hedged copy is started."""
        budget = RetryBudget(max_tokens=2, token_ratio=0.1)
        budget.record_failure()
        budget.record_failure()
        calls: list[int] = []

        @hedge(delay=0.1, max_attempts=3, budget=budget)
        async def fetch() -> str:
            calls.append(1)
            await checkpoints(20)
            return "alone"

        assert await fetch() == "alone"
        assert calls == [1]
        assert budget.tokens == pytest.approx(0.1)

    @pytest.mark.anyio
    async def test_caller_cancellation_cancels_every_copy(self, clock: FakeClock) -> None:
        """Cancelling the caller cancels all copies and waits for their clean-up before it returns."""
        never = anyio.Event()
        both_running = anyio.Event()
        started: list[int] = []
        canceled: list[int] = []

        @hedge(delay=0.1, max_attempts=2)
        async def fetch() -> None:
            n = len(started) + 1
            started.append(n)
            if n == 2:
                both_running.set()
            try:
                await never.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await checkpoints(5)  # an async clean-up takes a few loop turns
                canceled.append(n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            with anyio.fail_after(5):
                await both_running.wait()
            tg.cancel_scope.cancel()
        assert sorted(canceled) == [1, 2]

    @pytest.mark.anyio
    async def test_real_delay_is_respected(self) -> None:
        """On the real clock, the second copy starts no earlier than `delay` after the first."""
        never = anyio.Event()
        starts: list[float] = []

        @hedge(delay=0.05, max_attempts=2)
        async def fetch() -> int:
            starts.append(time.monotonic())
            if len(starts) == 1:
                await never.wait()
            return len(starts)

        with anyio.fail_after(5):
            assert await fetch() == 2
        assert starts[1] - starts[0] >= 0.04


class TestExample:
    def test_hedge_example(self) -> None:
        """docs/examples/hedge.py: the second copy answers fast and the stuck one is canceled."""
        out = run_example("hedge.py")
        assert "user 42 (answered by copy 2)" in out
        assert "copies started: [1, 2]; canceled: [1]" in out
        assert "fast: True" in out

    def test_page_carries_the_example(self) -> None:
        """docs/hedge.md names the example and shows its code."""
        assert_page_shows("hedge.md", "hedge.py")
