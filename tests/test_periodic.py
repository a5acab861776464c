"""Tests of resile.periodic: repeat_every, Periodic and the ASGI lifespan helper."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked
from fastapi import FastAPI

import resile
import resile.periodic
from _examples import DOCS, EXAMPLES, run_example
from resile.backoff import Constant, Linear
from resile.periodic import Periodic, PeriodicStatistics, RepeatedFunction, repeat_every
from resile.testing import FakeClock, no_waits

EXAMPLE = EXAMPLES / "periodic_fastapi.py"
BOUND = 10.0  # seconds: the most any real wait in these tests may take


class Boom(Exception):
    """The failure the tests' functions raise."""


def recorder(clock: FakeClock, durations: list[float] | None = None) -> tuple[Any, list[float]]:
    """A sync function that records its start times and takes ``durations[i]`` fake seconds."""
    starts: list[float] = []

    def fn() -> None:
        starts.append(clock.monotonic())
        if durations:
            clock.advance(durations[(len(starts) - 1) % len(durations)])

    return fn, starts


@asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Drive an ASGI app's lifespan protocol as a server does; yield the lifespan state."""
    state: dict[str, Any] = {}
    to_app_send, to_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    from_app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    async with to_app_send, to_app, from_app_send, from_app, anyio.create_task_group() as tg:
        tg.start_soon(app, scope, to_app.receive, from_app_send.send)
        await to_app_send.send({"type": "lifespan.startup"})
        message = await from_app.receive()
        assert message["type"] == "lifespan.startup.complete", message
        yield state
        await to_app_send.send({"type": "lifespan.shutdown"})
        message = await from_app.receive()
        assert message["type"] == "lifespan.shutdown.complete", message


class TestValidation:
    @pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), timedelta(0)])
    def test_seconds_must_be_positive(self, bad: Any) -> None:
        """A zero, negative, NaN or infinite interval is refused, naming the field."""
        with pytest.raises(ValueError, match="seconds"):
            repeat_every(seconds=bad)

    @pytest.mark.parametrize("bad", ["5", None, True])
    def test_seconds_must_be_a_number(self, bad: Any) -> None:
        """An interval that is not a number or timedelta is a TypeError naming it."""
        with pytest.raises(TypeError, match="seconds"):
            repeat_every(seconds=bad)

    def test_timedelta_interval(self) -> None:
        """A timedelta interval is accepted and converted to seconds."""
        assert Periodic(lambda: None, timedelta(minutes=2)).interval == 120.0

    @pytest.mark.parametrize("bad", [0, -3, 1.5, True])
    def test_max_repetitions(self, bad: Any) -> None:
        """max_repetitions must be an int >= 1; the message shows the value."""
        with pytest.raises(ValueError, match=f"max_repetitions.*{bad!r}"):
            repeat_every(seconds=1, max_repetitions=bad)

    def test_other_fields(self) -> None:
        """Each bad argument is named in the error."""
        with pytest.raises(TypeError, match="on_exception"):
            repeat_every(seconds=1, on_exception=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="backoff"):
            repeat_every(seconds=1, backoff=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="jitter"):
            repeat_every(seconds=1, jitter=-0.5)
        with pytest.raises(ValueError, match="wait_first"):
            repeat_every(seconds=1, wait_first=-2)
        with pytest.raises(TypeError, match="logger"):
            repeat_every(seconds=1, logger="resile")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="function to repeat"):
            Periodic(42, 1)  # type: ignore[arg-type]

    def test_exports(self) -> None:
        """The package root re-exports repeat_every and Periodic."""
        assert resile.repeat_every is repeat_every
        assert resile.Periodic is Periodic
        assert {"repeat_every", "Periodic"} <= set(resile.__all__)
        for name in resile.periodic.__all__:
            assert hasattr(resile.periodic, name)


class TestSchedule:
    def test_runs_are_due_on_the_grid(self) -> None:
        """Run n starts exactly at start + n * interval, whatever each run took."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [0.3, 0.0, 0.95, 0.5])
            Periodic(fn, 1.0, max_repetitions=8).run()
        assert starts == [1000.0 + n for n in range(8)]

    def test_no_drift_with_fractional_interval(self) -> None:
        """Over many runs the start times stay on the grid: waits are computed, not summed."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [0.013, 0.041, 0.007])
            Periodic(fn, 0.1, max_repetitions=2000).run()
        assert starts[-1] == pytest.approx(1000.0 + 1999 * 0.1, abs=1e-9)
        assert all(s == pytest.approx(1000.0 + n * 0.1, abs=1e-9) for n, s in enumerate(starts))

    def test_wait_first_true_waits_one_interval(self) -> None:
        """wait_first=True makes the first run due one interval after the start."""
        with no_waits() as clock:
            fn, starts = recorder(clock)
            Periodic(fn, 2.0, wait_first=True, max_repetitions=3).run()
        assert starts == [1002.0, 1004.0, 1006.0]

    def test_wait_first_seconds(self) -> None:
        """wait_first as seconds delays the first run; the grid is anchored there."""
        with no_waits() as clock:
            fn, starts = recorder(clock)
            Periodic(fn, 2.0, wait_first=timedelta(seconds=0.5), max_repetitions=3).run()
        assert starts == [1000.5, 1002.5, 1004.5]

    def test_wait_first_false_runs_at_once(self) -> None:
        """By default the first run happens at the start, with no wait before it."""
        with no_waits() as clock:
            fn, starts = recorder(clock)
            Periodic(fn, 5.0, max_repetitions=1).run()
        assert starts == [1000.0]
        assert clock.sleeps == []

    def test_overshoot_skips_to_the_next_grid_point(self) -> None:
        """A run longer than the interval delays the next to the next grid point; none is doubled."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [2.5, 0.1, 0.1])
            p = Periodic(fn, 1.0, max_repetitions=3)
            p.run()
        assert starts == [1000.0, 1003.0, 1004.0]
        assert p.statistics.skipped == 2

    def test_run_ending_on_a_grid_point_is_followed_at_once(self) -> None:
        """A run that ends exactly on a grid point is followed by a run at that point."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [2.0, 0.0])
            p = Periodic(fn, 1.0, max_repetitions=2)
            p.run()
        assert starts == [1000.0, 1002.0]
        assert p.statistics.skipped == 1

    def test_jitter_stays_within_bounds_and_does_not_accumulate(self) -> None:
        """Each run starts within [grid point, grid point + jitter]."""
        with no_waits() as clock:
            fn, starts = recorder(clock)
            Periodic(fn, 10.0, jitter=2.0, seed=7, max_repetitions=50).run()
        offsets = [s - (1000.0 + 10.0 * n) for n, s in enumerate(starts)]
        assert all(0.0 <= o <= 2.0 for o in offsets)
        assert len({round(o, 6) for o in offsets}) > 10  # it is random

    def test_seeded_jitter_is_reproducible(self) -> None:
        """Two loops with the same seed keep the same schedule."""
        runs = []
        for _ in range(2):
            with no_waits() as clock:
                fn, starts = recorder(clock)
                Periodic(fn, 1.0, jitter=0.5, seed=3, max_repetitions=5).run()
            runs.append(starts)
        assert runs[0] == runs[1]


class TestNoOverlap:
    @pytest.mark.anyio
    async def test_async_runs_never_overlap(self) -> None:
        """A run longer than the interval is never joined by a second one."""
        active = 0
        most = 0
        starts: list[float] = []
        ends: list[float] = []
        with no_waits() as clock:

            async def slow() -> None:
                nonlocal active, most
                active += 1
                most = max(most, active)
                starts.append(clock.monotonic())
                for _ in range(5):  # give a second run every chance to sneak in
                    clock.advance(0.7)
                    await anyio.lowlevel.checkpoint()
                ends.append(clock.monotonic())
                active -= 1

            p = Periodic(slow, 1.0, max_repetitions=4).start()
            with anyio.fail_after(BOUND):
                await p.wait()
        assert most == 1
        assert all(start >= end for start, end in zip(starts[1:], ends, strict=False))
        assert starts == [1000.0, 1004.0, 1008.0, 1012.0]

    def test_thread_runs_never_overlap(self) -> None:
        """The thread colour also runs one call at a time, on the grid after an overshoot."""
        active = 0
        most = 0
        with no_waits() as clock:
            starts: list[float] = []

            def slow() -> None:
                nonlocal active, most
                active += 1
                most = max(most, active)
                starts.append(clock.monotonic())
                clock.advance(1.5)
                active -= 1

            p = Periodic(slow, 1.0, max_repetitions=3).start()
            p.wait()
        assert most == 1
        assert starts == [1000.0, 1002.0, 1004.0]


class TestExceptions:
    def test_exceptions_do_not_end_the_loop(self) -> None:
        """Every run may fail; the loop keeps its schedule and on_exception sees each error."""
        seen: list[BaseException] = []
        with no_waits() as clock:
            fn, starts = recorder(clock)

            def failing() -> None:
                fn()
                raise Boom(len(starts))

            p = Periodic(failing, 1.0, max_repetitions=4, on_exception=seen.append)
            p.run()
        assert starts == [1000.0, 1001.0, 1002.0, 1003.0]
        assert [e.args[0] for e in seen] == [1, 2, 3, 4]
        assert p.statistics.failures == 4

    def test_async_on_exception_in_the_thread_colour(self) -> None:
        """An async on_exception is run to completion by the thread colour."""
        seen: list[str] = []

        async def handler(exc: Exception) -> None:
            await asyncio.sleep(0)
            seen.append(str(exc))

        def fail() -> None:
            raise Boom("x")

        with no_waits():
            Periodic(fail, 1.0, max_repetitions=2, on_exception=handler).run()
        assert seen == ["x", "x"]

    @pytest.mark.anyio
    @pytest.mark.parametrize("handler_kind", ["sync", "async"])
    async def test_on_exception_in_the_async_colour(self, handler_kind: str) -> None:
        """Sync and async on_exception handlers are called for each failure under asyncio and trio."""
        seen: list[str] = []

        def sync_handler(exc: Exception) -> None:
            seen.append(str(exc))

        async def async_handler(exc: Exception) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(str(exc))

        handler = sync_handler if handler_kind == "sync" else async_handler
        calls = 0

        async def sometimes() -> None:
            nonlocal calls
            calls += 1
            if calls % 2:
                raise Boom(f"run {calls}")

        with no_waits():
            p = Periodic(sometimes, 1.0, max_repetitions=5, on_exception=handler).start()
            with anyio.fail_after(BOUND):
                await p.wait()
        assert seen == ["run 1", "run 3", "run 5"]
        assert (p.statistics.runs, p.statistics.failures) == (5, 3)

    def test_failures_are_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """Each failure is logged at ERROR with its traceback, on the "resile" logger by default."""

        def fail() -> None:
            raise Boom("disk full")

        with no_waits(), caplog.at_level(logging.ERROR, logger="resile"):
            Periodic(fail, 1.0, max_repetitions=2, name="cleanup").run()
        records = [r for r in caplog.records if r.name == "resile"]
        assert len(records) == 2
        assert "cleanup" in records[0].getMessage() and "disk full" in records[0].getMessage()
        assert records[0].exc_info is not None and records[0].exc_info[0] is Boom

    def test_custom_logger(self, caplog: pytest.LogCaptureFixture) -> None:
        """A logger passed in receives the failures instead of the "resile" logger."""
        mine = logging.getLogger("eos.tasks")

        def fail() -> None:
            raise Boom("x")

        with no_waits(), caplog.at_level(logging.ERROR):
            Periodic(fail, 1.0, max_repetitions=1, logger=mine).run()
        assert [r.name for r in caplog.records] == ["eos.tasks"]

    def test_a_failing_handler_is_logged_and_ignored(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An error inside on_exception does not end the loop."""

        def bad_handler(exc: Exception) -> None:
            raise RuntimeError("handler bug")

        def fail() -> None:
            raise Boom("x")

        with no_waits(), caplog.at_level(logging.ERROR, logger="resile"):
            p = Periodic(fail, 1.0, max_repetitions=3, on_exception=bad_handler)
            p.run()
        assert p.statistics.runs == 3
        assert sum("on_exception" in r.getMessage() for r in caplog.records) == 3


class TestMaxRepetitions:
    def test_loop_ends_after_max_repetitions(self) -> None:
        """The loop ends on its own after max_repetitions runs, failed runs included."""
        calls = 0

        def sometimes() -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise Boom

        with no_waits():
            p = Periodic(sometimes, 1.0, max_repetitions=3).start()
            p.wait()
        assert calls == 3
        assert not p.running
        assert p.statistics.next_run_at is None

    @pytest.mark.anyio
    async def test_async_wait_returns_after_max_repetitions(self) -> None:
        """await wait() returns once the async loop has made its runs."""
        with no_waits():
            p = Periodic(lambda: None, 3.0, max_repetitions=2).start()
            with anyio.fail_after(BOUND):
                await p.wait()
        assert p.statistics.runs == 2 and not p.running


class TestRaiseExceptions:
    def test_first_error_ends_the_loop_and_is_reraised(self) -> None:
        """raise_exceptions=True ends the loop at the first failure; wait() and stop() re-raise it."""
        seen: list[BaseException] = []
        calls = 0

        def second_fails() -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise Boom("fatal")

        with no_waits():
            p = Periodic(second_fails, 1.0, raise_exceptions=True, on_exception=seen.append)
            p.start()
            with pytest.raises(Boom, match="fatal"):
                p.wait()
            with pytest.raises(Boom, match="fatal"):
                p.stop()
        assert calls == 2
        assert len(seen) == 1  # on_exception ran before the loop ended
        assert not p.running and isinstance(p.error, Boom)

    @pytest.mark.anyio
    async def test_run_raises_in_a_task_group(self) -> None:
        """await run() re-raises the error that ended the loop."""

        async def fail() -> None:
            raise Boom("in task group")

        with no_waits(), anyio.fail_after(BOUND):
            p = Periodic(fail, 1.0, raise_exceptions=True)
            with pytest.raises(Boom):
                await p.run_async()
            with pytest.raises(Boom):
                await p.stop()
        assert p.statistics.runs == 1

    def test_without_raise_exceptions_nothing_is_raised(self) -> None:
        """By default wait() returns normally even though runs failed."""

        def fail() -> None:
            raise Boom

        with no_waits():
            p = Periodic(fail, 1.0, max_repetitions=2).start()
            p.wait()
        assert p.error is None and p.statistics.failures == 2


class TestFailureBackoff:
    def test_backoff_replaces_the_interval_after_failures(self) -> None:
        """After k consecutive failures the next run waits backoff.delay(k) from the failed run's end."""
        outcomes = [False, False, False, True, True, False, True]
        with no_waits() as clock:
            fn, starts = recorder(clock)

            def flaky() -> None:
                fn()
                if not outcomes[len(starts) - 1]:
                    raise Boom

            p = Periodic(flaky, 10.0, backoff=Linear(1.0, 1.0), max_repetitions=len(outcomes))
            p.run()
        # fail@1000 -> +1, fail@1001 -> +2, fail@1003 -> +3, ok@1006 -> grid 1010,
        # ok@1010 -> 1020, fail@1020 -> +1 (the success reset the count), ok@1021 -> 1030
        assert starts == [1000.0, 1001.0, 1003.0, 1006.0, 1010.0, 1020.0, 1021.0]
        assert p.statistics.consecutive_failures == 0

    def test_backoff_counts_from_the_end_of_the_failed_run(self) -> None:
        """The backoff delay is measured from when the failed run ended."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [0.5])

            def fail() -> None:
                fn()
                raise Boom

            Periodic(fail, 60.0, backoff=Constant(2.0), max_repetitions=3).run()
        assert starts == [1000.0, 1002.5, 1005.0]

    def test_without_backoff_a_failure_keeps_the_grid(self) -> None:
        """With no backoff, a failed run is followed at the next grid point."""
        with no_waits() as clock:
            fn, starts = recorder(clock)

            def fail() -> None:
                fn()
                raise Boom

            Periodic(fail, 4.0, max_repetitions=3).run()
        assert starts == [1000.0, 1004.0, 1008.0]


class TestStop:
    @pytest.mark.anyio
    async def test_stop_waits_for_the_running_call(self) -> None:
        """await stop() returns only after the call in progress has finished; it is not canceled."""
        entered = anyio.Event()
        release = anyio.Event()
        finished: list[bool] = []

        async def slow() -> None:
            entered.set()
            await release.wait()
            finished.append(True)

        p = Periodic(slow, 3600.0).start()
        stopped = False

        async def stopper() -> None:
            nonlocal stopped
            await p.stop()
            stopped = True

        with anyio.fail_after(BOUND):
            await entered.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stopper)
                await wait_all_tasks_blocked()
                assert not stopped and p.running
                release.set()
        assert stopped and finished == [True]
        assert not p.running and p.statistics.runs == 1

    @pytest.mark.anyio
    async def test_stop_cuts_a_long_wait_short(self) -> None:
        """A loop waiting for an hour stops at once (real clock)."""
        ran = anyio.Event()

        async def tick() -> None:
            ran.set()

        p = Periodic(tick, 3600.0).start()
        with anyio.fail_after(BOUND):
            await ran.wait()
            await wait_all_tasks_blocked()
            assert p.running and p.statistics.next_run_at is not None
            await p.stop()
        assert not p.running and p.statistics.runs == 1

    def test_thread_stop_waits_for_the_running_call(self) -> None:
        """The thread colour's stop() blocks until the call in progress returns."""
        entered = threading.Event()
        release = threading.Event()
        finished: list[bool] = []

        def slow() -> None:
            entered.set()
            release.wait(BOUND)
            finished.append(True)

        p = Periodic(slow, 3600.0).start()
        assert entered.wait(BOUND)
        stopper = threading.Thread(target=p.stop)
        stopper.start()
        stopper.join(0.05)  # a bounded look: stop() must still be blocked
        assert stopper.is_alive() and finished == []
        release.set()
        stopper.join(BOUND)
        assert not stopper.is_alive() and finished == [True] and not p.running

    def test_stop_from_inside_the_function(self) -> None:
        """A run may stop its own loop (thread colour) without deadlocking."""
        holder: list[Periodic] = []

        def stop_myself() -> None:
            holder[0].stop()

        with no_waits():
            p = Periodic(stop_myself, 1.0)
            holder.append(p)
            p.start().wait()
        assert p.statistics.runs == 1 and not p.running

    @pytest.mark.anyio
    async def test_async_stop_from_inside_the_function(self) -> None:
        """An async run may await its own loop's stop() without deadlocking."""
        holder: list[Periodic] = []

        async def stop_myself() -> None:
            await holder[0].stop()

        with no_waits(), anyio.fail_after(BOUND):
            p = Periodic(stop_myself, 1.0)
            holder.append(p)
            await p.start().wait()
        assert p.statistics.runs == 1 and not p.running

    def test_stop_before_start_does_nothing(self) -> None:
        """Stopping a loop that never started returns at once."""
        p = Periodic(lambda: None, 1.0)
        p.stop()
        assert not p.running and p.statistics.runs == 0

    def test_start_twice_is_refused_and_restart_after_stop_works(self) -> None:
        """A running loop cannot be started again; a stopped one can, and statistics add up."""
        ran = threading.Semaphore(0)
        p = Periodic(ran.release, 3600.0)
        p.start()
        try:
            with pytest.raises(RuntimeError, match="already running"):
                p.start()
            assert ran.acquire(timeout=BOUND)
        finally:
            p.stop()
        p.start()
        assert ran.acquire(timeout=BOUND)
        p.stop()
        assert p.statistics.runs == 2 and not p.running


class TestStatistics:
    def test_statistics_of_runs(self) -> None:
        """runs, failures, last_duration, last_error and last_started_at describe what happened."""
        with no_waits() as clock:
            calls = 0

            def work() -> None:
                nonlocal calls
                calls += 1
                clock.advance(0.25 * calls)
                if calls == 2:
                    raise Boom("second")

            p = Periodic(work, 5.0, max_repetitions=3)
            assert p.statistics.last_duration is None and p.statistics.last_started_at is None
            p.run()
        s = p.statistics
        assert (s.runs, s.failures, s.consecutive_failures) == (3, 1, 0)
        assert s.last_duration == 0.75
        assert isinstance(s.last_error, Boom) and str(s.last_error) == "second"
        assert s.last_started_at == 1010.0
        d = s.as_dict()
        assert d["runs"] == 3 and d["last_error"] == "Boom('second')"
        assert "runs=3" in repr(s) and "runs=3" in repr(p)

    def test_statistics_type(self) -> None:
        """Each Periodic has its own PeriodicStatistics."""
        a, b = Periodic(lambda: None, 1.0), Periodic(lambda: None, 1.0)
        assert isinstance(a.statistics, PeriodicStatistics)
        assert a.statistics is not b.statistics


class TestThreadColour:
    def test_sync_call_starts_a_daemon_thread(self) -> None:
        """Calling a decorated function from sync code starts a daemon thread and returns at once."""
        ran = threading.Event()

        @repeat_every(seconds=3600)
        def tick() -> None:
            ran.set()

        p = tick()
        try:
            assert ran.wait(BOUND)
            assert p._thread is not None and p._thread.daemon
            assert p._thread.name == "resile-periodic-" + tick.__qualname__
            assert p.running
        finally:
            p.stop()
        assert not p.running

    def test_async_function_in_the_thread_colour(self) -> None:
        """An async function runs on an event loop owned by the thread, the same loop every run."""
        loops: list[object] = []

        async def tick() -> None:
            loops.append(asyncio.get_running_loop())

        with no_waits():
            Periodic(tick, 1.0, max_repetitions=3).start().wait()
        assert len(loops) == 3 and len(set(map(id, loops))) == 1

    def test_context_manager(self) -> None:
        """with Periodic(...) starts the loop and stops it on exit."""
        ran = threading.Event()
        with Periodic(ran.set, 3600.0) as p:
            assert ran.wait(BOUND) and p.running
        assert not p.running


class TestAsyncColour:
    @pytest.mark.anyio
    async def test_await_call_returns_at_once(self) -> None:
        """await task() inside async code starts the loop in the background and returns the Periodic."""
        ran = anyio.Event()

        @repeat_every(seconds=3600)
        async def tick() -> None:
            ran.set()

        with anyio.fail_after(BOUND):
            p = await tick()
            assert isinstance(p, Periodic) and p.running
            assert p.statistics.runs == 0  # returned before the first run
            await ran.wait()
            await p.stop()
        assert not p.running

    @pytest.mark.anyio
    async def test_sync_function_runs_in_a_worker_thread(self) -> None:
        """A sync function is run off the event loop's thread, so it cannot block the loop."""
        threads: list[int] = []

        def tick() -> None:
            threads.append(threading.get_ident())

        with no_waits(), anyio.fail_after(BOUND):
            await Periodic(tick, 1.0, max_repetitions=2).start().wait()
        assert len(threads) == 2 and threading.get_ident() not in threads

    @pytest.mark.anyio
    async def test_run_in_a_task_group_and_async_with(self) -> None:
        """run() drives the loop in a task group's task; async with starts and stops."""
        calls: list[str] = []
        with no_waits(), anyio.fail_after(BOUND):
            p = Periodic(lambda: calls.append("tg"), 1.0, max_repetitions=3)
            async with anyio.create_task_group() as tg:
                tg.start_soon(p.run_async)
            async with Periodic(lambda: calls.append("cm"), 3600.0) as q:
                assert q.running
        assert calls.count("tg") == 3
        assert not q.running

    @pytest.mark.anyio
    async def test_stop_from_another_thread(self) -> None:
        """stop() called from a worker thread reaches the loop and cuts its wait short."""
        ran = anyio.Event()

        async def tick() -> None:
            ran.set()

        p = Periodic(tick, 3600.0).start()
        with anyio.fail_after(BOUND):
            await ran.wait()
            await anyio.to_thread.run_sync(p.stop)
            await p.wait()
        assert not p.running


class TestNames:
    """run is the sync colour (and, deprecated, the async one in a loop); run_async the async one."""

    def test_run_blocks_without_a_loop(self) -> None:
        """With no event loop, run() runs the loop in the calling thread until it ends."""
        with no_waits() as clock:
            fn, starts = recorder(clock, [0.0])
            assert Periodic(fn, 1.0, max_repetitions=3).run() is None
        assert starts == [1000.0, 1001.0, 1002.0]

    def test_run_sync_is_deprecated(self) -> None:
        """run_sync() warns and still runs the loop in the calling thread."""
        with no_waits() as clock, pytest.warns(DeprecationWarning, match="run_sync"):
            fn, starts = recorder(clock, [0.0])
            Periodic(fn, 1.0, max_repetitions=2).run_sync()
        assert starts == [1000.0, 1001.0]

    @pytest.mark.anyio
    async def test_run_async(self) -> None:
        """await run_async() drives the loop in the current task."""
        calls: list[int] = []
        with no_waits(), anyio.fail_after(BOUND):
            await Periodic(lambda: calls.append(1), 1.0, max_repetitions=3).run_async()
        assert calls == [1, 1, 1]

    @pytest.mark.anyio
    async def test_run_in_a_loop_is_deprecated(self) -> None:
        """run() inside asyncio or trio warns and returns run_async()'s awaitable."""
        calls: list[int] = []
        with no_waits(), anyio.fail_after(BOUND):
            p = Periodic(lambda: calls.append(1), 1.0, max_repetitions=2)
            with pytest.warns(DeprecationWarning, match="run_async"):
                pending = p.run()
            await pending
        assert calls == [1, 1]


class TestDecorator:
    def test_keeps_the_function(self) -> None:
        """The decorated object keeps the name, the docstring and the original function."""

        def cache_cleanup_task() -> None:
            """Clear the cache."""

        task = repeat_every(seconds=60)(cache_cleanup_task)
        assert isinstance(task, RepeatedFunction)
        assert task.__name__ == "cache_cleanup_task"
        assert task.__doc__ == "Clear the cache."
        assert task.__wrapped__ is cache_cleanup_task
        assert "cache_cleanup_task" in repr(task)

    def test_arguments_are_bound_to_each_loop(self) -> None:
        """Arguments of the call are passed to every run; periodic() builds an unstarted loop."""
        seen: list[tuple[str, int]] = []

        @repeat_every(seconds=1, max_repetitions=2)
        def tick(name: str, n: int = 0) -> None:
            seen.append((name, n))

        p = tick.periodic("a", n=1)
        assert not p.running and p.name.endswith("tick")
        with no_waits():
            p.start().wait()
        assert seen == [("a", 1), ("a", 1)]


class TestLifespan:
    @pytest.mark.anyio
    async def test_fastapi_app_runs_and_stops_tasks(self) -> None:
        """A real FastAPI app started through its ASGI lifespan runs the task and stops it cleanly."""
        ran = anyio.Event()

        @repeat_every(seconds=3600)
        async def refresh() -> None:
            ran.set()

        manual = Periodic(lambda: None, 3600.0)
        app = FastAPI(lifespan=resile.periodic.lifespan(refresh, manual))

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"manual": manual.running}

        with anyio.fail_after(BOUND):
            async with asgi_lifespan(app):
                await ran.wait()
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    assert (await c.get("/ping")).json() == {"manual": True}
        assert not manual.running and manual.statistics.runs == 1

    @pytest.mark.anyio
    async def test_seed_style_lifespan(self) -> None:
        """A lifespan of its own (await cache_cleanup_task()) starts the loop and startup completes."""
        cleaned = threading.Event()
        handles: list[Periodic] = []

        @repeat_every(seconds=3600, on_exception=lambda exc: None)
        def cache_cleanup_task() -> None:
            cleaned.set()

        @asynccontextmanager
        async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
            handles.append(await cache_cleanup_task())
            yield
            await handles[0].stop()

        app = FastAPI(lifespan=app_lifespan)
        with anyio.fail_after(BOUND):
            async with asgi_lifespan(app):
                assert await anyio.to_thread.run_sync(cleaned.wait, BOUND)
                assert handles[0].running
        assert not handles[0].running

    @pytest.mark.anyio
    async def test_composes_with_an_inner_lifespan(self) -> None:
        """The inner lifespan starts first and stops last; its state reaches the app."""
        events: list[str] = []

        @asynccontextmanager
        async def db(app: Any) -> AsyncIterator[dict[str, Any]]:
            events.append("db up")
            yield {"db": "conn"}
            events.append("db down")

        def tick() -> None:
            events.append("tick")

        p = Periodic(tick, 3600.0, wait_first=True)
        app = FastAPI(lifespan=resile.periodic.lifespan(p, inner=db))
        with anyio.fail_after(BOUND):
            async with asgi_lifespan(app) as state:
                assert state == {"db": "conn"}
                assert p.running and events == ["db up"]
        assert events == ["db up", "db down"] and not p.running

    @pytest.mark.anyio
    async def test_lifespan_stops_all_then_raises_the_first_error(self) -> None:
        """A task that ended with raise_exceptions reports its error at shutdown, after all are stopped."""

        async def fail() -> None:
            raise Boom("reported")

        failing = Periodic(fail, 3600.0, raise_exceptions=True)
        other = Periodic(lambda: None, 3600.0)
        manage: Callable[[Any], Any] = resile.periodic.lifespan(other, failing)
        with anyio.fail_after(BOUND):
            with pytest.raises(Boom, match="reported"):
                async with manage(None):
                    await _until(lambda: not failing.running)  # it failed and ended
        assert not other.running and not failing.running

    def test_bad_task(self) -> None:
        """Anything but a Periodic or a decorated function is refused."""
        with pytest.raises(TypeError, match="tasks must be"):
            resile.periodic.lifespan(lambda: None)  # type: ignore[arg-type]


async def _until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition()`` holds (bounded by the caller's fail_after)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


class TestExample:
    def test_docs_example_runs(self) -> None:
        """docs/examples/periodic_fastapi.py runs to completion and reports what the docs say."""
        out = run_example(EXAMPLE.name)
        assert "failures=2" in out
        assert "cleanup loop running after shutdown: False" in out

    def test_docs_page_carries_the_example(self) -> None:
        """docs/periodic.md shows the example script exactly as the file that the test runs."""
        page = (DOCS / "periodic.md").read_text()
        after = page.split("<!-- example: docs/examples/periodic_fastapi.py", 1)[1]
        block = after.split("```python\n", 1)[1].rsplit("```", 1)[0]
        assert block == EXAMPLE.read_text()
