"""Hedged requests: when a call is slow, race a second copy of it instead of waiting.

``@hedge(delay=0.2, max_attempts=3)`` on an async, idempotent function starts
the call; if no copy has answered ``delay`` seconds later it starts another
one, up to ``max_attempts`` copies in flight. The first copy to succeed wins:
its result is returned and the others are canceled (and awaited, so nothing
keeps running behind the caller's back). This is gRPC's hedging policy (gRFC
A6) and Polly's hedging strategy; it trims tail latency at the price of
extra load, so only hedge calls that are safe to run twice.

Failures (gRFC A6 rules):

* a copy that fails with an exception in ``on`` (a "non-fatal" error) makes
  the next copy start at once, without waiting for the delay;
* a copy that fails with any other exception is fatal: the other copies are
  canceled and that exception is raised;
* when every copy has failed, the last failure is raised (the one that
  ended the race), with a note naming how many copies ran.

Runs under asyncio (tasks) and trio (a nursery). The hedging delay is waited
on resile's clock, so inside ``resile.testing.no_waits()`` every delay is
over at once and each copy starts as soon as the previous one yields.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from resile import _aio, _time, _util
from resile.retry import RetryBudgetLike

__all__ = ["hedge"]

P = ParamSpec("P")
R = TypeVar("R")

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


class _Race:
    """The bookkeeping of one hedged call, shared by the asyncio and trio drivers."""

    __slots__ = ("budget", "errors", "max_attempts", "on", "started")

    def __init__(self, max_attempts: int, on: tuple[type[BaseException], ...], budget: Any) -> None:
        self.max_attempts = max_attempts
        self.on = on
        self.budget: RetryBudgetLike | None = budget
        self.started = 0
        self.errors: list[BaseException] = []

    def may_start(self) -> bool:
        """Whether another copy may start now (attempts left, and the budget agrees)."""
        if self.started >= self.max_attempts:
            return False
        if self.started > 0 and self.budget is not None and not self.budget.can_retry():
            self.max_attempts = self.started  # throttled: no more hedges for this call
            return False
        return True

    def failed(self, exc: BaseException) -> bool:
        """Record a copy's failure; True when it is fatal (raise it at once)."""
        if self.budget is not None:
            self.budget.record_failure()
        self.errors.append(exc)
        return not isinstance(exc, self.on)

    def won(self) -> None:
        if self.budget is not None:
            self.budget.record_success()

    def final_error(self, name: str) -> BaseException:
        exc = self.errors[-1]
        note = f"resile: hedge {name}: all {self.started} copies failed; this is the last failure"
        _util.add_note(exc, note)
        return exc


async def _race_asyncio(
    call: Callable[[], Awaitable[Any]], delay: float, race: _Race, name: str
) -> Any:
    copies: dict[asyncio.Future[Any], int] = {}  # task -> start order
    timer: asyncio.Future[None] | None = None

    def start() -> None:
        nonlocal timer
        race.started += 1
        copies[asyncio.ensure_future(call())] = race.started
        if timer is not None:
            timer.cancel()
        timer = (
            asyncio.ensure_future(_time.clock.async_sleep(delay))
            if race.started < race.max_attempts
            else None
        )

    async def drive() -> Any:
        nonlocal timer
        while True:
            waiting: set[asyncio.Future[Any]] = set(copies)
            if timer is not None:
                waiting.add(timer)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if timer is not None and timer in done:
                timer = None
                if race.may_start():
                    start()
            # Copies that ended together are judged in start order: the last one ends the race.
            for task in sorted(done & copies.keys(), key=copies.__getitem__):
                del copies[task]
                if task.cancelled():
                    exc: BaseException = asyncio.CancelledError()
                else:
                    error = task.exception()
                    if error is None:
                        race.won()
                        return task.result()
                    exc = error
                if not isinstance(exc, Exception) or race.failed(exc):
                    raise exc
                if race.may_start():
                    start()
            if not copies:
                raise race.final_error(name)

    start()
    try:
        result = await drive()
    except BaseException:
        await _cancel_all([*copies, *([timer] if timer is not None else [])])
        raise
    if await _cancel_all([*copies, *([timer] if timer is not None else [])]):
        raise asyncio.CancelledError  # the caller was canceled while the losers wound down
    return result


async def _cancel_all(tasks: list[asyncio.Future[Any]]) -> bool:
    """Cancel ``tasks`` and wait until every one has finished; True if we were canceled meanwhile.

    A cancellation of the caller during the wait (anyio's cancel scopes deliver
    one at every await) does not cut the wait short: no copy outlives the call.
    """
    for task in tasks:
        task.cancel()
    interrupted = False
    while True:
        # Look before waiting: a caller canceled at every await never sees wait() return.
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return interrupted
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True


async def _race_trio(
    call: Callable[[], Awaitable[Any]], delay: float, race: _Race, name: str
) -> Any:
    send, receive = _aio.memory_channel()
    result: list[Any] = []
    failure: list[BaseException] = []
    timer_generation = 0
    running = 0

    async def copy() -> None:
        try:
            value = await call()
        except Exception as exc:
            send.send_nowait(("error", 0, exc))
        else:
            send.send_nowait(("ok", 0, value))

    async def timer(generation: int) -> None:
        await _time.clock.async_sleep(delay)
        send.send_nowait(("timer", generation, None))

    async with _aio.open_nursery() as nursery:

        def start() -> None:
            nonlocal timer_generation, running
            race.started += 1
            running += 1
            nursery.start_soon(copy)
            timer_generation += 1
            if race.started < race.max_attempts:
                nursery.start_soon(timer, timer_generation)

        start()
        while True:
            kind, generation, payload = await receive.receive()
            if kind == "timer":
                if generation == timer_generation and race.may_start():
                    start()
                continue
            running -= 1
            if kind == "ok":
                race.won()
                result.append(payload)
                break
            if race.failed(payload):
                failure.append(payload)
                break
            if race.may_start():
                start()
            elif running == 0:
                failure.append(race.final_error(name))
                break
        # Raised outside the nursery, so it is not wrapped in an exception group.
        nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0]


def hedge(
    *,
    delay: float | timedelta,
    max_attempts: int = 2,
    on: ExcTypes = Exception,
    budget: RetryBudgetLike | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Hedge an async, idempotent function: start another copy each ``delay`` without an answer.

    Args:
        delay: seconds (or a ``timedelta``) to wait for an answer before
            starting the next copy; 0 starts them all at once.
        max_attempts: the most copies of one call, counting the first; 1
            disables hedging.
        on: exceptions that are not fatal (default ``Exception``): a copy
            failing with one starts the next copy at once; any other
            exception cancels the race and is raised.
        budget: a ``RetryBudget`` or ``AdaptiveThrottle`` (the retry engine's
            budget protocol): each copy after the first must pass
            ``can_retry()``; failed copies call ``record_failure()``, the
            winner ``record_success()``. A drained budget stops hedging.

    Returns:
        a decorator; the wrapped function returns the first successful
        copy's result, or raises the fatal error, or (all copies failed) the
        last failure.

    Raises:
        ValueError: ``delay`` negative or not finite, ``max_attempts`` not an int >= 1.
        TypeError: ``on`` not exception types, a ``budget`` without the
            protocol's methods, or (from the decorator) a function that is
            not ``async def``.
    """
    seconds = _time.seconds(delay, "delay", "hedge")
    _util.integer(max_attempts, "max_attempts", "hedge", minimum=1)
    on_types = _util.exception_types(on, "on", "hedge")
    if budget is not None and not all(
        callable(getattr(budget, m, None))
        for m in ("record_success", "record_failure", "can_retry")
    ):
        raise TypeError(f"hedge: budget must be a RetryBudget or AdaptiveThrottle, got {budget!r}")

    def decorator(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"hedge: {fn!r} is not an async function; hedging races coroutines, "
                "so decorate an async def"
            )
        name = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn, _util.WRAPPED)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            race = _Race(max_attempts, on_types, budget)

            def call() -> Awaitable[R]:
                return fn(*args, **kwargs)

            if _aio.current_async_library() == _aio.TRIO:
                return await _race_trio(call, seconds, race, name)  # type: ignore[no-any-return]
            return await _race_asyncio(call, seconds, race, name)  # type: ignore[no-any-return]

        return wrapper

    return decorator
