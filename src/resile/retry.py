"""The retry engine: one policy object, one loop of steps, a sync and an async driver.

``Retrying`` holds a policy (what to retry, how long to wait, when to stop,
which hooks to call). It is used three ways:

* as a decorator: ``@retry(...)`` / ``@Retrying(...)`` on sync or async
  functions (detected automatically; the signature is kept);
* as an iterator over attempts: ``for attempt in Retrying(...): with attempt: ...``;
* as an async iterator: ``async for attempt in Retrying(...): with attempt: ...``
  (``async with attempt:`` too).

All three run one loop, ``Retrying._steps``: a generator that yields what to
do next (make an attempt, sleep, call a hook) and books every success and
failure; the decision after a failure is ``_Call.failed``. The drivers only
carry the steps out: the decorator's sync and async loops make each attempt
with a ``try``/``except``; the iterator forms hand an ``AttemptManager`` to the
block (``_sync_steps``, ``_AsyncSteps``).

The success path of a decorated call does no more than a hand-written
``try``/``except``: no clock read (unless a stop condition or hook needs the
elapsed time), no allocation, no sleep. A zero delay calls no sleep at all.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from resile import _aio, _time, _util, instrument
from resile.backoff import Backoff, Exponential
from resile.deadline import deadline
from resile.errors import CircuitOpen, Permanent, RetryError
from resile.stop import Stop, after_attempts

__all__ = [
    "AttemptManager",
    "RetryBudgetLike",
    "RetryState",
    "RetryStatistics",
    "Retrying",
    "retry",
]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("resile")

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
RetryOn = ExcTypes | Callable[[BaseException], bool]
Hook = Callable[["RetryState"], Any]

DEFAULT_BACKOFF = Exponential(0.1, max_delay=5.0)
DEFAULT_STOP = after_attempts(5)


class RetryBudgetLike(Protocol):
    """What the engine asks of a retry budget (``resile.budget.RetryBudget``)."""

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...

    def can_retry(self) -> bool: ...


class RetryState:
    """What a hook or a fallback is told about the call.

    Attributes:
        name: the qualified name of the retried function (or ``Retrying.name``).
        attempt: attempts made so far, counted from 1.
        elapsed: seconds since the first attempt started.
        next_delay: the wait before the next attempt (0.0 on success; on
            give-up, the wait that was not taken).
        exception: the last attempt's exception, or ``None``.
        result: the last attempt's result (a rejected one, on give-up), or ``None``.
        gave_up_because: on give-up, why: ``"stop"``, ``"deadline"``,
            ``"permanent"``, ``"budget"``; ``None`` otherwise.
    """

    __slots__ = (
        "attempt",
        "elapsed",
        "exception",
        "gave_up_because",
        "name",
        "next_delay",
        "result",
    )

    def __init__(
        self,
        name: str,
        attempt: int,
        elapsed: float,
        next_delay: float,
        exception: BaseException | None,
        result: Any,
        gave_up_because: str | None = None,
    ) -> None:
        self.name = name
        self.attempt = attempt
        self.elapsed = elapsed
        self.next_delay = next_delay
        self.exception = exception
        self.result = result
        self.gave_up_because = gave_up_because

    def __repr__(self) -> str:
        outcome = f"exception={self.exception!r}" if self.exception else f"result={self.result!r}"
        return (
            f"RetryState(name={self.name!r}, attempt={self.attempt}, elapsed={self.elapsed:.6f}, "
            f"next_delay={self.next_delay:.6f}, {outcome})"
        )


class RetryStatistics:
    """Counters of one policy (one decorated function), since it was made.

    Attributes:
        calls: calls started (or ``Retrying`` loops entered).
        attempts: attempts made (calls plus retries).
        retries: attempts that were retries.
        giveups: calls that ended by giving up.
        waited: seconds spent waiting between attempts.

    Counters are updated without a lock: under heavy thread contention they
    may undercount by a few; they never block a call.
    """

    __slots__ = ("calls", "giveups", "retries", "waited")

    def __init__(self) -> None:
        self.calls = 0
        self.retries = 0
        self.giveups = 0
        self.waited = 0.0

    @property
    def attempts(self) -> int:
        return self.calls + self.retries

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "retries": self.retries,
            "giveups": self.giveups,
            "waited": self.waited,
        }

    def __repr__(self) -> str:
        return (
            f"RetryStatistics(calls={self.calls}, attempts={self.attempts}, "
            f"retries={self.retries}, giveups={self.giveups}, waited={self.waited:.3f})"
        )


def _is_exc_type(x: object) -> bool:
    return isinstance(x, type) and issubclass(x, BaseException)


def _check_hook(value: object, field: str) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"Retrying: {field} must be callable or None, got {value!r}")
    return value


class Retrying:
    """A retry policy: decorate a function with it, or iterate over its attempts.

    Args:
        on: what to retry: an exception type, a tuple of them, or a predicate
            ``exc -> bool``. Default: ``Exception``. A ``CircuitOpen`` from a
            breaker inside is always waited out until its probe time (when
            that fits the stop condition and the deadline), whatever ``on`` says.
        on_result: a predicate ``result -> bool``; ``True`` means the result
            is a failure to retry (``lambda ok: not ok`` retries falsy results).
        permanent_on: exception types that stop retrying at once (as raising
            ``Permanent(exc)`` does).
        backoff: the delay strategy. Default: ``Exponential(0.1, max_delay=5.0)``
            with full jitter.
        stop: when to give up. Default: ``after_attempts(5)``.
        timeout: a total deadline for the whole call, in seconds: sets a
            ``resile.deadline`` around it (async calls are canceled when it
            passes).
        attempt_timeout: a deadline for each attempt (async functions only):
            an attempt that overruns is canceled and counts as a
            ``DeadlineExceeded`` failure.
        on_retry, on_giveup, on_success: hooks, sync or async, each given a
            ``RetryState``. An error in a hook is logged and ignored.
        raise_retry_error: on give-up raise ``RetryError`` with every
            attempt's outcome, instead of re-raising the last exception (or
            returning the last rejected result).
        fallback: on give-up, return ``fallback(state)`` instead of raising.
        budget: a ``RetryBudget`` shared by many calls; retries stop while it
            is drained.
        name: the name used in logs, notes and states (default: the
            function's qualified name).
        sleep, async_sleep: replace the waits (default: resile's clock,
            which ``resile.testing`` can swap for a fake one).
        quiet: log neither the retries (INFO) nor the give-up (WARNING) on the
            ``resile`` logger: for a caller that reports the outcome itself
            (the task stores, whose error says what happened).

    Raises:
        TypeError: a field of the wrong kind, named in the message.
        ValueError: a timeout that is negative, NaN or infinite.
    """

    def __init__(
        self,
        *,
        on: RetryOn = Exception,
        on_result: Callable[[Any], bool] | None = None,
        permanent_on: ExcTypes = (),
        backoff: Backoff = DEFAULT_BACKOFF,
        stop: Stop = DEFAULT_STOP,
        timeout: float | timedelta | None = None,
        attempt_timeout: float | timedelta | None = None,
        on_retry: Hook | None = None,
        on_giveup: Hook | None = None,
        on_success: Hook | None = None,
        raise_retry_error: bool = False,
        fallback: Callable[[RetryState], Any] | None = None,
        budget: RetryBudgetLike | None = None,
        name: str | None = None,
        sleep: Callable[[float], None] | None = None,
        async_sleep: Callable[[float], Awaitable[None]] | None = None,
        quiet: bool = False,
    ) -> None:
        if _is_exc_type(on):
            self._catch: tuple[type[BaseException], ...] = (on, Permanent, CircuitOpen)  # type: ignore[assignment]
            self._predicate: Callable[[BaseException], bool] | None = None
        elif isinstance(on, tuple) and all(_is_exc_type(t) for t in on):
            self._catch = (*on, Permanent, CircuitOpen)
            self._predicate = None
        elif callable(on):
            self._catch = (Exception,)
            self._predicate = on  # type: ignore[assignment]
        else:
            raise TypeError(
                f"Retrying: on must be an exception type, a tuple of them or a predicate, got {on!r}"
            )
        for t in self._catch:
            if not issubclass(t, Exception):
                # Retrying these would swallow Ctrl-C, sys.exit() and task cancellation.
                raise TypeError(
                    f"Retrying: on must name Exception subclasses, got {t.__name__} in {on!r}; "
                    "KeyboardInterrupt, SystemExit and cancellation are never retried"
                )
        if _is_exc_type(permanent_on):
            permanent_on = (permanent_on,)  # type: ignore[assignment]
        if not isinstance(permanent_on, tuple) or not all(_is_exc_type(t) for t in permanent_on):
            raise TypeError(
                f"Retrying: permanent_on must be an exception type or a tuple of them, got {permanent_on!r}"
            )
        if not isinstance(backoff, Backoff):
            raise TypeError(f"Retrying: backoff must be a resile.backoff strategy, got {backoff!r}")
        if not isinstance(stop, Stop):
            raise TypeError(f"Retrying: stop must be a resile.stop condition, got {stop!r}")
        for field, hook in (("on_retry", on_retry), ("on_giveup", on_giveup),
                            ("on_success", on_success), ("on_result", on_result),
                            ("fallback", fallback), ("sleep", sleep),
                            ("async_sleep", async_sleep)):  # fmt: skip
            _check_hook(hook, field)
        if budget is not None and not all(
            callable(getattr(budget, m, None))
            for m in ("record_success", "record_failure", "can_retry")
        ):
            raise TypeError(f"Retrying: budget must be a resile.RetryBudget, got {budget!r}")
        self.on = on
        self.on_result = on_result
        self.permanent_on: tuple[type[BaseException], ...] = permanent_on
        self.backoff = backoff
        self.stop = stop
        self.timeout = None if timeout is None else _time.seconds(timeout, "timeout", "Retrying")
        self.attempt_timeout = (
            None
            if attempt_timeout is None
            else _time.seconds(attempt_timeout, "attempt_timeout", "Retrying")
        )
        self.on_retry = on_retry
        self.on_giveup = on_giveup
        self.on_success = on_success
        self.raise_retry_error = bool(raise_retry_error)
        self.fallback = fallback
        self.budget = budget
        self.name = name or "retrying"
        self._named = name is not None
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.quiet = bool(quiet)
        self.statistics = RetryStatistics()
        # Read the clock at the start only when something will look at the elapsed time.
        self._timed = bool(stop.needs_clock or on_retry or on_giveup or on_success or fallback)
        self._cap = math.inf if backoff.max_delay is None else backoff.max_delay
        # What an exception class means to this policy, worked out once per class.
        self._kinds: dict[type[BaseException], int] = {}

    def copy(self, **changes: Any) -> Retrying:
        """A new policy with some fields changed (fresh statistics)."""
        fields: dict[str, Any] = {
            "on": self.on, "on_result": self.on_result, "permanent_on": self.permanent_on,
            "backoff": self.backoff, "stop": self.stop, "timeout": self.timeout,
            "attempt_timeout": self.attempt_timeout, "on_retry": self.on_retry,
            "on_giveup": self.on_giveup, "on_success": self.on_success,
            "raise_retry_error": self.raise_retry_error, "fallback": self.fallback,
            "budget": self.budget, "name": self.name if self._named else None,
            "sleep": self.sleep, "async_sleep": self.async_sleep, "quiet": self.quiet,
        }  # fmt: skip
        fields.update(changes)
        return Retrying(**fields)

    def __repr__(self) -> str:
        return (
            f"Retrying(name={self.name!r}, on={self.on!r}, backoff={self.backoff!r}, "
            f"stop={self.stop!r}, timeout={self.timeout!r})"
        )

    # -- the decorator -----------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Wrap ``fn`` (sync or async) so that each call retries under this policy.

        The wrapper exposes ``.retrying`` (this policy, with its own
        statistics) and ``.statistics``.
        """
        if not callable(fn):
            raise TypeError(f"Retrying: expected a function to wrap, got {fn!r}")
        r = self if self._named else self.copy(name=getattr(fn, "__qualname__", repr(fn)))
        wrapper: Any = r._wrap_async(fn) if inspect.iscoroutinefunction(fn) else r._wrap_sync(fn)
        wrapper.retrying = r
        wrapper.statistics = r.statistics
        return wrapper  # type: ignore[no-any-return]

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        if self.attempt_timeout is not None:
            raise ValueError(
                f"Retrying: attempt_timeout={self.attempt_timeout!r} needs an async function "
                f"(a sync call cannot be interrupted); {fn!r} is sync: use timeout= or "
                "resile.deadline instead"
            )
        r = self
        catch = self._catch
        on_result = self.on_result
        stats = self.statistics
        plain = not (
            self._timed
            or self.timeout is not None
            or self._predicate
            or self.on_success
            or self.budget
        )

        @functools.wraps(fn, _util.WRAPPED)
        def fast(*args: P.args, **kwargs: P.kwargs) -> R:
            stats.calls += 1
            try:
                result = fn(*args, **kwargs)
            except catch as exc:
                return r._slow_sync(fn, args, kwargs, _Call(r, None, exc, None))
            if on_result is not None and on_result(result):
                return r._slow_sync(fn, args, kwargs, _Call(r, None, None, result))
            return result

        if plain:
            return fast

        @functools.wraps(fn, _util.WRAPPED)
        def full(*args: P.args, **kwargs: P.kwargs) -> R:
            if r.timeout is not None:
                with deadline(r.timeout):
                    return r._run_sync(fn, args, kwargs)
            return r._run_sync(fn, args, kwargs)

        return full

    def _run_sync(self, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
        self.statistics.calls += 1
        call = _Call(self, _time.clock.monotonic() if self._timed else None, None, None)
        try:
            result = fn(*args, **kwargs)
        except self._catch as exc:
            call.exc = exc
            # Retried inside the handler, as on the lean path: later failures chain to this one.
            return self._slow_sync(fn, args, kwargs, call)
        call.pending = False
        call.success(result)
        return self._slow_sync(fn, args, kwargs, call)

    def _slow_sync(self, fn: Callable[..., R], args: Any, kwargs: Any, call: _Call) -> R:
        # The decorator drives the steps itself: a try/except is cheaper than ``with attempt``.
        catch = self._catch
        for kind, arg in self._steps(call, True):
            if kind != _ATTEMPT:
                self._step_sync(kind, arg)
                continue
            try:
                result = fn(*args, **kwargs)
            except catch as exc:
                call.exc = exc  # call.failure(exc), inlined: the failure path is measured
                call.pending = True
            else:
                call.success(result)
        return call.value  # type: ignore[no-any-return]

    def _wrap_async(self, fn: Callable[P, R]) -> Callable[P, R]:
        r = self
        catch = self._catch
        on_result = self.on_result
        stats = self.statistics
        afn: Callable[..., Awaitable[Any]] = fn  # type: ignore[assignment]
        plain = not (
            self._timed
            or self.timeout is not None
            or self.attempt_timeout is not None
            or self._predicate
            or self.on_success
            or self.budget
        )

        @functools.wraps(fn, _util.WRAPPED)
        async def fast(*args: Any, **kwargs: Any) -> Any:
            stats.calls += 1
            try:
                result = await afn(*args, **kwargs)
            except catch as exc:
                return await r._slow_async(afn, args, kwargs, _Call(r, None, exc, None))
            if on_result is not None and on_result(result):
                return await r._slow_async(afn, args, kwargs, _Call(r, None, None, result))
            return result

        @functools.wraps(fn, _util.WRAPPED)
        async def full(*args: Any, **kwargs: Any) -> Any:
            if r.timeout is not None:
                async with deadline(r.timeout):
                    return await r._run_async(afn, args, kwargs)
            return await r._run_async(afn, args, kwargs)

        return fast if plain else full  # type: ignore[return-value]

    async def _run_async(self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        self.statistics.calls += 1
        call = _Call(self, _time.clock.monotonic() if self._timed else None, None, None)
        try:
            if self.attempt_timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await self._limited(fn, args, kwargs)
        except self._catch as exc:
            call.exc = exc
            return await self._slow_async(fn, args, kwargs, call)
        call.pending = False
        call.success(result)
        return await self._slow_async(fn, args, kwargs, call)

    async def _limited(self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        """One attempt under ``attempt_timeout``."""
        async with deadline(self.attempt_timeout):
            return await fn(*args, **kwargs)

    async def _slow_async(
        self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any, call: _Call
    ) -> Any:
        catch = self._catch
        limit = self.attempt_timeout
        for kind, arg in self._steps(call, True):
            if kind != _ATTEMPT:
                await self._step_async(kind, arg)
                continue
            try:
                if limit is None:
                    result = await fn(*args, **kwargs)
                else:
                    result = await self._limited(fn, args, kwargs)
            except catch as exc:
                call.exc = exc  # call.failure(exc), inlined: the failure path is measured
                call.pending = True
            else:
                call.success(result)
        return call.value

    # -- the iterator forms --------------------------------------------------------------

    def __iter__(self) -> Iterator[AttemptManager]:
        """Attempts of a block of code: ``for attempt in policy: with attempt: ...``.

        The loop ends after the first attempt that raises nothing retryable
        (and whose ``set_result`` value, if any, passes ``on_result``). On
        give-up the last exception is re-raised from the ``for`` statement;
        with ``fallback=`` (or a rejected result) the loop just ends and
        ``attempt.value`` holds the final value. ``timeout=`` bounds the waits
        (no wait starts that would end past it); the block itself is not
        interrupted — wrap it in ``resile.deadline`` for that.
        """
        return self._sync_steps(self._loop_call())

    def _loop_call(self) -> _Call:
        self.statistics.calls += 1
        now = _time.clock.monotonic() if (self._timed or self.timeout is not None) else None
        call = _Call(self, now, None, None)
        call.pending = False
        if self.timeout is not None and now is not None:
            call.deadline = now + self.timeout
        return call

    def __aiter__(self) -> AsyncIterator[AttemptManager]:
        """Async attempts: ``async for attempt in policy: with attempt: ...`` (as ``__iter__``);
        ``async with attempt:`` works too."""
        return _AsyncSteps(self, self._loop_call())

    def _steps(self, call: _Call, made: bool = False) -> Iterator[tuple[int, Any]]:
        """The one attempt loop, for both colours: what to do next, as steps.

        Yields ``(_ATTEMPT, None)`` when an attempt is due (the driver makes
        it and records its outcome with ``call.failure`` / ``call.success``),
        ``(_SLEEP, seconds)`` and ``(_HOOK, (hook, state))`` (the driver does
        them: ``_step_sync`` / ``_step_async``). It ends after a success, or
        raises (or ends) on give-up. Success and failure are booked here only.
        ``made``: the first attempt has been made already, its outcome is in ``call``.
        """
        stats = self.statistics
        while True:
            if made:
                if not call.pending:
                    break
                delay = call.failed()
                if delay is None:
                    if self.on_giveup is not None:
                        yield _HOOK, (self.on_giveup, call.state(call.next_delay))
                    call.give_up()
                    return
                if self.on_retry is not None:
                    yield _HOOK, (self.on_retry, call.state(delay))
                if delay > 0.0:
                    yield _SLEEP, delay
                    stats.waited += delay
                stats.retries += 1
                if instrument.wants[_RETRY_ATTEMPT]:
                    instrument.emit(
                        instrument.RetryEvent(_RETRY_ATTEMPT, self.name, call.attempts + 1)
                    )
            made = True
            call.exc = None
            call.result = None
            call.pending = False
            yield _ATTEMPT, None
        if self.budget is not None:
            self.budget.record_success()
        if self.on_success is not None:
            yield _HOOK, (self.on_success, call.state(0.0, succeeded=True))
        call.value = call.result

    def _step_sync(self, kind: int, arg: Any) -> None:
        """Do a sleep or a hook step in sync code."""
        if kind == _SLEEP:
            (self.sleep or _time.clock.sleep)(arg)
        else:
            _aio.emit_sync(*arg)

    async def _step_async(self, kind: int, arg: Any) -> None:
        """Do a sleep or a hook step in async code."""
        if kind == _SLEEP:
            await (self.async_sleep or _time.clock.async_sleep)(arg)
        else:
            await _aio.emit_async(*arg)

    def _sync_steps(self, call: _Call) -> Iterator[AttemptManager]:
        """The iterator form's driver of ``_steps``: hands each attempt out to the block."""
        for kind, arg in self._steps(call):
            if kind == _ATTEMPT:
                yield AttemptManager(call)
            else:
                self._step_sync(kind, arg)


class AttemptManager:
    """One attempt of a ``Retrying`` loop; use it as ``with attempt:`` (or ``async with``).

    A retryable exception raised in the block is recorded and swallowed, so
    the loop goes on to the next attempt (or gives up, re-raising it). Other
    exceptions propagate at once.
    """

    __slots__ = ("_call", "number")

    def __init__(self, call: _Call) -> None:
        self._call = call
        self.number = call.attempts + 1

    @property
    def value(self) -> Any:
        """After the loop: the final value (the last result, or ``fallback``'s on give-up)."""
        return self._call.value

    def set_result(self, value: Any) -> None:
        """Record the block's result, for ``on_result`` and the decorator's return value."""
        self._call.success(value)

    def __enter__(self) -> AttemptManager:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if e is None:
            return False
        call = self._call
        if isinstance(e, call.policy._catch):
            call.failure(e)
            return True
        return False

    async def __aenter__(self) -> AttemptManager:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self.__exit__(et, e, tb)

    def __repr__(self) -> str:
        return f"<AttemptManager number={self.number}>"


class _AsyncSteps:
    """The async iterator form's driver of ``Retrying._steps``: an iterator object, not an
    async generator, because trio warns (ResourceWarning) about every async generator
    collected unexhausted, i.e. whenever a non-retryable exception or a ``return`` leaves
    the ``async for`` early."""

    __slots__ = ("_call", "_policy", "_steps")

    def __init__(self, policy: Retrying, call: _Call) -> None:
        self._policy = policy
        self._call = call
        self._steps = policy._steps(call)

    def __aiter__(self) -> _AsyncSteps:
        return self

    async def __anext__(self) -> AttemptManager:
        for kind, arg in self._steps:
            if kind == _ATTEMPT:
                return AttemptManager(self._call)
            await self._policy._step_async(kind, arg)
        raise StopAsyncIteration


_ATTEMPT, _SLEEP, _HOOK = 0, 1, 2


class _Call:
    """The state of one retried call, and the one place that decides what happens after a failure."""

    __slots__ = (
        "attempts",
        "deadline",
        "exc",
        "next_delay",
        "outcomes",
        "pending",
        "policy",
        "previous",
        "reason",
        "result",
        "start",
        "value",
    )

    def __init__(
        self, policy: Retrying, start: float | None, exc: BaseException | None, result: Any
    ) -> None:
        self.policy = policy
        self.start = start
        self.exc = exc
        self.result = result
        self.pending = True  # an outcome waits to be judged
        self.attempts = 0
        self.previous: float | None = None
        self.next_delay = 0.0
        self.outcomes: list[Any] | None = [] if policy.raise_retry_error else None
        self.reason: str | None = None
        self.value: Any = None
        self.deadline: float | None = None  # the iterator forms' own timeout

    def elapsed(self) -> float:
        if self.start is None:
            return 0.0
        return _time.clock.monotonic() - self.start

    def state(self, next_delay: float, succeeded: bool = False) -> RetryState:
        return RetryState(
            self.policy.name,
            self.attempts + 1 if succeeded else self.attempts,
            self.elapsed(),
            next_delay,
            self.exc,
            self.result,
            self.reason,
        )

    def failure(self, exc: BaseException) -> None:
        """Record a retryable exception as the attempt's outcome."""
        self.exc = exc
        self.pending = True

    def success(self, result: Any) -> None:
        """Record a result as the attempt's outcome (a failure if ``on_result`` rejects it)."""
        self.result = result
        on_result = self.policy.on_result
        if on_result is not None and on_result(result):
            self.pending = True

    def failed(self) -> float | None:
        """Judge the last attempt's failure: the seconds to wait, or ``None`` to give up.

        Raises:
            BaseException: the attempt's exception, when ``on``'s predicate rejects it.
        """
        p = self.policy
        exc = self.exc
        self.attempts = attempts = self.attempts + 1
        if self.outcomes is not None:
            self.outcomes.append(exc if exc is not None else self.result)
        if exc is None:
            kind = _PLAIN
        else:
            cls = type(exc)
            kind = p._kinds.get(cls, -1)
            if kind < 0:
                kind = p._kinds[cls] = _kind_of(cls, p.permanent_on)
            if (
                kind == _PLAIN
                and (exc.__cause__ is not None or exc.__context__ is not None)
                and _permanent_in_chain(exc)
            ):
                kind = _PERMANENT
        budget = p.budget
        if budget is not None and kind != _OPEN_CIRCUIT:
            # A call refused by an open circuit sent nothing: it costs no token.
            budget.record_failure()
        if kind == _PERMANENT:
            self.reason = "permanent"
            return None
        if (
            kind == _PLAIN
            and exc is not None
            and p._predicate is not None
            and not p._predicate(exc)
        ):
            # Not retryable: propagate untouched, as a type missing from ``on`` does.
            raise exc
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and isinstance(retry_after, (int, float)) and retry_after >= 0:
            # An open circuit says when it lets a probe through: waiting less only fails again.
            delay = float(retry_after) if kind == _OPEN_CIRCUIT else min(retry_after, p._cap)
        else:
            delay = p.backoff.delay(attempts, self.previous)
        self.previous = self.next_delay = delay
        start = self.start
        elapsed = 0.0 if start is None else _time.clock.monotonic() - start
        if p.stop.should_stop(attempts, elapsed, delay):
            self.reason = "stop"
            return None
        when = _DEADLINE.get()
        mine = self.deadline
        if mine is not None and (when is None or mine < when):
            when = mine
        if when is not None and _time.clock.monotonic() + delay >= when:
            self.reason = "deadline"
            return None
        if budget is not None and not budget.can_retry():
            self.reason = "budget"
            return None
        if instrument.hooks:
            instrument.emit(
                instrument.RetryEvent(
                    instrument.Kind.RETRY_SCHEDULED,
                    p.name,
                    attempts,
                    delay=delay,
                    error_type=_error_type(exc),
                )
            )
        if not p.quiet and log.isEnabledFor(logging.INFO):
            log.info(
                "%s: attempt %d failed (%r); retrying in %.3f s",
                p.name,
                self.attempts,
                exc if exc is not None else self.result,
                delay,
                extra={
                    "resile_name": p.name,
                    "resile_attempt": self.attempts,
                    "resile_delay": delay,
                    "resile_error": repr(exc),
                },
            )
        return delay

    def giveup_reason(self) -> instrument.GiveUpReason:
        """Why the call gives up, as the instrumentation names it.

        The engine's ``"stop"`` is ``attempts`` when the stop condition holds
        with no time elapsed (an attempt limit), ``elapsed`` otherwise.
        """
        reason = self.reason
        if reason == "stop":
            by_count = self.policy.stop.should_stop(self.attempts, 0.0, 0.0)
            return instrument.GiveUpReason.ATTEMPTS if by_count else instrument.GiveUpReason.ELAPSED
        return instrument.GiveUpReason(reason or "attempts")

    def give_up(self) -> None:
        """End the call: set ``value`` (a rejected result or the fallback's) or raise."""
        p = self.policy
        p.statistics.giveups += 1
        exc = self.exc
        if instrument.hooks:
            instrument.emit(
                instrument.RetryEvent(
                    instrument.Kind.RETRY_GAVE_UP,
                    p.name,
                    self.attempts,
                    error_type=_error_type(exc),
                    reason=self.giveup_reason(),
                )
            )
        if not p.quiet and log.isEnabledFor(logging.WARNING):
            log.warning(
                "%s: giving up after %d attempt(s) (%s): %r",
                p.name,
                self.attempts,
                self.reason,
                exc if exc is not None else self.result,
                extra={
                    "resile_name": p.name,
                    "resile_attempt": self.attempts,
                    "resile_reason": self.reason,
                    "resile_error": repr(exc),
                },
            )
        if p.fallback is not None:
            self.value = p.fallback(self.state(self.next_delay))
            return
        if p.raise_retry_error:
            raise RetryError(self.outcomes or [], p.name) from exc
        if exc is None:
            self.value = self.result
            return
        if isinstance(exc, Permanent) and exc.error is not None:
            exc = exc.error
        _util.add_note(
            exc,
            f"resile: {p.name} gave up after {self.attempts} attempt(s) ({self.reason})",
        )
        raise exc


_PLAIN, _PERMANENT, _OPEN_CIRCUIT = 0, 1, 2
_RETRY_ATTEMPT = instrument.Kind.RETRY_ATTEMPT


def _error_type(exc: BaseException | None) -> str:
    """The class name of a failure; ``"result"`` for a result rejected by ``on_result``."""
    return "result" if exc is None else type(exc).__name__


_DEADLINE = _time.DEADLINE


# How far ``_permanent_in_chain`` follows ``__cause__`` / ``__context__`` links.
_CHAIN_LIMIT = 32


def _permanent_in_chain(exc: BaseException) -> bool:
    """True when a ``Permanent`` is in ``exc``'s chain (``raise X from Permanent(e)``).

    Follows the chain a traceback prints (``__cause__``, else ``__context__``
    unless suppressed) for at most ``_CHAIN_LIMIT`` links, which also ends a cycle.
    """
    link: BaseException | None = exc
    left = _CHAIN_LIMIT
    while left:
        assert link is not None
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
        if link is None:
            return False
        if isinstance(link, Permanent):
            return True
        left -= 1
    return False


def _kind_of(cls: type[BaseException], permanent_on: tuple[type[BaseException], ...]) -> int:
    if issubclass(cls, CircuitOpen):
        return _OPEN_CIRCUIT
    if issubclass(cls, Permanent) or (permanent_on and issubclass(cls, permanent_on)):
        return _PERMANENT
    return _PLAIN


@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    *,
    on: RetryOn = ...,
    on_result: Callable[[Any], bool] | None = ...,
    permanent_on: ExcTypes = ...,
    backoff: Backoff = ...,
    stop: Stop = ...,
    timeout: float | timedelta | None = ...,
    attempt_timeout: float | timedelta | None = ...,
    on_retry: Hook | None = ...,
    on_giveup: Hook | None = ...,
    on_success: Hook | None = ...,
    raise_retry_error: bool = ...,
    fallback: Callable[[RetryState], Any] | None = ...,
    budget: RetryBudgetLike | None = ...,
    name: str | None = ...,
    sleep: Callable[[float], None] | None = ...,
    async_sleep: Callable[[float], Awaitable[None]] | None = ...,
    quiet: bool = ...,
) -> Retrying: ...


def retry(fn: Callable[P, R] | None = None, /, **policy: Any) -> Callable[P, R] | Retrying:
    """Retry a function under a policy: ``@retry`` or ``@retry(on=..., backoff=..., stop=...)``.

    Takes the keyword arguments of ``Retrying`` (see there for each). Works
    on sync and async functions alike and keeps their signature and types.

    Example::

        @retry(on=(ConnectionError, TimeoutError), backoff=Exponential(0.1, max_delay=5.0),
               stop=after_attempts(5) | after_elapsed(30))
        def fetch(url: str) -> bytes: ...
    """
    if fn is not None:
        if policy:
            raise TypeError(
                "retry: give the function alone (@retry) or keywords only (@retry(...))"
            )
        return Retrying()(fn)
    return Retrying(**policy)
