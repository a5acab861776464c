"""The retry engine, async side, under asyncio and trio (the anyio_backend fixture).

Backoff waits go through ``resile.testing.no_waits()`` or an injected ``async_sleep=``;
the only real waits are short, bounded deadlines on events that never fire.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resile import (
    Constant,
    DeadlineExceeded,
    Exponential,
    Linear,
    Permanent,
    RetryAfter,
    RetryError,
    Retrying,
    RetryState,
    after_attempts,
    deadline,
    remaining,
    retry,
)
from resile.testing import FakeClock

pytestmark = pytest.mark.anyio

# The ``clock`` and ``path`` (the decorator's lean and full paths) fixtures are in conftest.py.

SHORT = 0.05


def aflaky(
    failures: int, exc: Callable[[], BaseException] = ConnectionError, value: Any = "ok"
) -> Callable[..., Awaitable[Any]]:
    """An async function failing ``failures`` times, then returning ``value``."""
    calls: list[int] = []
    raised: list[BaseException] = []

    async def fn(*args: Any, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        calls.append(1)
        if len(calls) <= failures:
            e = exc()
            raised.append(e)
            raise e
        return value

    fn.calls = calls  # type: ignore[attr-defined]
    fn.raised = raised  # type: ignore[attr-defined]
    return fn


async def no_async_sleep(seconds: float) -> None:
    raise AssertionError(f"async_sleep({seconds!r}) must not be called")


async def forever() -> None:
    await anyio.Event().wait()


class TestAsyncDecorator:
    """@retry on coroutine functions is detected and keeps the signature."""

    async def test_retries(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """A failing coroutine function is retried until it succeeds."""
        fn = aflaky(2)
        wrapped: Any = retry(backoff=Constant(0.5), **path)(fn)
        assert await wrapped("a", k=1) == "ok"
        assert len(fn.calls) == 3  # type: ignore[attr-defined]
        assert clock.sleeps == [0.5, 0.5]
        assert (wrapped.statistics.calls, wrapped.statistics.retries) == (1, 2)

    async def test_bare(self, clock: FakeClock) -> None:
        """@retry with no arguments works on a coroutine function."""
        calls = []

        @retry
        async def f(x: int) -> int:
            calls.append(x)
            if len(calls) < 3:
                raise OSError
            return x + 1

        assert await f(1) == 2
        assert len(clock.sleeps) == 2

    async def test_signature_kept(self) -> None:
        """The wrapper is a coroutine function with the original name, signature and __wrapped__."""

        async def ping(host: str, *, port: int = 80) -> bool:
            """Ping it."""
            return True

        for wrapped in (retry(ping), retry(on_retry=print)(ping), retry(attempt_timeout=1)(ping)):
            assert inspect.iscoroutinefunction(wrapped)
            assert wrapped.__name__ == "ping"
            assert wrapped.__doc__ == "Ping it."
            assert wrapped.__wrapped__ is ping  # type: ignore[attr-defined]
            assert inspect.signature(wrapped) == inspect.signature(ping)

    async def test_ping_example(self, clock: FakeClock) -> None:
        """The issue's example: falsy results retried with a constant 0.5 s, three attempts."""
        answers = iter([False, False, True])

        @retry(on_result=lambda ok: not ok, backoff=Constant(0.5), stop=after_attempts(3))
        async def ping() -> bool:
            return next(answers)

        assert await ping() is True
        assert clock.sleeps == [0.5, 0.5]

    async def test_other_types_propagate_untouched(self, path: dict[str, Any]) -> None:
        """An exception outside on= propagates at once, without a note."""
        fn = aflaky(3, KeyError)
        with pytest.raises(KeyError) as info:
            await retry(on=OSError, async_sleep=no_async_sleep, **path)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]
        assert not getattr(info.value, "__notes__", [])

    async def test_predicate(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """on=predicate retries accepted exceptions and lets rejected ones through untouched."""
        fn = aflaky(2, lambda: OSError(5, "io"))
        assert await retry(on=lambda e: isinstance(e, OSError), **path)(fn)() == "ok"
        fn2 = aflaky(2, ValueError)
        with pytest.raises(ValueError):
            await retry(on=lambda e: isinstance(e, OSError), **path)(fn2)()
        assert len(fn2.calls) == 1  # type: ignore[attr-defined]


class TestAsyncWaits:
    """Async waits: the running library's sleep, injected sleeps, none for a zero delay."""

    async def test_zero_delay_calls_no_sleep(self, path: dict[str, Any]) -> None:
        """A zero delay does not call async_sleep at all."""
        assert await retry(backoff=Constant(0), async_sleep=no_async_sleep, **path)(aflaky(3))()

    async def test_zero_delay_records_nothing(self, clock: FakeClock) -> None:
        """Under no_waits a zero delay records no wait."""
        await retry(backoff=Constant(0))(aflaky(2))()
        assert clock.sleeps == []

    async def test_injected_async_sleep(self, path: dict[str, Any]) -> None:
        """async_sleep= receives each delay."""
        slept: list[float] = []

        async def record(s: float) -> None:
            slept.append(s)

        await retry(backoff=Exponential(0.5, jitter="none"), async_sleep=record, **path)(
            aflaky(3)
        )()
        assert slept == [0.5, 1.0, 2.0]

    async def test_real_short_waits(self) -> None:
        """With the real clock the engine sleeps with the running library (tiny delays)."""
        fn = aflaky(2)
        assert await retry(backoff=Constant(0.001))(fn)() == "ok"
        assert len(fn.calls) == 3  # type: ignore[attr-defined]


class TestAsyncHooks:
    """Hooks, sync or async, on async functions."""

    async def test_states(self, clock: FakeClock) -> None:
        """on_retry, on_giveup and on_success get the attempt, elapsed time, delay and outcome."""
        seen: list[tuple[Any, ...]] = []

        async def on_retry(s: RetryState) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(("retry", s.attempt, s.elapsed, s.next_delay, type(s.exception)))

        def on_success(s: RetryState) -> None:
            seen.append(("success", s.attempt, s.elapsed, s.result))

        await retry(backoff=Linear(1.0, 1.0), on_retry=on_retry, on_success=on_success)(
            aflaky(2, value=9)
        )()
        assert seen == [
            ("retry", 1, 0.0, 1.0, ConnectionError),
            ("retry", 2, 1.0, 2.0, ConnectionError),
            ("success", 3, 3.0, 9),
        ]

    async def test_on_giveup(self, clock: FakeClock) -> None:
        """on_giveup (async) sees the last attempt and the reason."""
        seen: list[RetryState] = []

        async def on_giveup(s: RetryState) -> None:
            seen.append(s)

        fn = aflaky(9)
        with pytest.raises(ConnectionError):
            await retry(backoff=Constant(0), stop=after_attempts(2), on_giveup=on_giveup)(fn)()
        assert seen[0].attempt == 2
        assert seen[0].exception is fn.raised[-1]  # type: ignore[attr-defined]
        assert seen[0].gave_up_because == "stop"

    async def test_async_hook_of_sync_function_inside_a_loop(self, clock: FakeClock) -> None:
        """A sync function with an async hook, called from async code, still runs the hook."""
        seen: list[int] = []

        async def on_retry(s: RetryState) -> None:
            seen.append(s.attempt)

        calls = []

        @retry(backoff=Constant(0), on_retry=on_retry)
        def sync_fn() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise OSError
            return "ok"

        assert sync_fn() == "ok"
        assert seen == [1, 2]

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_raising_hook_logged(
        self, kind: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising hook is logged and the retries carry on."""

        def bad_sync(s: RetryState) -> None:
            raise RuntimeError("hook")

        async def bad_async(s: RetryState) -> None:
            raise RuntimeError("hook")

        bad = bad_sync if kind == "sync" else bad_async
        caplog.set_level(logging.ERROR, logger="resile")
        fn = aflaky(2)
        assert await retry(backoff=Constant(0), on_retry=bad, on_success=bad)(fn)() == "ok"
        errors = [r for r in caplog.records if r.name == "resile" and r.levelno == logging.ERROR]
        assert len(errors) == 3


class TestAsyncGiveUp:
    """Give-up in async code: note, RetryError, fallback, Permanent, retry_after."""

    async def test_note(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """The last exception is re-raised with the attempt count in a note."""
        fn = aflaky(9)
        with pytest.raises(ConnectionError) as info:
            await retry(stop=after_attempts(3), name="job", **path)(fn)()
        assert info.value is fn.raised[-1]  # type: ignore[attr-defined]
        assert info.value.__notes__ == ["resile: job gave up after 3 attempt(s) (stop)"]

    async def test_retry_error(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """raise_retry_error=True raises RetryError with every outcome."""
        fn = aflaky(9)
        with pytest.raises(RetryError) as info:
            await retry(stop=after_attempts(2), raise_retry_error=True, **path)(fn)()
        assert info.value.attempts == fn.raised  # type: ignore[attr-defined]

    async def test_fallback(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """fallback= gives the value on give-up."""
        got = await retry(stop=after_attempts(2), fallback=lambda s: s.attempt * 10, **path)(
            aflaky(9)
        )()
        assert got == 20

    async def test_permanent(self, path: dict[str, Any]) -> None:
        """Permanent(exc) re-raises exc at once."""
        inner = PermissionError("no")

        async def fn() -> None:
            raise Permanent(inner)

        with pytest.raises(PermissionError) as info:
            await retry(async_sleep=no_async_sleep, **path)(fn)()
        assert info.value is inner

    async def test_permanent_on(self, path: dict[str, Any]) -> None:
        """permanent_on= stops at once."""
        fn = aflaky(9, PermissionError)
        with pytest.raises(PermissionError):
            await retry(permanent_on=PermissionError, async_sleep=no_async_sleep, **path)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]

    async def test_retry_after(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """retry_after is honoured, bounded by the cap."""
        outcomes = iter([RetryAfter(2.0), RetryAfter(60.0)])

        async def fn() -> str:
            e = next(outcomes, None)
            if e is not None:
                raise e
            return "ok"

        await retry(backoff=Constant(0.1, max_delay=10.0), **path)(fn)()
        assert clock.sleeps == [2.0, 10.0]


class TestAsyncTimeouts:
    """attempt_timeout=, timeout= and an enclosing deadline for async calls."""

    async def test_attempt_timeout_cancels_one_attempt(self, clock: FakeClock) -> None:
        """An attempt that overruns attempt_timeout is canceled and retried as DeadlineExceeded."""
        calls = []
        seen: list[RetryState] = []

        async def fn() -> str:
            calls.append(1)
            if len(calls) == 1:
                await forever()
            return "ok"

        assert (
            await retry(attempt_timeout=SHORT, backoff=Constant(0), on_retry=seen.append)(fn)()
            == "ok"
        )
        assert len(calls) == 2
        assert isinstance(seen[0].exception, DeadlineExceeded)

    async def test_attempt_timeout_gives_up(self, clock: FakeClock) -> None:
        """When every attempt overruns, the last DeadlineExceeded is raised with a note."""

        async def fn() -> None:
            await forever()

        with pytest.raises(DeadlineExceeded) as info:
            await retry(attempt_timeout=SHORT, backoff=Constant(0), stop=after_attempts(2))(fn)()
        assert "gave up after 2 attempt(s)" in info.value.__notes__[-1]

    async def test_attempt_timeout_not_retried_when_outside_on(self) -> None:
        """An overrun attempt is a DeadlineExceeded: outside on= it propagates at once."""
        calls = []

        async def fn() -> None:
            calls.append(1)
            await forever()

        with pytest.raises(DeadlineExceeded):
            await retry(on=ConnectionError, attempt_timeout=SHORT)(fn)()
        assert calls == [1]

    async def test_timeout_cancels_the_call(self) -> None:
        """timeout= cancels a call still running at the deadline with DeadlineExceeded."""
        calls = []

        async def fn() -> None:
            calls.append(1)
            await forever()

        with pytest.raises(DeadlineExceeded) as info:
            await retry(timeout=SHORT)(fn)()
        assert isinstance(info.value, TimeoutError)
        assert calls == [1]

    async def test_timeout_stops_waits_that_cannot_finish(self, clock: FakeClock) -> None:
        """Under timeout=, the engine gives up rather than start a wait that ends past it."""
        fn = aflaky(9)
        with pytest.raises(ConnectionError):
            await retry(backoff=Constant(2.0), stop=after_attempts(99), timeout=5.0)(fn)()
        assert clock.sleeps == [2.0, 2.0]

    async def test_timeout_visible_inside(self, clock: FakeClock) -> None:
        """The function sees the call's deadline through remaining()."""
        left: list[float | None] = []

        @retry(timeout=3.0)
        async def f() -> None:
            left.append(remaining())

        await f()
        assert left == [3.0]

    async def test_timeout_success_in_time(self) -> None:
        """A call that finishes within timeout= returns normally."""
        assert await retry(timeout=30.0)(aflaky(0))() == "ok"

    async def test_enclosing_deadline_cancels(self) -> None:
        """An enclosing async deadline cancels a retried call that runs past it."""
        fn = aflaky(0)

        @retry
        async def hang() -> None:
            await fn()
            await forever()

        with pytest.raises(DeadlineExceeded):
            async with deadline(SHORT):
                await hang()

    async def test_enclosing_deadline_stops_waits(self, clock: FakeClock) -> None:
        """Inside async with deadline(1.0) the engine never starts a wait it cannot finish."""
        with pytest.raises(ConnectionError):
            async with deadline(1.0):
                await retry(backoff=Constant(0.4), stop=after_attempts(99))(aflaky(9))()
        assert clock.sleeps == [0.4, 0.4]


class TestAsyncCancellation:
    """Cancellation is never retried or swallowed."""

    async def test_cancel_during_attempt(self, path: dict[str, Any]) -> None:
        """A canceled attempt is not retried; the cancellation reaches the caller's scope."""
        calls = []

        async def fn() -> None:
            calls.append(1)
            await forever()

        with anyio.move_on_after(SHORT) as scope:
            await retry(on=Exception, **path)(fn)()
        assert scope.cancelled_caught
        assert calls == [1]

    async def test_cancel_during_wait(self) -> None:
        """A cancellation during a backoff wait ends the call without another attempt."""
        fn = aflaky(9)
        with anyio.move_on_after(SHORT) as scope:
            await retry(backoff=Constant(30.0))(fn)()
        assert scope.cancelled_caught
        assert len(fn.calls) == 1  # type: ignore[attr-defined]


def test_asyncio_cancelled_error_not_retried() -> None:
    """asyncio.CancelledError raised by an attempt propagates at once."""
    calls = []

    @retry(async_sleep=no_async_sleep)
    async def fn() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(fn())
    assert calls == [1]


class TestAsyncIterator:
    """async for attempt in Retrying(...): with attempt: ..."""

    async def test_retries_block(self, clock: FakeClock) -> None:
        """The block runs until it raises nothing retryable."""
        fn = aflaky(2)
        numbers = []
        async for attempt in Retrying(backoff=Constant(0.25)):
            with attempt:
                numbers.append(attempt.number)
                await fn()
        assert numbers == [1, 2, 3]
        assert clock.sleeps == [0.25, 0.25]

    async def test_async_with_attempt(self, clock: FakeClock) -> None:
        """async with attempt: works as with attempt: does (tenacity's spelling)."""
        fn = aflaky(2)
        numbers = []
        async for attempt in Retrying(backoff=Constant(0.5)):
            async with attempt:
                numbers.append(attempt.number)
                await fn()
        assert numbers == [1, 2, 3]
        assert clock.sleeps == [0.5, 0.5]

    async def test_async_with_attempt_non_retryable(self) -> None:
        """Under async with, an exception outside on= still propagates at once."""
        count = 0
        with pytest.raises(KeyError):
            async for attempt in Retrying(on=OSError, async_sleep=no_async_sleep):
                async with attempt:
                    count += 1
                    raise KeyError
        assert count == 1

    async def test_gives_up(self, clock: FakeClock) -> None:
        """On give-up the last exception leaves the async for with a note."""
        policy = Retrying(backoff=Constant(0), stop=after_attempts(2), name="blk")
        with pytest.raises(ConnectionError) as info:
            async for attempt in policy:
                with attempt:
                    await aflaky(9)()
        assert info.value.__notes__ == ["resile: blk gave up after 2 attempt(s) (stop)"]
        assert policy.statistics.giveups == 1

    async def test_on_result_and_hooks(self, clock: FakeClock) -> None:
        """set_result feeds on_result; async hooks run."""
        values = iter([None, None, "v"])
        seen: list[str] = []

        async def on_success(s: RetryState) -> None:
            seen.append(f"success {s.attempt} {s.result}")

        async for attempt in Retrying(
            on_result=lambda v: v is None, backoff=Constant(0), on_success=on_success
        ):
            with attempt:
                attempt.set_result(next(values))
        assert seen == ["success 3 v"]

    async def test_non_retryable_propagates(self) -> None:
        """An exception outside on= leaves the loop at once."""
        count = 0
        with pytest.raises(KeyError):
            async for attempt in Retrying(on=OSError, async_sleep=no_async_sleep):
                with attempt:
                    count += 1
                    raise KeyError
        assert count == 1

    async def test_leaving_early_leaves_nothing_to_finalize(self) -> None:
        """break, return or an exception out of async for leaves no unexhausted generator (trio warns)."""

        async def first_attempt_only() -> int:
            async for attempt in Retrying():
                with attempt:
                    return attempt.number
            return 0

        assert await first_attempt_only() == 1
        async for attempt in Retrying():
            with attempt:
                break
        outcomes = iter([OSError(), KeyError()])

        async def fn() -> None:
            raise next(outcomes)

        with pytest.raises(KeyError):
            await retry(on=OSError, backoff=Constant(0))(fn)()
        gc.collect()
        await anyio.lowlevel.checkpoint()
