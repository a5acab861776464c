"""Periodic tasks: ``@repeat_every`` (fastapi-utils' spelling), ``Periodic`` and an ASGI lifespan.

::

    @repeat_every(seconds=60, on_exception=report)
    def cache_cleanup_task() -> None:
        cache_clear()

    @asynccontextmanager
    async def app_lifespan(app):
        await cache_cleanup_task()      # starts the loop in the background, returns at once
        yield

The contract:

* **One schedule, no drift.** Run ``n`` (counted from 0) is due at
  ``first + n * interval`` on resile's monotonic clock, where ``first`` is the
  start time (plus the ``wait_first`` delay). Due times are computed from the
  grid, never by adding intervals up, so the schedule does not drift.
* **No overlap.** Runs of one loop never overlap. A run that overshoots its
  interval delays the next one to the first grid point at or after the moment
  it ended; the grid points it passed are skipped, not made up, and counted
  in ``statistics.skipped``.
* **One exception never ends the loop.** It is logged (the ``logger``, by
  default the ``"resile"`` logger), counted, handed to ``on_exception`` and
  the loop goes on, unless ``raise_exceptions=True``: then the loop ends and
  the error is re-raised by ``stop()``, ``wait()`` and ``run()``.
* **Failure backoff.** With ``backoff=``, after ``k`` consecutive failures
  the next run is due ``backoff.delay(k)`` seconds after the failed run
  ended, instead of at the next grid point; a success returns to the grid.
* **Jitter.** ``jitter=j`` adds a uniform random delay in ``[0, j]`` to every
  due time (it does not accumulate: the grid stays put).

The two colours share that schedule (``_Schedule``) and one loop
(``Periodic._steps``); they differ only in how they wait and call:

* **async** (asyncio or trio): ``start()`` inside a running event loop starts
  the loop as a background task (an asyncio task, or a trio system task);
  ``await stop()``. A sync function runs in a worker thread so that it does
  not block the event loop (as fastapi-utils does); an async one is awaited.
  ``await periodic.run_async()`` runs the loop in the current task instead
  (for a trio nursery or an anyio task group).
* **thread**: ``start()`` outside any event loop starts a daemon thread;
  ``stop()`` blocks. ``run()`` runs the loop in the calling thread. An
  async function is run on an event loop owned by that thread.

``stop()`` asks the loop to end, cuts a wait short, and waits for a run in
progress to finish (it never interrupts the function). In async code,
``await`` it; in sync code, call it.

fastapi-utils' ``repeat_every`` (``fastapi_utils/tasks.py``) is the reference
for the decorator's parameters and for ``raise_exceptions`` ending the loop;
no code is taken from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeAlias

from resile import _aio, _time, _util, instrument
from resile.backoff import Backoff

__all__ = ["Periodic", "PeriodicStatistics", "RepeatedFunction", "lifespan", "repeat_every"]

P = ParamSpec("P")

_log = logging.getLogger("resile")

# What the loop asks its driver to do (see ``Periodic._steps``).
_WAIT = "wait"  # wait ``arg`` seconds (a stop cuts it short)
_RUN = "run"  # call the function once; send back its exception or None
_HOOK = "hook"  # hand the exception ``arg`` to on_exception

_Step = tuple[str, Any]
# A string: ``logging.LoggerAdapter`` is not subscriptable at run time before Python 3.11.
LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"


class PeriodicStatistics:
    """What a ``Periodic`` has done, since it was made (restarts add up).

    Attributes:
        runs: calls of the function, failed ones included.
        failures: calls that raised.
        consecutive_failures: failures since the last success.
        skipped: grid points passed without a run (an overshooting run or a
            failure backoff made the loop miss them).
        last_duration: seconds the last run took, or ``None`` before the first.
        last_error: the exception of the last failed run, or ``None``.
        last_started_at: when the last run started, on resile's monotonic
            clock (``resile._time.clock.monotonic()``), or ``None``.
        next_run_at: when the next run is due, on the same clock, or ``None``
            while nothing is scheduled.
    """

    __slots__ = (
        "consecutive_failures",
        "failures",
        "last_duration",
        "last_error",
        "last_started_at",
        "next_run_at",
        "runs",
        "skipped",
    )

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.skipped = 0
        self.last_duration: float | None = None
        self.last_error: BaseException | None = None
        self.last_started_at: float | None = None
        self.next_run_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (``last_error`` as its ``repr``)."""
        return {
            "runs": self.runs,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "skipped": self.skipped,
            "last_duration": self.last_duration,
            "last_error": None if self.last_error is None else repr(self.last_error),
            "last_started_at": self.last_started_at,
            "next_run_at": self.next_run_at,
        }

    def __repr__(self) -> str:
        return (
            f"PeriodicStatistics(runs={self.runs}, failures={self.failures}, "
            f"skipped={self.skipped}, last_duration={self.last_duration!r}, "
            f"last_error={self.last_error!r})"
        )


class _Schedule:
    """When each run is due: the one timing computation both colours use.

    The grid is ``first + n * interval``; a due time is the grid point plus
    a jitter in ``[0, jitter]``; a failure backoff moves a run off the grid,
    measured from the end of the failed run.
    """

    __slots__ = ("backoff", "failures", "first", "index", "interval", "jitter", "previous", "rng")

    def __init__(
        self, interval: float, jitter: float, backoff: Backoff | None, rng: random.Random
    ) -> None:
        self.interval = interval
        self.jitter = jitter
        self.backoff = backoff
        self.rng = rng
        self.first = 0.0
        self.index = 0
        self.failures = 0
        self.previous: float | None = None

    def begin(self, now: float, wait_first: float) -> float:
        """Anchor the grid; return the due time of run 0."""
        self.first = now + wait_first
        self.index = 0
        self.failures = 0
        self.previous = None
        return self._jittered(self.first)

    def after(self, ended: float, failed: bool) -> tuple[float, int]:
        """Due time of the next run after one that ended at ``ended``, and grid points skipped."""
        if failed and self.backoff is not None:
            self.failures += 1
            self.previous = self.backoff.delay(self.failures, self.previous)
            return ended + self.previous, 0
        self.failures = 0
        self.previous = None
        index = self.index + 1
        if self.first + index * self.interval < ended:
            # Overshoot: the first grid point at or after the end of the run.
            index = max(index, math.ceil((ended - self.first) / self.interval))
            while self.first + index * self.interval < ended:  # float rounding
                index += 1
        skipped = index - self.index - 1
        self.index = index
        return self._jittered(self.first + index * self.interval), skipped

    def _jittered(self, due: float) -> float:
        if self.jitter <= 0.0:
            return due
        return due + self.jitter * self.rng.random()


class Periodic:
    """Call ``fn`` every ``seconds``, in the background, until stopped.

    Args:
        fn: a zero-argument callable, sync or async (bind arguments with
            ``functools.partial``).
        seconds: the interval, as seconds or a ``timedelta``; > 0.
        wait_first: ``False`` runs at once; ``True`` waits one interval
            first; a number of seconds (or ``timedelta``) waits that long.
        max_repetitions: end the loop after this many runs (failed ones
            count); ``None`` for no end.
        on_exception: called with the exception of a failed run; sync or
            async (in the async colour a sync handler runs in a worker
            thread, as the function does). Its own errors are logged and
            ignored.
        logger: where failures are logged (ERROR, with the traceback).
            Default: the ``"resile"`` logger.
        jitter: add a uniform random delay in ``[0, jitter]`` seconds to every
            due time; ``None`` or 0 for none.
        raise_exceptions: end the loop at the first failure (after
            ``on_exception``) and re-raise the error from ``stop()``,
            ``wait()`` and ``run()``.
        backoff: a ``resile.backoff`` strategy: after ``k`` consecutive
            failures, the next run is due ``backoff.delay(k)`` seconds after
            the failed run ended instead of at the next grid point.
        name: used in logs and thread / task names. Default: ``fn``'s
            qualified name.
        seed: seed of the jitter's RNG, for reproducible schedules.

    Raises:
        TypeError: ``fn`` or a hook that is not callable, a duration that is
            not a number or ``timedelta``, a ``backoff`` that is not a
            strategy; the message names the field and the value.
        ValueError: ``seconds`` <= 0, a negative / NaN / infinite duration,
            ``max_repetitions`` < 1.
    """

    def __init__(
        self,
        fn: Callable[[], Any],
        seconds: float | timedelta,
        *,
        wait_first: bool | float | timedelta = False,
        max_repetitions: int | None = None,
        on_exception: Callable[[Exception], Any] | None = None,
        logger: LoggerLike | None = None,
        jitter: float | timedelta | None = None,
        raise_exceptions: bool = False,
        backoff: Backoff | None = None,
        name: str | None = None,
        seed: int | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"repeat_every: expected a function to repeat, got {fn!r}")
        self.fn = fn
        self.interval = _time.positive_seconds(seconds, "seconds", "repeat_every")
        if isinstance(wait_first, bool):
            self.wait_first = self.interval if wait_first else 0.0
        else:
            self.wait_first = _time.seconds(wait_first, "wait_first", "repeat_every")
        if max_repetitions is not None and (
            isinstance(max_repetitions, bool)
            or not isinstance(max_repetitions, int)
            or max_repetitions < 1
        ):
            raise ValueError(
                f"repeat_every: max_repetitions must be an int >= 1 or None, got {max_repetitions!r}"
            )
        self.max_repetitions = max_repetitions
        if on_exception is not None and not callable(on_exception):
            raise TypeError(
                f"repeat_every: on_exception must be callable or None, got {on_exception!r}"
            )
        self.on_exception = on_exception
        if logger is not None and not callable(getattr(logger, "error", None)):
            raise TypeError(f"repeat_every: logger must be a logging.Logger, got {logger!r}")
        self.logger: LoggerLike = logger if logger is not None else _log
        self.jitter = 0.0 if jitter is None else _time.seconds(jitter, "jitter", "repeat_every")
        self.raise_exceptions = bool(raise_exceptions)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(
                f"repeat_every: backoff must be a resile.backoff strategy or None, got {backoff!r}"
            )
        self.backoff = backoff
        _util.check_seed(seed, "repeat_every")
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.statistics = PeriodicStatistics()
        self.error: BaseException | None = None
        self._schedule = _Schedule(self.interval, self.jitter, backoff, random.Random(seed))
        self._running = False
        self._start_lock = threading.Lock()
        self._stop_requested = False
        self._mode: str | None = None  # "asyncio", "trio" or "thread" while (or since) running
        # Who runs the loop, to know when stop() is called from inside it.
        self._owner: object = None
        self._owner_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        # Runs a callable in the async run's loop from any thread (set by _begin_async).
        self._loop_call: Callable[[Callable[[], object]], object] | None = None
        # What a stop interrupts: the current wait in each colour.
        self._wake = threading.Event()
        self._sleeper: asyncio.Future[None] | None = None
        self._scope: Any = None
        # Set when the loop has ended (created per start, of the running colour).
        self._done_thread = threading.Event()
        self._done_thread.set()
        self._done_async: Any = None

    # -- public state ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from ``start()`` (or ``run()``) until the loop has ended."""
        return self._running

    def __repr__(self) -> str:
        return (
            f"Periodic(name={self.name!r}, seconds={self.interval!r}, running={self._running}, "
            f"runs={self.statistics.runs}, failures={self.statistics.failures})"
        )

    # -- the loop, once for both colours -------------------------------------------

    def _steps(self) -> Generator[_Step, BaseException | None, None]:
        """The loop: yields what to do; the driver sends back a run's exception (or None)."""
        stats = self.statistics
        schedule = self._schedule
        due = schedule.begin(_time.clock.monotonic(), self.wait_first)
        done = 0
        while not self._stop_requested:
            if self.max_repetitions is not None and done >= self.max_repetitions:
                return
            stats.next_run_at = due
            delay = due - _time.clock.monotonic()
            if delay > 0.0:
                yield (_WAIT, delay)
                if self._stop_requested:
                    return
            stats.next_run_at = None
            started = _time.clock.monotonic()
            stats.last_started_at = started
            error = yield (_RUN, None)
            ended = _time.clock.monotonic()
            done += 1
            stats.runs += 1
            stats.last_duration = max(0.0, ended - started)
            if instrument.hooks:
                instrument.emit(
                    instrument.PeriodicEvent(
                        instrument.Kind.PERIODIC_RUN,
                        self.name,
                        "succeeded" if error is None else "failed",
                        stats.last_duration,
                    )
                )
            if error is None:
                stats.consecutive_failures = 0
            else:
                stats.failures += 1
                stats.consecutive_failures += 1
                stats.last_error = error
                self.logger.error(
                    "resile: periodic %s: run %d failed: %r",
                    self.name,
                    stats.runs,
                    error,
                    exc_info=error,
                )
                if self.on_exception is not None:
                    yield (_HOOK, error)
                if self.raise_exceptions:
                    self.error = error
                    return
            due, skipped = schedule.after(ended, error is not None)
            stats.skipped += skipped

    def _begin(self, mode: str) -> None:
        with self._start_lock:  # two threads calling start() at once: one wins
            if self._running:
                raise RuntimeError(f"Periodic {self.name!r} is already running; stop() it first")
            self._running = True
        self._stop_requested = False
        self.error = None
        self._mode = mode
        self._owner_thread = threading.get_ident()
        self._wake.clear()
        self._done_thread.clear()
        self._done_async = None
        self._loop_call = None

    def _end(self) -> None:
        self.statistics.next_run_at = None
        self._running = False
        self._owner = None
        self._done_thread.set()
        done = self._done_async
        if done is not None:
            done.set()

    # -- async colour ---------------------------------------------------------------

    def _begin_async(self, lib: str) -> None:
        self._begin(lib)
        self._loop_call = _aio.loop_caller()
        self._done_async = _aio.new_event(lib)

    async def _drive_async(self) -> None:
        """Run the loop in this task; a run's exception never escapes (see ``error``)."""
        lib = self._mode
        self._owner = _aio.current_task(lib)
        steps = self._steps()
        reply: BaseException | None = None
        try:
            while True:
                try:
                    kind, arg = steps.send(reply)
                except StopIteration:
                    return
                reply = None
                if kind == _WAIT:
                    await self._wait_async(lib, arg)
                elif kind == _RUN:
                    try:
                        await self._call_async(self.fn)
                    except Exception as exc:
                        reply = exc
                else:
                    try:
                        await self._call_async(self.on_exception, arg)  # type: ignore[arg-type]
                    except Exception:
                        self._hook_failed()
        finally:
            steps.close()
            self._sleeper = None
            self._scope = None
            self._end()

    @staticmethod
    async def _call_async(fn: Callable[..., Any], *args: Any) -> None:
        """Await an async callable; run a sync one in a worker thread, off the event loop."""
        if inspect.iscoroutinefunction(fn):
            result = fn(*args)
        else:
            result = await _aio.run_in_thread(lambda: fn(*args))
        if inspect.isawaitable(result):
            await result

    async def _wait_async(self, lib: str | None, seconds: float) -> None:
        if lib == _aio.TRIO:
            with _aio.cancel_scope() as scope:
                self._scope = scope
                await _time.clock.async_sleep(seconds)
            self._scope = None
            return
        # The sleep runs as its own task so that stop() can cancel it alone.
        sleeper = asyncio.ensure_future(_time.clock.async_sleep(seconds))
        self._sleeper = sleeper
        try:
            await asyncio.wait((sleeper,))
        finally:
            self._sleeper = None
            sleeper.cancel()
        if not sleeper.cancelled() and sleeper.exception() is not None:
            raise sleeper.exception()  # type: ignore[misc]

    def _interrupt(self) -> None:
        """Cut the current wait short (called in the loop's own thread)."""
        sleeper = self._sleeper
        if sleeper is not None:
            sleeper.cancel()
        scope = self._scope
        if scope is not None:
            scope.cancel()

    async def _join_async(self) -> None:
        done = self._done_async
        if done is not None and self._running and self._owner is not _aio.current_task(self._mode):
            await done.wait()
        self._raise_error()

    async def run_async(self) -> None:
        """Run the loop in the current task until it ends (``stop()``, ``max_repetitions``).

        For a trio nursery or an anyio task group:
        ``nursery.start_soon(periodic.run_async)``. Cancelling the task ends the loop.

        Raises:
            RuntimeError: already running, or no asyncio / trio loop runs here.
            Exception: the error that ended the loop, with ``raise_exceptions=True``.
        """
        self._begin_async(_aio.current_async_library())
        await self._drive_async()
        self._raise_error()

    def run(self) -> Any:
        """Run the loop in the calling thread until it ends (``stop()`` from another thread).

        Called while an event loop runs in this thread it returns
        ``run_async()``'s awaitable instead, as it did when ``run`` was the
        async spelling; that use is deprecated (``DeprecationWarning``):
        ``await periodic.run_async()``.

        Raises:
            RuntimeError: already running.
            Exception: the error that ended the loop, with ``raise_exceptions=True``.
        """
        if _aio.running_library() is not None:
            _util.deprecated(
                "Periodic.run() in async code is deprecated: await periodic.run_async() "
                "(run() without an event loop runs the loop in the calling thread)",
                stacklevel=2,
            )
            return self.run_async()
        self._run_blocking()
        return None

    # -- thread colour --------------------------------------------------------------

    def _drive_sync(self) -> None:
        """Run the loop in this thread; a run's exception never escapes (see ``error``)."""
        self._owner_thread = threading.get_ident()
        self._owner = threading.current_thread()
        steps = self._steps()
        reply: BaseException | None = None
        loop: asyncio.AbstractEventLoop | None = None

        def finish(outcome: Any) -> None:
            nonlocal loop
            if inspect.isawaitable(outcome):
                if loop is None:
                    loop = asyncio.new_event_loop()
                loop.run_until_complete(_awaited(outcome))

        try:
            while True:
                try:
                    kind, arg = steps.send(reply)
                except StopIteration:
                    return
                reply = None
                if kind == _WAIT:
                    self._wait_sync(arg)
                elif kind == _RUN:
                    try:
                        finish(self.fn())
                    except Exception as exc:
                        reply = exc
                else:
                    try:
                        finish(self.on_exception(arg))  # type: ignore[misc]
                    except Exception:
                        self._hook_failed()
        finally:
            steps.close()
            if loop is not None:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
            self._end()

    def _wait_sync(self, seconds: float) -> None:
        # The real clock waits on the stop event so that stop() cuts it short;
        # any other clock (resile.testing) is asked to sleep.
        if _time.clock is _time.SYSTEM:
            self._wake.wait(seconds)
        else:
            _time.clock.sleep(seconds)

    def _run_blocking(self) -> None:
        self._begin("thread")
        self._drive_sync()
        self._raise_error()

    def run_sync(self) -> None:
        """Deprecated: ``run()`` (outside an event loop it runs the loop in the calling thread).

        Blocks in the calling thread, as it always did.
        """
        _util.deprecated(
            "Periodic.run_sync() is deprecated: call periodic.run() (or await "
            "periodic.run_async() in async code)",
            stacklevel=2,
        )
        self._run_blocking()

    # -- start / stop ---------------------------------------------------------------

    def start(self) -> Periodic:
        """Start the loop in the background and return ``self`` at once.

        Inside a running asyncio loop: an asyncio task. Inside trio: a system
        task of the run (it ends with the run at the latest). Anywhere else:
        a daemon thread. A stopped loop may be started again: the grid is
        anchored anew, the statistics add up.

        Raises:
            RuntimeError: already running.
        """
        try:
            lib: str | None = _aio.current_async_library()
        except RuntimeError:
            lib = None
        if lib is None:
            self._begin("thread")
            self._owner_thread = None  # the thread sets it; until then stop() waits
            self._thread = threading.Thread(
                target=self._drive_sync, name=f"resile-periodic-{self.name}", daemon=True
            )
            self._thread.start()
        elif lib == _aio.TRIO:
            self._begin_async(lib)
            _aio.spawn_system_task(
                self._drive_async,
                name=f"resile-periodic-{self.name}",
                context=contextvars.copy_context(),
            )
        else:
            self._begin_async(lib)
            self._task = asyncio.get_running_loop().create_task(
                self._drive_async(), name=f"resile-periodic-{self.name}"
            )
        return self

    def stop(self) -> Awaitable[None]:
        """Ask the loop to end, cut its wait short, and wait for a run in progress.

        The function is never interrupted: a run in progress finishes first.
        Thread colour: blocks until the loop has ended (unless called from
        the loop's own thread). Async colour: ``await periodic.stop()``; from
        another thread, or without ``await``, it only asks. Stopping a loop
        that is not running does nothing (but still re-raises its error).

        Raises:
            Exception: the error that ended the loop, with ``raise_exceptions=True``
                (in the async colour, when awaited).
        """
        self._stop_requested = True
        if self._mode == "thread":
            self._wake.set()
            return self._join_sync()
        if self._running:
            self._call_in_loop(self._interrupt)
        return _Join(self)

    def wait(self) -> Awaitable[None]:
        """Wait for the loop to end by itself (``max_repetitions``, ``raise_exceptions``).

        Thread colour: blocks; async colour: ``await periodic.wait()``.

        Raises:
            Exception: the error that ended the loop, with ``raise_exceptions=True``.
        """
        if self._mode == "thread":
            return self._join_sync()
        return _Join(self)

    def _join_sync(self) -> Awaitable[None]:
        if self._owner_thread != threading.get_ident():
            self._done_thread.wait()
        self._raise_error()
        return _Join(self)

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        if self._owner_thread == threading.get_ident():
            fn()
        elif self._loop_call is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed, the trio run has ended
                self._loop_call(fn)

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _hook_failed(self) -> None:
        self.logger.error(
            "resile: periodic %s: on_exception %r raised; ignored",
            self.name,
            self.on_exception,
            exc_info=True,
        )

    # -- conveniences ---------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Periodic]:
        """``await periodic`` returns it at once: what makes ``await task()`` work.

        To wait for the loop to end, ``await periodic.wait()``.
        """
        return _ready(self).__await__()

    async def __aenter__(self) -> Periodic:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Periodic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Join:
    """What ``stop()`` and ``wait()`` return: await it in async code, ignore it in sync code."""

    __slots__ = ("_periodic",)

    def __init__(self, periodic: Periodic) -> None:
        self._periodic = periodic

    def __await__(self) -> Generator[Any, None, None]:
        p = self._periodic
        if p._mode == "thread":
            return _ready(None).__await__()  # the sync colour has already joined
        return p._join_async().__await__()


def _nothing() -> None:
    return None


async def _ready(value: Any) -> Any:
    return value


async def _awaited(aw: Awaitable[Any]) -> Any:
    return await aw


class RepeatedFunction(Generic[P]):
    """A function decorated with ``@repeat_every``: calling it starts its loop.

    ``task(*args)`` builds a ``Periodic`` around ``task.__wrapped__(*args)``,
    starts it (see ``Periodic.start``) and returns it at once; ``await
    task()`` works too, as in a lifespan that awaits the task. ``task.periodic(*args)``
    builds one without starting it. Each call starts a new loop.
    """

    # Copied from the function by functools.update_wrapper.
    __name__: str
    __qualname__: str

    def __init__(self, fn: Callable[P, Any], options: dict[str, Any]) -> None:
        self.__wrapped__ = fn
        self._options = options
        functools.update_wrapper(self, fn)

    def periodic(self, *args: P.args, **kwargs: P.kwargs) -> Periodic:
        """A new, unstarted ``Periodic`` calling the function with these arguments."""
        fn: Callable[..., Any] = self.__wrapped__
        name = getattr(fn, "__qualname__", None)
        bound = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
        return Periodic(bound, **{"name": name, **self._options})

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Periodic:
        """Start a loop calling the function with these arguments; return its ``Periodic``."""
        return self.periodic(*args, **kwargs).start()

    def __repr__(self) -> str:
        return f"<repeat_every {getattr(self.__wrapped__, '__qualname__', self.__wrapped__)!r}>"


def repeat_every(
    *,
    seconds: float | timedelta,
    wait_first: bool | float | timedelta = False,
    max_repetitions: int | None = None,
    on_exception: Callable[[Exception], Any] | None = None,
    logger: LoggerLike | None = None,
    jitter: float | timedelta | None = None,
    raise_exceptions: bool = False,
    backoff: Backoff | None = None,
    name: str | None = None,
    seed: int | None = None,
) -> Callable[[Callable[P, Any]], RepeatedFunction[P]]:
    """Decorate a sync or async function so that calling it runs it every ``seconds``.

    ::

        @repeat_every(seconds=3600, on_exception=cache_cleanup_on_exception)
        def cache_cleanup_task() -> None: ...

        await cache_cleanup_task()   # in a lifespan: starts, returns at once
        cache_cleanup_task()         # in sync code: starts a daemon thread

    The arguments are those of ``Periodic`` (see there for each); they are
    checked here, before any function is decorated.

    Warning: this runs in *one process*. Under several worker processes
    (``uvicorn --workers 4``, gunicorn, several machines) every process runs
    its own loop and each tick runs once per process. For once per tick
    across a fleet use a durable schedule, ``@queue.periodic``
    (``docs/schedules.md``, "From repeat_every").

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """
    options: dict[str, Any] = {
        "seconds": seconds,
        "wait_first": wait_first,
        "max_repetitions": max_repetitions,
        "on_exception": on_exception,
        "logger": logger,
        "jitter": jitter,
        "raise_exceptions": raise_exceptions,
        "backoff": backoff,
        "seed": seed,
    }
    if name is not None:
        options["name"] = name
    Periodic(_nothing, **options)  # check the options now, where the mistake is

    def decorate(fn: Callable[P, Any]) -> RepeatedFunction[P]:
        return RepeatedFunction(fn, options)

    return decorate


def lifespan(
    *tasks: Periodic | RepeatedFunction[[]],
    inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    """An ASGI lifespan (FastAPI / Starlette ``lifespan=``) that runs periodic tasks.

    On startup it enters ``inner`` (an existing lifespan, if given), then
    starts every task; on shutdown it stops them (each waits for its run in
    progress), then exits ``inner``. Whatever ``inner`` yields (the lifespan
    state) is yielded through. A decorated function gets a fresh loop per
    app run; a ``Periodic`` is started and stopped as it is.

    ::

        app = FastAPI(lifespan=resile.periodic.lifespan(cache_cleanup_task, inner=db_lifespan))

    Raises:
        TypeError: a task that is neither a ``Periodic`` nor a ``@repeat_every`` function.
    """
    for task in tasks:
        if not isinstance(task, (Periodic, RepeatedFunction)):
            raise TypeError(
                f"lifespan: tasks must be Periodic objects or @repeat_every functions, got {task!r}"
            )
    if inner is not None and not callable(inner):
        raise TypeError(f"lifespan: inner must be a lifespan function or None, got {inner!r}")

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stack:
            state = None
            if inner is not None:
                state = await stack.enter_async_context(inner(app))
            started: list[Periodic] = []
            stack.push_async_callback(_stop_all, started)
            for task in tasks:
                periodic = task.periodic() if isinstance(task, RepeatedFunction) else task
                started.append(periodic.start())
            yield state

    return run


async def _stop_all(periodics: list[Periodic]) -> None:
    """Stop every periodic, newest first; then raise the first error, if any."""
    first: BaseException | None = None
    for periodic in reversed(periodics):
        try:
            await periodic.stop()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
