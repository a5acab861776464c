"""BackoffExecutor: the MicroPython API's contract, exactly, for execute (asyncio, trio, blocking)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _examples import load_example
from resile import BackoffExecutor
from resile.testing import FakeClock

# Bound on real waits for events that must fire quickly (a failing test, not a slow one).
BOUND = 5.0


def failing(times: int, value: Any = True) -> Callable[[], Any]:
    """A zero-argument fn raising OSError ``times`` times, then returning ``value``."""
    calls: list[int] = []

    def fn() -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise OSError(f"failure {len(calls)}")
        return value

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


class Recorder:
    """Records every callback as the original API calls them."""

    def __init__(self) -> None:
        self.successes: list[Any] = []
        self.fails: list[tuple[BaseException, int, int]] = []
        self.gave_up: list[BaseException] = []

    def on_success(self, result: Any) -> None:
        self.successes.append(result)

    def on_fail(self, exc: BaseException, retry_count: int, next_delay_ms: int) -> None:
        self.fails.append((exc, retry_count, next_delay_ms))

    def on_retry(self, last_exc: BaseException) -> None:
        self.gave_up.append(last_exc)

    def kwargs(self) -> dict[str, Any]:
        return {"on_success": self.on_success, "on_fail": self.on_fail, "on_retry": self.on_retry}


class TestConstruction:
    """Defaults and validation."""

    def test_defaults(self) -> None:
        """The original defaults: 500 ms base, 10000 ms cap, 5 retries, no jitter."""
        ex = BackoffExecutor()
        assert (ex.base_delay_ms, ex.max_backoff_ms, ex.max_retry, ex.jitter) == (
            500,
            10000,
            5,
            False,
        )
        assert not ex.running
        assert repr(ex) == (
            "BackoffExecutor(base_delay_ms=500, max_backoff_ms=10000, max_retry=5, jitter=False)"
        )

    def test_positional_order(self) -> None:
        """The original positional order: base_delay_ms, max_backoff_ms, max_retry, jitter."""
        ex = BackoffExecutor(100, 2000, -1, True)
        assert (ex.base_delay_ms, ex.max_backoff_ms, ex.max_retry, ex.jitter) == (
            100,
            2000,
            -1,
            True,
        )

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"base_delay_ms": -1}, "base_delay_ms"),
            ({"base_delay_ms": 1.5}, "base_delay_ms"),
            ({"base_delay_ms": True}, "base_delay_ms"),
            ({"max_backoff_ms": "10"}, "max_backoff_ms"),
            ({"base_delay_ms": 500, "max_backoff_ms": 100}, "max_backoff_ms"),
            ({"max_retry": -2}, "max_retry"),
            ({"max_retry": 2.0}, "max_retry"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any], field: str) -> None:
        """Bad values raise ValueError naming the field and the value."""
        with pytest.raises(ValueError, match=field) as info:
            BackoffExecutor(**kwargs)
        assert all(repr(v) in str(info.value) for v in kwargs.values())


@pytest.mark.anyio
class TestExecute:
    """await execute(fn, on_success, on_fail, on_retry) -> bool."""

    async def test_success_first_try(self, clock: FakeClock) -> None:
        """A truthy result returns True and calls on_success(result) once."""
        rec = Recorder()
        assert await BackoffExecutor().execute(lambda: "data", **rec.kwargs()) is True
        assert rec.successes == ["data"]
        assert rec.fails == rec.gave_up == []
        assert clock.sleeps == []

    async def test_delays_without_jitter(self, clock: FakeClock) -> None:
        """Failure n waits min(base * 2 ** (n - 1), max), reported in ms to on_fail."""
        rec = Recorder()
        fn = failing(5)
        assert await BackoffExecutor(max_retry=10).execute(fn, **rec.kwargs()) is True
        assert [(n, d) for _, n, d in rec.fails] == [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (5, 8000),
        ]
        assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
        assert rec.successes == [True]

    async def test_cap(self, clock: FakeClock) -> None:
        """Delays stop growing at max_backoff_ms."""
        rec = Recorder()
        await BackoffExecutor(100, 1000, max_retry=10).execute(failing(7), **rec.kwargs())
        assert [d for _, _, d in rec.fails] == [100, 200, 400, 800, 1000, 1000, 1000]

    async def test_full_jitter_bounds(self, clock: FakeClock) -> None:
        """With jitter=True each delay lies in [0, backoff] and the wait matches it."""
        rec = Recorder()
        ex = BackoffExecutor(100, 1000, max_retry=-1, jitter=True, seed=1)
        await ex.execute(failing(40), on_fail=rec.on_fail)
        for _, n, d in rec.fails:
            assert 0 <= d <= min(100 * 2 ** (n - 1), 1000)
        assert len({d for _, _, d in rec.fails}) > 10
        assert [round(s * 1000) for s in clock.sleeps] == [d for _, _, d in rec.fails]

    async def test_max_retry_runs_out(self, clock: FakeClock) -> None:
        """max_retry=N makes N + 1 attempts, calls on_fail each time, on_retry(last) once, returns False."""
        rec = Recorder()
        fn = failing(99)
        assert await BackoffExecutor(max_retry=3).execute(fn, **rec.kwargs()) is False
        assert len(fn.calls) == 4  # type: ignore[attr-defined]
        assert [n for _, n, _ in rec.fails] == [1, 2, 3, 4]
        assert rec.fails[-1][2] == 4000  # the delay of failure 4 is still computed and reported
        assert len(rec.gave_up) == 1
        assert rec.gave_up[0] is rec.fails[-1][0]
        assert str(rec.gave_up[0]) == "failure 4"
        assert rec.successes == []
        assert clock.sleeps == [0.5, 1.0, 2.0]

    async def test_max_retry_zero(self, clock: FakeClock) -> None:
        """max_retry=0 makes one attempt and no wait."""
        rec = Recorder()
        assert await BackoffExecutor(max_retry=0).execute(failing(1), **rec.kwargs()) is False
        assert len(rec.fails) == 1
        assert len(rec.gave_up) == 1
        assert clock.sleeps == []

    async def test_default_max_retry(self, clock: FakeClock) -> None:
        """The default allows 6 attempts."""
        fn = failing(99)
        assert await BackoffExecutor().execute(fn) is False
        assert len(fn.calls) == 6  # type: ignore[attr-defined]

    async def test_forever_until_canceled(self, clock: FakeClock) -> None:
        """max_retry=-1 retries past any count; cancel() after k failures ends it with False."""
        ex = BackoffExecutor(max_retry=-1)
        rec = Recorder()
        calls = []

        def fn() -> None:
            calls.append(1)
            if len(calls) == 50:
                ex.cancel()
            raise OSError

        assert await ex.execute(fn, **rec.kwargs()) is False
        assert len(calls) == 50
        assert len(rec.fails) == 50
        assert rec.gave_up == []  # canceled, not out of retries
        assert clock.sleeps[-1] == 10.0

    @pytest.mark.parametrize("falsy", [False, None, 0, "", [], {}])
    async def test_falsy_result_is_failure(self, falsy: Any, clock: FakeClock) -> None:
        """A falsy result fails like an exception: OSError("Execution returned False")."""
        rec = Recorder()
        results = iter([falsy, "ok"])
        assert await BackoffExecutor().execute(lambda: next(results), **rec.kwargs()) is True
        (exc, n, d) = rec.fails[0]
        assert isinstance(exc, OSError)
        assert str(exc) == "Execution returned False"
        assert (n, d) == (1, 500)
        assert rec.successes == ["ok"]

    async def test_async_fn_and_callbacks(self, clock: FakeClock) -> None:
        """fn and every callback may be async; they are awaited."""
        seen: list[Any] = []
        results = iter([None, 0, 42])

        async def fn() -> Any:
            await anyio.lowlevel.checkpoint()
            return next(results)

        async def on_fail(exc: BaseException, n: int, d: int) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(("fail", n, d))

        async def on_success(result: Any) -> None:
            seen.append(("success", result))

        assert await BackoffExecutor().execute(fn, on_success=on_success, on_fail=on_fail)
        assert seen == [("fail", 1, 500), ("fail", 2, 1000), ("success", 42)]

    async def test_lambda_returning_coroutine(self, clock: FakeClock) -> None:
        """A sync lambda returning a coroutine (the MicroPython idiom) is awaited."""

        async def connect(host: str) -> str:
            return host

        rec = Recorder()
        assert await BackoffExecutor().execute(lambda: connect("broker"), **rec.kwargs())
        assert rec.successes == ["broker"]

    async def test_async_on_retry(self, clock: FakeClock) -> None:
        """An async on_retry is awaited when retries run out."""
        gave_up: list[BaseException] = []

        async def on_retry(exc: BaseException) -> None:
            gave_up.append(exc)

        assert not await BackoffExecutor(max_retry=1).execute(failing(9), on_retry=on_retry)
        assert len(gave_up) == 1

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_callback_errors_swallowed(
        self, kind: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A callback that raises never breaks the loop or changes the outcome."""
        caplog.set_level(logging.CRITICAL, logger="resile")

        def bad_sync(*args: Any) -> None:
            raise RuntimeError("callback broke")

        async def bad_async(*args: Any) -> None:
            raise RuntimeError("callback broke")

        bad = bad_sync if kind == "sync" else bad_async
        ex = BackoffExecutor(max_retry=2)
        fn = failing(2)
        assert await ex.execute(fn, on_success=bad, on_fail=bad, on_retry=bad) is True
        assert len(fn.calls) == 3  # type: ignore[attr-defined]
        assert await ex.execute(failing(9), on_success=bad, on_fail=bad, on_retry=bad) is False

    async def test_running(self, clock: FakeClock) -> None:
        """running is True during execute and False after, on success and on failure."""
        ex = BackoffExecutor(max_retry=1)
        during = []

        def fn() -> bool:
            during.append(ex.running)
            return len(during) > 1

        assert not ex.running
        assert await ex.execute(fn)
        assert during == [True, True]
        assert not ex.running
        assert not await ex.execute(failing(9))
        assert not ex.running

    async def test_reentrant_call_refused(self) -> None:
        """A second execute while one runs returns False at once and does not call its fn."""
        ex = BackoffExecutor()
        started, release = anyio.Event(), anyio.Event()
        second_calls = []
        results: list[bool] = []

        async def slow() -> bool:
            started.set()
            await release.wait()
            return True

        async def first() -> None:
            results.append(await ex.execute(slow))

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await started.wait()
                assert ex.running
                assert await ex.execute(lambda: second_calls.append(1) or True) is False
                assert ex.running  # the refusal did not disturb the first run
                release.set()
        assert results == [True]
        assert second_calls == []
        assert not ex.running

    async def test_cancel_cuts_wait_short(self) -> None:
        """cancel() during a long wait wakes the executor, which returns False without another attempt."""
        ex = BackoffExecutor(base_delay_ms=60_000, max_backoff_ms=60_000)
        failed = anyio.Event()
        fn = failing(99)
        results: list[bool] = []

        async def run() -> None:
            results.append(await ex.execute(fn, on_fail=lambda *a: failed.set()))

        t0 = time.monotonic()
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await failed.wait()
                ex.cancel()
        assert results == [False]
        assert len(fn.calls) == 1  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < BOUND
        assert not ex.running

    async def test_cancel_from_another_thread(self) -> None:
        """cancel() is safe to call from another thread."""
        ex = BackoffExecutor(base_delay_ms=60_000, max_backoff_ms=60_000)
        failed = anyio.Event()
        results: list[bool] = []

        async def run() -> None:
            results.append(await ex.execute(failing(99), on_fail=lambda *a: failed.set()))

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await failed.wait()
                await anyio.to_thread.run_sync(ex.cancel)
        assert results == [False]

    async def test_cancel_before_execute_is_reset(self, clock: FakeClock) -> None:
        """A cancel() with nothing running does not affect the next execute (the original resets it)."""
        ex = BackoffExecutor()
        ex.cancel()
        assert await ex.execute(failing(1)) is True

    async def test_base_exception_propagates_and_releases(self, clock: FakeClock) -> None:
        """A KeyboardInterrupt from fn propagates; the executor is usable again afterwards."""
        ex = BackoffExecutor()

        def fn() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await ex.execute(fn)
        assert not ex.running
        assert await ex.execute(lambda: True)


class TestExecuteBlocking:
    """execute outside an event loop: the thread-safe, blocking colour."""

    def test_same_contract(self, clock: FakeClock) -> None:
        """Delays, on_fail, on_retry and the result follow the original API."""
        rec = Recorder()
        fn = failing(99)
        assert BackoffExecutor(max_retry=2).execute(fn, **rec.kwargs()) is False
        assert [(n, d) for _, n, d in rec.fails] == [(1, 500), (2, 1000), (3, 2000)]
        assert len(rec.gave_up) == 1
        assert clock.sleeps == [0.5, 1.0]
        rec2 = Recorder()
        assert BackoffExecutor().execute(failing(2, "v"), **rec2.kwargs()) is True
        assert rec2.successes == ["v"]

    def test_falsy_and_async(self, clock: FakeClock) -> None:
        """A falsy result is a failure; async fn and callbacks are run to completion."""
        seen: list[Any] = []
        results = iter([0, "x"])

        async def fn() -> Any:
            return next(results)

        async def on_success(r: Any) -> None:
            seen.append(r)

        async def on_fail(exc: BaseException, n: int, d: int) -> None:
            seen.append(str(exc))

        assert BackoffExecutor().execute(fn, on_success=on_success, on_fail=on_fail)
        assert seen == ["Execution returned False", "x"]

    def test_callback_errors_swallowed(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Raising callbacks never change the outcome."""
        caplog.set_level(logging.CRITICAL, logger="resile")

        def bad(*args: Any) -> None:
            raise RuntimeError

        assert BackoffExecutor().execute(failing(1), on_success=bad, on_fail=bad)
        assert not BackoffExecutor(max_retry=0).execute(failing(1), on_retry=bad, on_fail=bad)

    def test_second_thread_refused(self) -> None:
        """While one thread runs execute_sync, a call from another thread returns False at once."""
        ex = BackoffExecutor()
        started, release = threading.Event(), threading.Event()
        results: list[bool] = []

        def slow() -> bool:
            started.set()
            return release.wait(BOUND)

        t = threading.Thread(target=lambda: results.append(ex.execute(slow)))
        t.start()
        try:
            assert started.wait(BOUND)
            assert ex.running
            assert ex.execute(lambda: True) is False
        finally:
            release.set()
            t.join(BOUND)
        assert results == [True]
        assert not ex.running

    def test_cancel_from_another_thread_cuts_wait(self) -> None:
        """cancel() from another thread ends a long wait; execute_sync returns False."""
        ex = BackoffExecutor(base_delay_ms=60_000, max_backoff_ms=60_000)
        failed = threading.Event()
        fn = failing(99)
        results: list[bool] = []
        t = threading.Thread(
            target=lambda: results.append(ex.execute(fn, on_fail=lambda *a: failed.set()))
        )
        t.start()
        assert failed.wait(BOUND)
        ex.cancel()
        t.join(BOUND)
        assert not t.is_alive()
        assert results == [False]
        assert len(fn.calls) == 1  # type: ignore[attr-defined]

    def test_forever_until_canceled(self, clock: FakeClock) -> None:
        """max_retry=-1 keeps going until cancel()."""
        ex = BackoffExecutor(max_retry=-1)
        calls = []

        def fn() -> None:
            calls.append(1)
            if len(calls) == 20:
                ex.cancel()
            raise OSError

        assert ex.execute(fn) is False
        assert len(calls) == 20

    def test_running(self, clock: FakeClock) -> None:
        """running is True inside fn and False after."""
        ex = BackoffExecutor()
        during: list[bool] = []
        assert ex.execute(lambda: during.append(ex.running) or True)
        assert during == [True]
        assert not ex.running


class TestDocsExample:
    """docs/examples/executor_connect.py runs and shows the original callback lifecycle."""

    def test_example_runs(self, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
        """Three failures (one a falsy result), a success, then a run out of retries."""
        example = load_example("executor_connect.py")
        asyncio.run(example["main"]())
        out = capsys.readouterr().out
        assert "failure 1: broker not ready; waiting 50 ms" in out
        assert "failure 3: Execution returned False; waiting 200 ms" in out
        assert "connected: True" in out
        assert "execute -> True | running: False" in out
        assert "gave up after the last failure: OSError('no route to host')" in out
        assert "execute -> False" in out
        assert "execute in a thread -> True" in out
        assert clock.sleeps == [0.05, 0.1, 0.2, 0.01]


class TestNames:
    """execute is both colours; execute_async is the async spelling; execute_sync is deprecated."""

    def test_execute_blocks_without_a_loop(self, clock: FakeClock) -> None:
        """With no event loop in the thread, execute runs and returns the bool itself."""
        assert BackoffExecutor(max_retry=1).execute(failing(1)) is True
        assert clock.sleeps == [0.5]

    @pytest.mark.anyio
    async def test_execute_returns_an_awaitable_in_a_loop(self, clock: FakeClock) -> None:
        """Inside asyncio or trio, execute returns an awaitable and warns about nothing."""
        pending = BackoffExecutor().execute(lambda: "v")
        assert not isinstance(pending, bool)
        assert await pending is True

    @pytest.mark.anyio
    async def test_execute_async(self, clock: FakeClock) -> None:
        """execute_async keeps the contract: retries, then True."""
        rec = Recorder()
        assert await BackoffExecutor().execute_async(failing(2, "x"), **rec.kwargs()) is True
        assert [n for _, n, _ in rec.fails] == [1, 2]
        assert rec.successes == ["x"]

    def test_execute_sync_is_deprecated(self, clock: FakeClock) -> None:
        """execute_sync warns and still runs the blocking colour."""
        with pytest.warns(DeprecationWarning, match="execute_sync"):
            assert BackoffExecutor(max_retry=0).execute_sync(failing(1)) is False

    @pytest.mark.anyio
    async def test_execute_sync_still_blocks_inside_a_loop(self, clock: FakeClock) -> None:
        """The deprecated execute_sync blocks even where execute would return an awaitable."""
        with pytest.warns(DeprecationWarning):
            assert BackoffExecutor().execute_sync(lambda: True) is True
