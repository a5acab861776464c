"""The retry engine, sync side: the decorator, the iterator form, and every policy field.

Async functions and ``async for`` are in ``test_retry_async.py``. Nothing here sleeps: waits
go through ``resile.testing.no_waits()`` or an injected ``sleep=``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import pytest

import resile
from _examples import load_example
from resile import (
    CircuitOpen,
    Constant,
    Exponential,
    Linear,
    Permanent,
    RetryAfter,
    RetryBudget,
    RetryError,
    Retrying,
    RetryState,
    after_attempts,
    after_elapsed,
    deadline,
    retry,
)
from resile.testing import FakeClock, no_waits

# The ``clock`` and ``path`` (the decorator's lean and full paths) fixtures are in conftest.py.


def flaky(failures: int, exc: Callable[[], BaseException] = ConnectionError, value: Any = "ok"):  # type: ignore[no-untyped-def]
    """A function failing ``failures`` times (raising ``exc()``), then returning ``value``."""
    calls: list[int] = []
    raised: list[BaseException] = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            e = exc()
            raised.append(e)
            raise e
        return value

    fn.calls = calls  # type: ignore[attr-defined]
    fn.raised = raised  # type: ignore[attr-defined]
    return fn


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"sleep({seconds!r}) must not be called")


class TestDecorator:
    """@retry on sync functions: bare, with arguments, signature kept."""

    def test_bare(self, clock: FakeClock) -> None:
        """@retry with no arguments retries on Exception with the default policy."""
        fn = flaky(2)
        wrapped = retry(fn)
        assert wrapped() == "ok"
        assert len(fn.calls) == 3  # type: ignore[attr-defined]
        assert len(clock.sleeps) == 2

    def test_bare_syntax(self, clock: FakeClock) -> None:
        """The @retry syntax without parentheses works on a def."""
        calls = []

        @retry
        def f(x: int) -> int:
            calls.append(x)
            if len(calls) < 2:
                raise ValueError
            return x * 2

        assert f(21) == 42
        assert calls == [21, 21]

    def test_empty_parentheses(self, clock: FakeClock) -> None:
        """@retry() is the same as @retry."""
        fn = flaky(1)
        assert retry()(fn)() == "ok"

    def test_default_policy(self, clock: FakeClock) -> None:
        """The default is five attempts with capped, fully jittered exponential waits."""
        fn = flaky(10)
        with pytest.raises(ConnectionError):
            retry(fn)()
        assert len(fn.calls) == 5  # type: ignore[attr-defined]
        assert len(clock.sleeps) == 4
        for n, d in enumerate(clock.sleeps, start=1):
            assert 0.0 <= d <= min(5.0, 0.1 * 2 ** (n - 1))

    def test_arguments_passed_through(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Positional and keyword arguments reach every attempt unchanged."""
        seen = []

        @retry(backoff=Constant(0.1), **path)
        def f(a: int, *rest: int, key: str = "k", **more: Any) -> tuple[Any, ...]:
            seen.append((a, rest, key, more))
            if len(seen) < 3:
                raise OSError
            return a, rest, key, more

        assert f(1, 2, 3, key="x", extra=True) == (1, (2, 3), "x", {"extra": True})
        assert seen == [(1, (2, 3), "x", {"extra": True})] * 3

    def test_wraps(self) -> None:
        """The wrapper keeps __name__, __qualname__, __doc__, __wrapped__ and the signature."""

        def fetch(url: str, *, timeout: float = 1.0) -> bytes:
            """Fetch it."""
            return b""

        for wrapped in (retry(fetch), retry(on=OSError)(fetch), retry(on_retry=print)(fetch)):
            assert wrapped.__name__ == "fetch"
            assert wrapped.__qualname__ == fetch.__qualname__
            assert wrapped.__doc__ == "Fetch it."
            assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
            assert inspect.signature(wrapped) == inspect.signature(fetch)
            assert not inspect.iscoroutinefunction(wrapped)

    def test_method(self, clock: FakeClock) -> None:
        """A decorated method binds self like the original."""

        class Client:
            def __init__(self) -> None:
                self.calls = 0

            @retry(backoff=Constant(0))
            def get(self, n: int) -> int:
                self.calls += 1
                if self.calls < 2:
                    raise OSError
                return n

        c = Client()
        assert c.get(5) == 5
        assert c.calls == 2

    def test_policy_and_statistics_exposed(self) -> None:
        """The wrapper exposes its policy as .retrying and its counters as .statistics."""
        wrapped: Any = retry(stop=after_attempts(2))(flaky(0))
        assert isinstance(wrapped.retrying, Retrying)
        assert wrapped.statistics is wrapped.retrying.statistics
        assert wrapped.retrying.stop == after_attempts(2)

    def test_name_defaults_to_qualname(self) -> None:
        """An unnamed policy takes the function's qualified name; a named one keeps its name."""

        def job() -> None:
            pass

        assert retry(job).retrying.name == job.__qualname__  # type: ignore[attr-defined]
        assert retry(name="mine")(job).retrying.name == "mine"  # type: ignore[attr-defined]

    def test_one_policy_many_functions(self, clock: FakeClock) -> None:
        """One unnamed policy decorating two functions keeps separate statistics."""
        policy = Retrying(backoff=Constant(0))
        a: Any = policy(flaky(1))
        b: Any = policy(flaky(0))
        a()
        b()
        assert (a.statistics.retries, b.statistics.retries) == (1, 0)
        assert policy.statistics.calls == 0

    def test_function_alone_or_keywords(self) -> None:
        """retry(fn, on=...) is refused: give the function alone or keywords alone."""
        with pytest.raises(TypeError, match="keywords only"):
            retry(flaky(0), on=OSError)  # type: ignore[call-overload]

    def test_not_callable(self) -> None:
        """Decorating something that is not callable raises TypeError."""
        with pytest.raises(TypeError, match="function to wrap"):
            Retrying()(42)  # type: ignore[arg-type]


class TestWhatToRetry:
    """on=, on_result= and what is never retried."""

    def test_single_type(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """on=Type retries that type and its subclasses."""
        fn = flaky(2, ConnectionResetError)
        assert retry(on=ConnectionError, **path)(fn)() == "ok"
        assert len(fn.calls) == 3  # type: ignore[attr-defined]

    def test_tuple(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """on=(A, B) retries either."""
        errors = iter([TimeoutError(), ConnectionError()])

        def fn() -> str:
            e = next(errors, None)
            if e is not None:
                raise e
            return "ok"

        assert retry(on=(ConnectionError, TimeoutError), **path)(fn)() == "ok"

    def test_other_types_propagate_untouched(self, path: dict[str, Any]) -> None:
        """An exception outside on= propagates at once: one call, no wait, no note."""
        fn = flaky(5, KeyError)
        wrapped: Any = retry(on=OSError, sleep=no_sleep, **path)(fn)
        with pytest.raises(KeyError) as info:
            wrapped()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]
        assert info.value is fn.raised[0]  # type: ignore[attr-defined]
        assert not getattr(info.value, "__notes__", [])
        assert wrapped.statistics.giveups == 0

    def test_predicate(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """on=predicate retries the exceptions it accepts."""
        codes = iter([503, 502])

        class HTTPError(Exception):
            def __init__(self, code: int) -> None:
                self.code = code

        def fn() -> str:
            code = next(codes, None)
            if code is not None:
                raise HTTPError(code)
            return "ok"

        assert retry(on=lambda e: getattr(e, "code", 0) >= 500, **path)(fn)() == "ok"

    def test_predicate_rejection_propagates_untouched(self, path: dict[str, Any]) -> None:
        """An exception the predicate rejects propagates at once, without note, fallback or RetryError."""
        fn = flaky(5, lambda: ValueError("bad input"))
        wrapped: Any = retry(
            on=lambda e: isinstance(e, OSError),
            sleep=no_sleep,
            fallback=lambda s: "fallback",
            **path,
        )(fn)
        with pytest.raises(ValueError, match="bad input") as info:
            wrapped()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]
        assert not getattr(info.value, "__notes__", [])
        with pytest.raises(ValueError):
            retry(on=lambda e: False, raise_retry_error=True, **path)(flaky(1, ValueError))()

    def test_on_result_retries_falsy(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """on_result=lambda ok: not ok retries falsy results."""
        results = iter([False, None, 0, "yes"])
        fn = functools.partial(next, results)
        assert retry(on_result=lambda ok: not ok, backoff=Constant(0.5), **path)(fn)() == "yes"
        assert clock.sleeps == [0.5, 0.5, 0.5]

    def test_on_result_gives_up_with_last_result(
        self, clock: FakeClock, path: dict[str, Any]
    ) -> None:
        """On give-up a rejected result is returned, not raised."""
        results = iter([1, 2, 3, 4])
        wrapped: Any = retry(
            on_result=lambda r: r < 10, stop=after_attempts(3), backoff=Constant(0), **path
        )(functools.partial(next, results))
        assert wrapped() == 3
        assert wrapped.statistics.giveups == 1

    def test_on_result_and_exceptions_mix(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Exceptions and rejected results both count as failures of one call."""
        outcomes = iter([OSError(), False, True])

        def fn() -> bool:
            o = next(outcomes)
            if isinstance(o, BaseException):
                raise o
            return o

        wrapped: Any = retry(on_result=lambda ok: not ok, backoff=Constant(0), **path)(fn)
        assert wrapped() is True
        assert wrapped.statistics.retries == 2

    @pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
    def test_base_exceptions_never_caught(
        self, exc: type[BaseException], path: dict[str, Any]
    ) -> None:
        """KeyboardInterrupt, SystemExit and GeneratorExit propagate at once, whatever on= says."""
        for on in (Exception, lambda e: True):
            fn = flaky(3, exc)
            with pytest.raises(exc):
                retry(on=on, sleep=no_sleep, **path)(fn)()
            assert len(fn.calls) == 1  # type: ignore[attr-defined]

    def test_cancelled_error_never_caught(self, path: dict[str, Any]) -> None:
        """asyncio.CancelledError raised in sync code is not retried."""
        fn = flaky(3, asyncio.CancelledError)
        with pytest.raises(asyncio.CancelledError):
            retry(sleep=no_sleep, **path)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "on", [BaseException, KeyboardInterrupt, (OSError, asyncio.CancelledError)]
    )
    def test_base_exception_in_on_refused(self, on: Any) -> None:
        """on= naming a BaseException that is not an Exception raises TypeError naming on."""
        with pytest.raises(TypeError, match="on must name Exception subclasses"):
            Retrying(on=on)


class TestPermanent:
    """Permanent(exc) and permanent_on= stop at once."""

    def test_permanent_reraises_wrapped(self, path: dict[str, Any]) -> None:
        """raise Permanent(exc) gives up at once and re-raises exc itself."""
        inner = ValueError("bad token")
        calls = []

        def fn() -> None:
            calls.append(1)
            raise Permanent(inner)

        wrapped: Any = retry(on=OSError, sleep=no_sleep, **path)(fn)
        with pytest.raises(ValueError) as info:
            wrapped()
        assert info.value is inner
        assert calls == [1]
        assert "gave up after 1 attempt(s) (permanent)" in info.value.__notes__[-1]
        assert wrapped.statistics.giveups == 1

    def test_permanent_after_retries(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """A Permanent raised on a later attempt stops there."""
        outcomes = iter([OSError(), Permanent(KeyError("gone"))])

        def fn() -> None:
            raise next(outcomes)

        with pytest.raises(KeyError):
            retry(backoff=Constant(1), **path)(fn)()
        assert clock.sleeps == [1.0]

    def test_permanent_with_message(self, path: dict[str, Any]) -> None:
        """Permanent("text") raises the Permanent itself."""

        def fn() -> None:
            raise Permanent("no point")

        with pytest.raises(Permanent, match="no point"):
            retry(sleep=no_sleep, **path)(fn)()

    @pytest.mark.parametrize("permanent_on", [PermissionError, (PermissionError, KeyError)])
    def test_permanent_on(self, permanent_on: Any, path: dict[str, Any]) -> None:
        """Exceptions in permanent_on= stop at once even when on= would retry them."""
        fn = flaky(5, PermissionError)
        with pytest.raises(PermissionError):
            retry(on=OSError, permanent_on=permanent_on, sleep=no_sleep, **path)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]


class TestPermanentInChain:
    """A Permanent anywhere in an exception's chain stops at once, as Go's errors.As finds it."""

    def test_raise_from_permanent_gives_up_at_once(self, path: dict[str, Any]) -> None:
        """raise X from Permanent(e) is not retried; X itself is re-raised, chain kept."""
        calls = []

        def fn() -> None:
            calls.append(1)
            raise ConnectionError("refused") from Permanent(ValueError("bad key"))

        wrapped: Any = retry(on=ConnectionError, sleep=no_sleep, **path)(fn)
        with pytest.raises(ConnectionError) as info:
            wrapped()
        assert calls == [1]
        assert isinstance(info.value.__cause__, Permanent)
        assert "(permanent)" in info.value.__notes__[-1]

    def test_permanent_deeper_in_the_chain(self, path: dict[str, Any]) -> None:
        """A Permanent two links down (cause, then implicit context) still stops the retries."""
        calls = []

        def raising() -> None:
            calls.append(1)
            try:
                raise Permanent(KeyError("gone"))
            except Permanent:
                inner = RuntimeError("while looking up")  # implicit __context__ = the Permanent
                try:
                    raise inner
                except RuntimeError as exc:
                    raise OSError("lookup failed") from exc

        with pytest.raises(OSError):
            retry(on=OSError, sleep=no_sleep, **path)(raising)()
        assert calls == [1]

    def test_suppressed_context_is_not_followed(self, path: dict[str, Any]) -> None:
        """raise X from None hides the Permanent it was raised under: X is retried."""
        fn_calls = []

        def fn() -> None:
            fn_calls.append(1)
            try:
                raise Permanent("hidden")
            except Permanent:
                raise ConnectionError("retry me") from None

        with pytest.raises(ConnectionError):
            retry(on=ConnectionError, backoff=Constant(0), stop=after_attempts(3), **path)(fn)()
        assert len(fn_calls) == 3

    def test_cycle_in_the_chain_ends(self, path: dict[str, Any]) -> None:
        """A chain that loops back on itself is walked a bounded number of links."""
        a, b = ConnectionError("a"), ConnectionError("b")
        a.__cause__, b.__cause__ = b, a
        outcomes = iter([a, a])

        def fn() -> str:
            exc = next(outcomes, None)
            if exc is not None:
                raise exc
            return "ok"

        assert retry(on=ConnectionError, backoff=Constant(0), **path)(fn)() == "ok"

    def test_iterator_form(self) -> None:
        """The for-attempt form finds a chained Permanent as well."""
        calls = 0
        with pytest.raises(ConnectionError):
            for attempt in Retrying(backoff=Constant(0), stop=after_attempts(5)):
                with attempt:
                    calls += 1
                    raise ConnectionError("x") from Permanent("stop")
        assert calls == 1


class TestChaining:
    """What a give-up's exception chains to is the same on the lean and the full path."""

    def test_later_failures_chain_to_the_first(self, path: dict[str, Any]) -> None:
        """Retries run while the first failure is handled: the last error's __context__ is it."""
        errors = iter([OSError("1"), OSError("2"), OSError("3")])

        def fn() -> None:
            raise next(errors)

        with pytest.raises(OSError, match="3") as info:
            retry(backoff=Constant(0), stop=after_attempts(3), **path)(fn)()
        assert str(info.value.__context__) == "1"


class TestSignatureKept:
    """A decorated function keeps __defaults__ and __kwdefaults__, as tenacity does."""

    def test_sync_defaults(self, path: dict[str, Any]) -> None:
        """__defaults__ / __kwdefaults__ are copied, and inspect sees them."""

        def fn(a: int, b: int = 2, *, c: str = "x") -> str:
            return f"{a}{b}{c}"

        wrapped: Any = retry(**path)(fn)
        assert wrapped.__defaults__ == (2,)
        assert wrapped.__kwdefaults__ == {"c": "x"}
        assert wrapped(1) == "12x"
        assert inspect.signature(wrapped).parameters["b"].default == 2

    def test_async_defaults(self, path: dict[str, Any]) -> None:
        """The async wrapper copies them too."""

        async def fn(a: int, b: int = 5, *, c: int = 7) -> int:
            return a + b + c

        wrapped: Any = retry(**path)(fn)
        assert wrapped.__defaults__ == (5,)
        assert wrapped.__kwdefaults__ == {"c": 7}
        assert asyncio.run(wrapped(1)) == 13


class TestRetryAfter:
    """An exception's retry_after replaces the backoff delay, bounded by the cap."""

    def test_retry_after_honoured(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """RetryAfter(s) makes the engine wait s seconds instead of the backoff."""
        fn = flaky(2, lambda: RetryAfter(3.0))
        retry(backoff=Constant(0.1, max_delay=10), **path)(fn)()
        assert clock.sleeps == [3.0, 3.0]

    def test_retry_after_capped(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """A retry_after above max_delay waits max_delay."""
        fn = flaky(1, lambda: RetryAfter(120.0))
        retry(backoff=Exponential(0.1, max_delay=5.0), **path)(fn)()
        assert clock.sleeps == [5.0]

    def test_uncapped_backoff_takes_retry_after_whole(self, clock: FakeClock) -> None:
        """With no cap the whole retry_after is waited."""
        fn = flaky(1, lambda: RetryAfter(120.0))
        retry(backoff=Constant(0.1))(fn)()
        assert clock.sleeps == [120.0]

    def test_any_exception_with_retry_after(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Any exception with a numeric retry_after attribute is honoured."""

        class TooManyRequests(Exception):
            retry_after = 2

        fn = flaky(1, TooManyRequests)
        retry(on=TooManyRequests, backoff=Constant(0.5, max_delay=4), **path)(fn)()
        assert clock.sleeps == [2.0]

    def test_non_numeric_retry_after_ignored(self, clock: FakeClock) -> None:
        """A retry_after that is not a number >= 0 falls back to the backoff."""

        class Odd(Exception):
            retry_after = "soon"

        class Negative(Exception):
            retry_after = -5

        outcomes = iter([Odd(), Negative()])

        def fn() -> str:
            e = next(outcomes, None)
            if e is not None:
                raise e
            return "ok"

        retry(backoff=Constant(0.25))(fn)()
        assert clock.sleeps == [0.25, 0.25]

    def test_retry_after_counts_for_stop(self, clock: FakeClock) -> None:
        """A retry_after that would overrun after_elapsed gives up instead of waiting."""
        fn = flaky(1, lambda: RetryAfter(30.0))
        with pytest.raises(RetryAfter):
            retry(backoff=Constant(0.1), stop=after_elapsed(10))(fn)()
        assert clock.sleeps == []

    def test_circuit_open_waits_its_full_time(self, clock: FakeClock) -> None:
        """CircuitOpen's retry_after is waited in full, even above the cap."""
        fn = flaky(1, lambda: CircuitOpen("db", 8.0))
        retry(backoff=Constant(0.1, max_delay=1.0))(fn)()
        assert clock.sleeps == [8.0]

    @pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "3"])
    def test_invalid_retry_after(self, bad: Any) -> None:
        """RetryAfter with a bad number raises ValueError naming seconds."""
        with pytest.raises(ValueError, match="seconds"):
            RetryAfter(bad)


class TestHooks:
    """on_retry, on_giveup, on_success: their states, sync and async, and their errors."""

    def test_on_retry_states(self, clock: FakeClock) -> None:
        """on_retry sees each failed attempt, the elapsed time, the next delay and the exception."""
        seen: list[tuple[Any, ...]] = []
        fn = flaky(2)
        retry(
            backoff=Linear(1.0, 1.0),
            on_retry=lambda s: seen.append(
                (s.attempt, s.elapsed, s.next_delay, s.exception, s.result)
            ),
        )(fn)()
        assert seen == [
            (1, 0.0, 1.0, fn.raised[0], None),  # type: ignore[attr-defined]
            (2, 1.0, 2.0, fn.raised[1], None),  # type: ignore[attr-defined]
        ]

    def test_on_giveup_state(self, clock: FakeClock) -> None:
        """on_giveup sees the attempt count, the wait not taken, the last exception and the reason."""
        seen: list[RetryState] = []
        fn = flaky(9)
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0.5), stop=after_attempts(3), on_giveup=seen.append)(fn)()
        (s,) = seen
        assert (s.attempt, s.elapsed, s.next_delay) == (3, 1.0, 0.5)
        assert s.exception is fn.raised[-1]  # type: ignore[attr-defined]
        assert s.gave_up_because == "stop"
        assert s.name.endswith("fn")
        assert "attempt=3" in repr(s)

    def test_on_giveup_with_rejected_result(self, clock: FakeClock) -> None:
        """When results are rejected, on_giveup's state carries the last result."""
        seen: list[RetryState] = []
        retry(
            on_result=lambda r: True,
            stop=after_attempts(2),
            backoff=Constant(0),
            on_giveup=seen.append,
        )(lambda: "nope")()
        assert (seen[0].result, seen[0].exception) == ("nope", None)

    def test_on_success_state(self, clock: FakeClock) -> None:
        """on_success sees the attempt that succeeded, its result and the time since the start."""
        seen: list[RetryState] = []
        retry(backoff=Constant(1.5), on_success=seen.append)(flaky(2, value=7))()
        (s,) = seen
        assert (s.attempt, s.result, s.next_delay, s.exception) == (3, 7, 0.0, None)
        assert s.elapsed == 3.0

    def test_on_success_first_try(self) -> None:
        """on_success runs on a first-try success too, and on_retry does not."""
        seen: list[str] = []
        retry(on_success=lambda s: seen.append("ok"), on_retry=lambda s: seen.append("retry"))(
            flaky(0)
        )()
        assert seen == ["ok"]

    def test_async_hooks_from_sync_code(self, clock: FakeClock) -> None:
        """Async hooks on a sync function are run to completion."""
        seen: list[str] = []

        async def hook(s: RetryState) -> None:
            await asyncio.sleep(0)
            seen.append(f"retry {s.attempt}")

        async def done(s: RetryState) -> None:
            seen.append("success")

        retry(backoff=Constant(0), on_retry=hook, on_success=done)(flaky(1))()
        assert seen == ["retry 1", "success"]

    @pytest.mark.parametrize("kind", ["sync", "async"])
    def test_raising_hook_logged_and_ignored(
        self, kind: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hook that raises is logged on the resile logger and the loop carries on."""

        def bad_sync(s: RetryState) -> None:
            raise RuntimeError("hook broke")

        async def bad_async(s: RetryState) -> None:
            raise RuntimeError("hook broke")

        bad = bad_sync if kind == "sync" else bad_async
        caplog.set_level(logging.ERROR, logger="resile")
        fn = flaky(2)
        assert retry(backoff=Constant(0), on_retry=bad, on_success=bad)(fn)() == "ok"
        assert len(fn.calls) == 3  # type: ignore[attr-defined]
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0), stop=after_attempts(2), on_giveup=bad)(flaky(5))()
        errors = [r for r in caplog.records if r.name == "resile" and r.levelno == logging.ERROR]
        assert len(errors) == 4
        assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)

    def test_hook_base_exception_not_swallowed(self, clock: FakeClock) -> None:
        """A hook raising KeyboardInterrupt is not swallowed."""

        def hook(s: RetryState) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            retry(backoff=Constant(0), on_retry=hook)(flaky(1))()


class TestGiveUp:
    """What happens when the retries run out."""

    def test_reraises_last_with_note(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """The last exception is re-raised with a PEP 678 note carrying the attempt count."""
        fn = flaky(9, lambda: ConnectionError("still down"))
        wrapped = retry(stop=after_attempts(4), backoff=Constant(0), name="fetch", **path)(fn)
        with pytest.raises(ConnectionError, match="still down") as info:
            wrapped()
        assert info.value is fn.raised[-1]  # type: ignore[attr-defined]
        assert info.value.__notes__ == ["resile: fetch gave up after 4 attempt(s) (stop)"]

    def test_raise_retry_error(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """raise_retry_error=True raises RetryError holding every attempt's outcome."""
        fn = flaky(9)
        with pytest.raises(RetryError) as info:
            retry(stop=after_attempts(3), raise_retry_error=True, **path)(fn)()
        err = info.value
        assert err.attempts == fn.raised  # type: ignore[attr-defined]
        assert err.last is fn.raised[-1]  # type: ignore[attr-defined]
        assert err.__cause__ is fn.raised[-1]  # type: ignore[attr-defined]
        assert "3 attempt(s)" in str(err)
        assert isinstance(err, resile.ResileError)

    def test_raise_retry_error_with_results(self, clock: FakeClock) -> None:
        """RetryError also holds rejected results."""
        results = iter([0, "", None])
        with pytest.raises(RetryError) as info:
            retry(on_result=lambda r: not r, stop=after_attempts(3), raise_retry_error=True)(
                functools.partial(next, results)
            )()
        assert info.value.attempts == [0, "", None]

    def test_fallback(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """fallback=f returns f(state) instead of raising."""
        seen: list[RetryState] = []

        def fallback(s: RetryState) -> str:
            seen.append(s)
            return "cached"

        fn = flaky(9)
        wrapped: Any = retry(
            stop=after_attempts(2), backoff=Constant(1), fallback=fallback, **path
        )(fn)
        assert wrapped() == "cached"
        assert seen[0].attempt == 2
        assert seen[0].exception is fn.raised[-1]  # type: ignore[attr-defined]
        assert wrapped.statistics.giveups == 1


class TestWaits:
    """Waits: the strategy's delays, injected sleeps, and no sleep for a zero delay."""

    def test_zero_delay_calls_no_sleep(self, path: dict[str, Any]) -> None:
        """A zero delay does not call sleep at all."""
        fn = flaky(3)
        wrapped: Any = retry(backoff=Constant(0), sleep=no_sleep, **path)(fn)
        assert wrapped() == "ok"
        assert wrapped.statistics.waited == 0.0

    def test_zero_delay_records_nothing(self, clock: FakeClock) -> None:
        """Under no_waits a zero delay records no wait."""
        retry(backoff=Constant(0))(flaky(3))()
        assert clock.sleeps == []

    def test_injected_sleep(self, path: dict[str, Any]) -> None:
        """sleep= receives each delay of the strategy."""
        slept: list[float] = []
        retry(backoff=Exponential(1.0, jitter="none"), sleep=slept.append, **path)(flaky(3))()
        assert slept == [1.0, 2.0, 4.0]

    def test_waits_follow_the_strategy(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Under no_waits, the recorded waits are the strategy's delays, capped."""
        with pytest.raises(ConnectionError):
            retry(
                backoff=Exponential(0.5, 3.0, max_delay=5.0, jitter="none"),
                stop=after_attempts(5),
                **path,
            )(flaky(9))()
        assert clock.sleeps == [0.5, 1.5, 4.5, 5.0]

    def test_seeded_jitter_reproducible(self, clock: FakeClock) -> None:
        """Two runs with one seeded strategy wait the same (fresh copies of the seed)."""
        runs = []
        for _ in range(2):
            with no_waits() as c, pytest.raises(ConnectionError):
                retry(backoff=Exponential(0.1, seed=5))(flaky(9))()
            runs.append(c.sleeps)
        assert runs[0] == runs[1]
        assert len(runs[0]) == 4


class TestDeadline:
    """The engine never starts a wait it cannot finish before the deadline."""

    def test_enclosing_deadline(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Inside with deadline(1.0), waits of 0.4 s stop before the third would end past it."""
        seen: list[RetryState] = []
        fn = flaky(9)
        with deadline(1.0), pytest.raises(ConnectionError) as info:
            retry(backoff=Constant(0.4), stop=after_attempts(99), on_giveup=seen.append, **path)(
                fn
            )()
        assert clock.sleeps == [0.4, 0.4]
        assert seen[0].gave_up_because == "deadline"
        assert "(deadline)" in info.value.__notes__[-1]

    def test_timeout_argument(self, clock: FakeClock) -> None:
        """timeout= sets a deadline around the whole call."""
        fn = flaky(9)
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(2.0), stop=after_attempts(99), timeout=5.0)(fn)()
        assert clock.sleeps == [2.0, 2.0]

    def test_timeout_sees_time_spent_in_attempts(self, clock: FakeClock) -> None:
        """Time spent inside attempts counts against timeout=."""

        def slow() -> None:
            clock.advance(3.0)
            raise OSError

        with pytest.raises(OSError):
            retry(backoff=Constant(1.0), stop=after_attempts(99), timeout=5.0)(slow)()
        assert clock.sleeps == [1.0]

    def test_function_sees_the_deadline(self, clock: FakeClock) -> None:
        """Inside a call with timeout=, remaining() gives the time left."""
        left: list[float | None] = []

        @retry(timeout=4.0)
        def f() -> None:
            left.append(resile.remaining())

        f()
        assert left == [4.0]

    def test_timeout_longer_than_enclosing(self, clock: FakeClock) -> None:
        """A timeout= longer than the enclosing deadline cannot extend it."""
        with deadline(1.0), pytest.raises(OSError):
            retry(backoff=Constant(0.6), stop=after_attempts(99), timeout=60)(flaky(9, OSError))()
        assert clock.sleeps == [0.6]

    def test_retry_after_past_deadline(self, clock: FakeClock) -> None:
        """A retry_after that would end past the deadline gives up without waiting."""
        with deadline(10.0), pytest.raises(RetryAfter):
            retry(backoff=Constant(0.1))(flaky(1, lambda: RetryAfter(20.0)))()
        assert clock.sleeps == []

    def test_zero_timeout_full_path(self, clock: FakeClock) -> None:
        """timeout=0 leaves no time for any retry."""
        fn = flaky(9)
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0), timeout=0, on_success=lambda s: None)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]

    def test_zero_timeout_lean_path(self, clock: FakeClock) -> None:
        """timeout=0 leaves no time for any retry, on the lean path too."""
        fn = flaky(9)
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0), timeout=0)(fn)()
        assert len(fn.calls) == 1  # type: ignore[attr-defined]

    def test_passed_deadline_stops_zero_delay_retries(self, clock: FakeClock) -> None:
        """Even zero-delay retries stop once the deadline has passed."""

        def slow() -> None:
            clock.advance(1.0)
            raise OSError

        with deadline(2.5), pytest.raises(OSError):
            retry(backoff=Constant(0), stop=after_attempts(99))(slow)()
        assert clock.now == pytest.approx(1003.0)


class TestStatistics:
    """Per-function counters: calls, attempts, retries, give-ups, time waited."""

    def test_counters(self, clock: FakeClock, path: dict[str, Any]) -> None:
        """Each call, attempt, retry, give-up and wait is counted."""
        wrapped: Any = retry(backoff=Constant(0.5), stop=after_attempts(3), **path)(flaky(4))
        with pytest.raises(ConnectionError):
            wrapped()  # 3 attempts, gives up
        assert wrapped() == "ok"  # 4th failure, then success: 2 attempts
        assert wrapped() == "ok"  # first try
        stats = wrapped.statistics
        assert (stats.calls, stats.attempts, stats.retries, stats.giveups) == (3, 6, 3, 1)
        assert stats.waited == 1.5
        assert stats.as_dict() == {
            "calls": 3,
            "attempts": 6,
            "retries": 3,
            "giveups": 1,
            "waited": 1.5,
        }
        assert (
            repr(stats)
            == "RetryStatistics(calls=3, attempts=6, retries=3, giveups=1, waited=1.500)"
        )

    def test_non_retryable_counts_a_call_only(self, path: dict[str, Any]) -> None:
        """An exception outside on= counts a call and no retry or give-up."""
        wrapped: Any = retry(on=OSError, **path)(flaky(1, KeyError))
        with pytest.raises(KeyError):
            wrapped()
        assert (wrapped.statistics.calls, wrapped.statistics.retries) == (1, 0)


class TestLogging:
    """Retries and give-ups are logged on the "resile" logger with structured extra fields."""

    def test_retry_and_giveup_records(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture, path: dict[str, Any]
    ) -> None:
        """Each retry logs INFO, the give-up logs WARNING, with resile_* fields."""
        caplog.set_level(logging.INFO, logger="resile")
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0.25), stop=after_attempts(2), name="op", **path)(
                flaky(5, lambda: ConnectionError("x"))
            )()
        records = [r for r in caplog.records if r.name == "resile"]
        assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
        info, warning = records
        assert info.resile_name == "op"  # type: ignore[attr-defined]
        assert info.resile_attempt == 1  # type: ignore[attr-defined]
        assert info.resile_delay == 0.25  # type: ignore[attr-defined]
        assert info.resile_error == "ConnectionError('x')"  # type: ignore[attr-defined]
        assert "retrying in 0.250 s" in info.getMessage()
        assert warning.resile_attempt == 2  # type: ignore[attr-defined]
        assert warning.resile_reason == "stop"  # type: ignore[attr-defined]
        assert "giving up after 2 attempt(s)" in warning.getMessage()

    def test_quiet_logs_neither_retries_nor_giveup(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture, path: dict[str, Any]
    ) -> None:
        """quiet=True (the stores' own retrying): no record, the error still raised."""
        caplog.set_level(logging.DEBUG, logger="resile")
        with pytest.raises(ConnectionError):
            retry(backoff=Constant(0.25), stop=after_attempts(3), quiet=True, **path)(
                flaky(5, lambda: ConnectionError("x"))
            )()
        assert [r for r in caplog.records if r.name == "resile"] == []
        assert Retrying(quiet=True).copy().quiet is True

    def test_success_logs_nothing(
        self, caplog: pytest.LogCaptureFixture, path: dict[str, Any]
    ) -> None:
        """A first-try success writes no log record."""
        caplog.set_level(logging.DEBUG, logger="resile")
        retry(**path)(flaky(0))()
        assert [r for r in caplog.records if r.name == "resile"] == []

    def test_library_logger_has_null_handler(self) -> None:
        """Importing resile adds a NullHandler and nothing that prints."""
        handlers = logging.getLogger("resile").handlers
        assert any(isinstance(h, logging.NullHandler) for h in handlers)
        assert all(isinstance(h, logging.NullHandler) for h in handlers)


class TestIterator:
    """for attempt in Retrying(...): with attempt: ..."""

    def test_retries_block(self, clock: FakeClock) -> None:
        """The block runs until it raises nothing retryable."""
        numbers = []
        fn = flaky(2)
        for attempt in Retrying(backoff=Constant(1.0)):
            with attempt:
                numbers.append(attempt.number)
                fn()
        assert numbers == [1, 2, 3]
        assert clock.sleeps == [1.0, 1.0]

    def test_gives_up_from_the_for(self, clock: FakeClock) -> None:
        """On give-up the last exception is raised from the for statement, with a note."""
        policy = Retrying(backoff=Constant(0), stop=after_attempts(3), name="block")
        fn = flaky(9)
        with pytest.raises(ConnectionError) as info:
            for attempt in policy:
                with attempt:
                    fn()
        assert len(fn.calls) == 3  # type: ignore[attr-defined]
        assert info.value.__notes__ == ["resile: block gave up after 3 attempt(s) (stop)"]
        assert (policy.statistics.calls, policy.statistics.giveups) == (1, 1)

    def test_non_retryable_propagates(self) -> None:
        """An exception outside on= leaves the loop at once."""
        count = 0
        with pytest.raises(KeyError):
            for attempt in Retrying(on=OSError, sleep=no_sleep):
                with attempt:
                    count += 1
                    raise KeyError
        assert count == 1

    def test_set_result_with_on_result(self, clock: FakeClock) -> None:
        """set_result feeds on_result: a rejected value makes another attempt."""
        values = iter([0, 0, 5])
        got = []
        for attempt in Retrying(on_result=lambda v: v == 0, backoff=Constant(0)):
            with attempt:
                v = next(values)
                attempt.set_result(v)
                got.append(v)
        assert got == [0, 0, 5]

    def test_hooks_and_repr(self, clock: FakeClock) -> None:
        """Hooks run in the iterator form; an attempt has a readable repr."""
        seen: list[str] = []
        fn = flaky(1)
        for attempt in Retrying(
            backoff=Constant(0),
            on_retry=lambda s: seen.append(f"retry {s.attempt}"),
            on_success=lambda s: seen.append(f"success {s.attempt}"),
        ):
            with attempt:
                assert repr(attempt) == f"<AttemptManager number={attempt.number}>"
                fn()
        assert seen == ["retry 1", "success 2"]

    def test_base_exception_leaves_the_loop(self) -> None:
        """KeyboardInterrupt inside the block is not swallowed."""
        with pytest.raises(KeyboardInterrupt):
            for attempt in Retrying(sleep=no_sleep):
                with attempt:
                    raise KeyboardInterrupt

    def test_deadline_in_iterator(self, clock: FakeClock) -> None:
        """The iterator form honours an enclosing deadline."""
        with deadline(1.0), pytest.raises(OSError):
            for attempt in Retrying(backoff=Constant(0.3), stop=after_attempts(99)):
                with attempt:
                    raise OSError
        assert clock.sleeps == [0.3, 0.3, 0.3]


class TestBudget:
    """A shared RetryBudget stops retries while it is drained."""

    def test_drained_budget_gives_up(self, clock: FakeClock) -> None:
        """Once more than half the bucket is spent, calls give up with reason "budget"."""
        budget = RetryBudget(max_tokens=4, token_ratio=1)
        seen: list[RetryState] = []
        fn = flaky(99)
        with pytest.raises(ConnectionError):
            retry(
                backoff=Constant(0), stop=after_attempts(99), budget=budget, on_giveup=seen.append
            )(fn)()
        # tokens 4 -> 3 (retry allowed) -> 2 (not above half): two attempts.
        assert len(fn.calls) == 2  # type: ignore[attr-defined]
        assert seen[0].gave_up_because == "budget"


class TestValidation:
    """Bad arguments raise TypeError or ValueError naming the field."""

    @pytest.mark.parametrize(
        ("kwargs", "exc", "field"),
        [
            ({"on": "OSError"}, TypeError, "on"),
            ({"on": (OSError, "x")}, TypeError, "on"),
            ({"on": 3}, TypeError, "on"),
            ({"permanent_on": "x"}, TypeError, "permanent_on"),
            ({"permanent_on": (KeyError, 1)}, TypeError, "permanent_on"),
            ({"backoff": 1.0}, TypeError, "backoff"),
            ({"stop": 3}, TypeError, "stop"),
            ({"on_retry": 1}, TypeError, "on_retry"),
            ({"on_giveup": "x"}, TypeError, "on_giveup"),
            ({"on_success": 2}, TypeError, "on_success"),
            ({"on_result": True}, TypeError, "on_result"),
            ({"fallback": 0}, TypeError, "fallback"),
            ({"sleep": 1}, TypeError, "sleep"),
            ({"async_sleep": 1}, TypeError, "async_sleep"),
            ({"budget": object()}, TypeError, "budget"),
            ({"timeout": -1}, ValueError, "timeout"),
            ({"timeout": float("nan")}, ValueError, "timeout"),
            ({"timeout": "5"}, TypeError, "timeout"),
            ({"attempt_timeout": float("inf")}, ValueError, "attempt_timeout"),
            ({"colour": "red"}, TypeError, "colour"),
        ],
    )
    def test_bad_argument(self, kwargs: dict[str, Any], exc: type[Exception], field: str) -> None:
        """The error names the field."""
        with pytest.raises(exc, match=field):
            Retrying(**kwargs)
        with pytest.raises(exc, match=field):
            retry(**kwargs)

    def test_copy(self) -> None:
        """copy() changes some fields and starts fresh statistics."""
        a = Retrying(stop=after_attempts(2), name="a")
        a.statistics.calls = 5
        b = a.copy(stop=after_attempts(7))
        assert b.stop == after_attempts(7)
        assert b.name == "a"
        assert b.statistics.calls == 0
        assert "after_attempts(2)" in repr(a)


class TestDocsExample:
    """docs/examples/retry_flaky.py runs and shows what docs/retry.md says."""

    def test_example_runs(self, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
        """The example retries fetch three times, pings until True, and shows a give-up note."""
        example = load_example("retry_flaky.py")
        example["main"]()
        out = capsys.readouterr().out
        assert out.count("failed (ConnectionError") == 3
        assert "fetch -> b'hello'" in out
        assert "'retries': 3" in out
        assert "ping -> True" in out
        assert "block attempt 1" in out
        assert "gave up: still down | resile: always_down gave up after 2 attempt(s) (stop)" in out
        assert len(clock.sleeps) == 5
