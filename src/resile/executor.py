"""``BackoffExecutor``: the MicroPython ``BackoffExecutor`` API, on resile's engine.

The contract, as that API states it:

* exponential backoff ``min(base_delay_ms * 2 ** (n - 1), max_backoff_ms)``
  after failure ``n``, with optional full jitter (a delay in ``[0, backoff]``);
* ``max_retry`` retries after the first attempt (``-1``: retry for ever);
* ``fn`` is a zero-argument callable, sync or async; an exception or a falsy
  result is a failure;
* ``on_success(result)``, ``on_fail(exc, retry_count, next_delay_ms)`` on
  every failure, ``on_retry(last_exc)`` once the retries run out; each may be
  sync or async and its errors never break the loop;
* a second ``execute`` while one runs is refused (returns ``False`` at once);
* ``cancel()`` ends the loop at its next check (before an attempt; it also
  cuts the current wait short), ``running`` tells whether it runs.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

from resile import _aio, _time, _util
from resile.backoff import Exponential
from resile.retry import Retrying, RetryState
from resile.stop import after_attempts, never

__all__ = ["BackoffExecutor"]


class _FalsyResult(OSError):
    """The original API's ``OSError("Execution returned False")``: a falsy result counts as a failure."""


def _check_ms(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"BackoffExecutor: {field} must be an int >= 0 (milliseconds), got {value!r}"
        )
    return value


class BackoffExecutor:
    """Run a callable until it succeeds, with exponential backoff between attempts.

    Args:
        base_delay_ms: the first wait, in milliseconds (default 500).
        max_backoff_ms: the cap on any wait, in milliseconds (default 10000).
        max_retry: retries after the first attempt; ``-1`` retries for ever
            (default 5, so at most 6 attempts).
        jitter: ``True`` for full jitter (a uniform wait in ``[0, backoff]``).
        seed: seed for the jitter's RNG, for reproducible waits.

    Raises:
        ValueError: a negative delay, a cap below the base delay, or
            ``max_retry`` below -1; the message names the field and the value.
    """

    def __init__(
        self,
        base_delay_ms: int = 500,
        max_backoff_ms: int = 10000,
        max_retry: int = 5,
        jitter: bool = False,
        *,
        seed: int | None = None,
    ) -> None:
        self.base_delay_ms = _check_ms(base_delay_ms, "base_delay_ms")
        self.max_backoff_ms = _check_ms(max_backoff_ms, "max_backoff_ms")
        if self.max_backoff_ms < self.base_delay_ms:
            raise ValueError(
                f"BackoffExecutor: max_backoff_ms ({max_backoff_ms!r}) must not be below "
                f"base_delay_ms ({base_delay_ms!r})"
            )
        if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < -1:
            raise ValueError(
                f"BackoffExecutor: max_retry must be an int >= -1 (-1 = forever), got {max_retry!r}"
            )
        self.max_retry = max_retry
        self.jitter = bool(jitter)
        self.backoff = Exponential(
            self.base_delay_ms / 1000.0,
            2.0,
            max_delay=self.max_backoff_ms / 1000.0,
            jitter="full" if self.jitter else "none",
            seed=seed,
        )
        self._lock = threading.Lock()
        self._running = False
        self._cancel_requested = False
        self._wake_sync = threading.Event()
        # The async wait's wake-up: an asyncio.Event or a trio.Event, and a thread-safe setter.
        self._wake_async: Any = None
        self._wake_set: Callable[[], object] | None = None

    @property
    def running(self) -> bool:
        """True while an ``execute`` is in progress."""
        return self._running

    def cancel(self) -> None:
        """Ask the running ``execute`` to stop at its next check; it then returns ``False``.

        A running ``fn`` is not interrupted; a wait between attempts is cut short.
        """
        self._cancel_requested = True
        self._wake_sync.set()
        wake_set = self._wake_set
        if wake_set is not None:
            with contextlib.suppress(RuntimeError):  # the loop or trio run has just ended
                wake_set()

    def _policy(self, run: _Run, **sleep: Any) -> Retrying:
        """The engine both colours run on; ``sleep`` is ``sleep=`` or ``async_sleep=``."""
        return Retrying(
            backoff=self.backoff,
            stop=never if self.max_retry == -1 else after_attempts(self.max_retry + 1),
            on_retry=run.failed,
            on_giveup=run.failed,
            fallback=_none,
            name="BackoffExecutor",
            **sleep,
        )

    async def _async_sleep(self, seconds: float) -> None:
        wake = self._wake_async
        if wake is None or _time.clock is not _time.SYSTEM:
            await _time.clock.async_sleep(seconds)
        else:
            await _aio.wait_event(wake, seconds)

    def _sync_sleep(self, seconds: float) -> None:
        if _time.clock is not _time.SYSTEM:
            _time.clock.sleep(seconds)
        else:
            self._wake_sync.wait(seconds)

    def _begin(self) -> bool:
        """Take the run (False when another one holds it)."""
        if not self._lock.acquire(blocking=False):
            return False
        self._running = True
        self._cancel_requested = False
        return True

    def _end(self) -> None:
        self._running = False
        self._wake_async = None
        self._wake_set = None
        self._lock.release()

    def execute(
        self,
        fn: Callable[[], Any],
        on_success: Callable[[Any], Any] | None = None,
        on_fail: Callable[[BaseException, int, int], Any] | None = None,
        on_retry: Callable[[BaseException], Any] | None = None,
    ) -> Any:
        """Run ``fn`` until it succeeds: ``True`` on success; ``False`` when canceled, out of
        retries, or refused because another ``execute`` is running.

        Both colours under one name, as the MicroPython ``BackoffExecutor`` API
        spells it: called while an event loop (asyncio or trio) runs in this
        thread, it returns the awaitable of ``execute_async`` (so
        ``await executor.execute(fn)`` works, without a warning); called
        anywhere else it runs in the calling thread, blocking, and returns the
        ``bool``. Sync code that runs inside a loop's thread and wants to block
        calls a worker thread instead (a blocking run would stall the loop).
        """
        if _aio.running_library() is not None:
            return self.execute_async(fn, on_success, on_fail, on_retry)
        return self._execute_blocking(fn, _Run(on_success, on_fail, on_retry))

    async def execute_async(
        self,
        fn: Callable[[], Any],
        on_success: Callable[[Any], Any] | None = None,
        on_fail: Callable[[BaseException, int, int], Any] | None = None,
        on_retry: Callable[[BaseException], Any] | None = None,
    ) -> bool:
        """``await executor.execute_async(fn)``: ``execute`` in the async colour (asyncio or trio)."""
        if not self._begin():
            return False
        try:
            wake = self._wake_async = _aio.new_event()
            call = _aio.loop_caller()
            self._wake_set = lambda: call(wake.set)
            run = _Run(on_success, on_fail, on_retry)
            async for attempt in self._policy(run, async_sleep=self._async_sleep):
                if self._cancel_requested:
                    return False
                with attempt:
                    result = fn()
                    if inspect.isawaitable(result):
                        result = await result
                    run.succeeded(result)
            hook, arg = run.last_hook()
            if hook is not None:
                await _aio.emit_async(hook, arg)
            return run.ok
        finally:
            self._end()

    def _execute_blocking(self, fn: Callable[[], Any], run: _Run) -> bool:
        if not self._begin():
            return False
        try:
            self._wake_sync.clear()
            for attempt in self._policy(run, sleep=self._sync_sleep):
                if self._cancel_requested:
                    return False
                with attempt:
                    result = fn()
                    if inspect.isawaitable(result):
                        result = _aio.run_awaitable(result)
                    run.succeeded(result)
            hook, arg = run.last_hook()
            if hook is not None:
                _aio.emit_sync(hook, arg)
            return run.ok
        finally:
            self._end()

    def execute_sync(
        self,
        fn: Callable[[], Any],
        on_success: Callable[[Any], Any] | None = None,
        on_fail: Callable[[BaseException, int, int], Any] | None = None,
        on_retry: Callable[[BaseException], Any] | None = None,
    ) -> bool:
        """Deprecated: call ``execute`` outside an event loop (it blocks there).

        Blocks in the calling thread whether or not a loop runs in it, as it
        always did; ``fn`` should be sync; async callbacks are run to completion.
        """
        _util.deprecated(
            "BackoffExecutor.execute_sync() is deprecated: call execute() (outside an event "
            "loop it blocks and returns the bool), or await execute_async() in async code",
            stacklevel=2,
        )
        return self._execute_blocking(fn, _Run(on_success, on_fail, on_retry))

    def __repr__(self) -> str:
        return (
            f"BackoffExecutor(base_delay_ms={self.base_delay_ms}, max_backoff_ms="
            f"{self.max_backoff_ms}, max_retry={self.max_retry}, jitter={self.jitter})"
        )


class _Run:
    """One ``execute``'s callbacks and outcome, shared by both colours.

    ``failed`` is the engine's hook on every failure (the give-up included):
    it returns ``on_fail``'s result, which the engine awaits or runs to
    completion in the caller's colour, and logs if it raises.
    """

    __slots__ = ("last_error", "ok", "on_fail", "on_retry", "on_success", "result")

    def __init__(
        self,
        on_success: Callable[[Any], Any] | None,
        on_fail: Callable[[BaseException, int, int], Any] | None,
        on_retry: Callable[[BaseException], Any] | None,
    ) -> None:
        self.on_success = on_success
        self.on_fail = on_fail
        self.on_retry = on_retry
        self.ok = False
        self.result: Any = None
        self.last_error: BaseException | None = None

    def succeeded(self, result: Any) -> None:
        """Take an attempt's result; a falsy one raises, and counts as a failure."""
        if not result:
            raise _FalsyResult("Execution returned False")
        self.ok = True
        self.result = result

    def failed(self, state: RetryState) -> Any:
        exc = state.exception
        assert exc is not None  # every failure here is an exception (a falsy result raises)
        self.last_error = exc
        if self.on_fail is None:
            return None
        return self.on_fail(exc, state.attempt, _ms(state.next_delay))

    def last_hook(self) -> tuple[Callable[[Any], Any] | None, Any]:
        """After the loop: ``on_success(result)``, or ``on_retry(last_exc)`` once out of retries."""
        if self.ok:
            return self.on_success, self.result
        return self.on_retry, self.last_error


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def _none(state: RetryState) -> None:
    return None
