"""Keep one long-lived async connection up: reconnect with backoff, health checks, resync.

A ``Supervisor`` owns one connection (a WebSocket, an MQTT or database
session, anything an async ``connect()`` returns) and keeps it alive::

    sup = Supervisor(
        connect=lambda: websockets.connect(url),
        on_reconnect=resubscribe,               # re-sync state on every reconnect
        wait_closed=lambda ws: ws.wait_closed(), # notice a close at once
        health_check=lambda ws: ws.ping(),       # optional, every `heartbeat` s
        policy=Exponential(0.5, max_delay=30.0),
    )
    async with sup:                              # starts it; stops it on exit
        while True:
            async with sup.session() as ws:      # waits for a connection
                handle(await ws.recv())          # an error here reports the drop

How the supervisor learns that the connection dropped:

* the user's code reports it: ``supervisor.connection_lost(exc)``, or any
  exception that escapes an ``async with supervisor.session() as conn:`` block;
* the connection says so: ``wait_closed(conn)`` (for example
  ``lambda ws: ws.wait_closed()`` with ``websockets``) returned;
* the health check fails: every ``heartbeat`` seconds ``health_check(conn)``
  is awaited; raising, returning ``False`` or not answering within
  ``health_timeout`` counts as a drop.

After a drop (or a failed connect) the supervisor closes the connection,
waits ``policy.delay(k)`` for the k-th consecutive failure, and connects
again. A connection that stayed up for ``stable_after`` seconds resets ``k``,
so a server that accepts and then drops at once is backed off ever longer,
while one drop after hours of service reconnects after the first delay.

Runs under asyncio and trio. Backoff waits go through resile's clock
(``resile.testing.no_waits()`` makes them instant); heartbeat and
``wait_connected`` timeouts are real event-loop time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from enum import Enum
from types import TracebackType
from typing import Any, Generic, TypeVar

from resile import _aio, _time
from resile.backoff import Backoff, Exponential
from resile.deadline import deadline
from resile.errors import DeadlineExceeded
from resile.stop import Stop, never

__all__ = ["Supervisor", "SupervisorState", "SupervisorStatistics"]

C = TypeVar("C")

log = logging.getLogger("resile.supervisor")

DEFAULT_POLICY = Exponential(0.5, max_delay=30.0)


class SupervisorState(str, Enum):
    """Where a ``Supervisor`` is in its cycle."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class SupervisorStatistics:
    """Counters of one supervisor since it was made.

    Attributes:
        connects: connections opened (the first one and every reconnect).
        reconnects: connections opened after the first.
        failures: connect attempts that failed (``connect()`` or
            ``on_reconnect`` raised).
        drops: open connections that were lost (reported, or a failed health
            check).
        last_error: the error of the last failure or drop, or ``None``.
        delays: the backoff waits, oldest first (the last 1,000).
    """

    __slots__ = ("connects", "delays", "drops", "failures", "last_error")

    def __init__(self) -> None:
        self.connects = 0
        self.failures = 0
        self.drops = 0
        self.last_error: BaseException | None = None
        self.delays: deque[float] = deque(maxlen=1000)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (``last_error`` as its ``repr``)."""
        return {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "drops": self.drops,
            "last_error": None if self.last_error is None else repr(self.last_error),
            "delays": list(self.delays),
        }

    def __repr__(self) -> str:
        return (
            f"SupervisorStatistics(connects={self.connects}, failures={self.failures}, "
            f"drops={self.drops}, last_error={self.last_error!r})"
        )


class _HealthCheckFailed(ConnectionError):
    """A health check returned a falsy value."""


def _check_callable(value: object, field: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not callable(value):
        raise TypeError(f"Supervisor: {field} must be callable, got {value!r}")


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async callable and return its (awaited) result."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Supervisor(Generic[C]):
    """Keep one async connection alive: reconnect with backoff when it drops.

    Args:
        connect: an async callable (no arguments) that opens a connection.
            It may return the connection, or an async context manager that
            yields it (as ``websockets.connect(url)`` does); then the
            supervisor enters it to connect and exits it to close. It should
            bound its own time (``websockets`` has ``open_timeout``).
        health_check: optional ``check(conn)``, sync or async, run every
            ``heartbeat`` seconds while connected; raising, returning
            ``False`` or taking longer than ``health_timeout`` drops the
            connection. (``None`` counts as healthy.)
        on_reconnect: optional ``hook(conn)``, sync or async, called after
            every successful reconnect (not the first connect) before the
            connection is handed out: re-subscribe, resume from the last
            offset. If it raises, the attempt counts as failed.
        policy: the backoff between attempts (a ``resile.backoff`` strategy):
            the wait after the k-th consecutive failure is ``policy.delay(k)``.
            Default ``Exponential(0.5, max_delay=30.0)`` with full jitter.
        heartbeat: seconds between health checks (default 10).
        health_timeout: seconds a health check may take (default: ``heartbeat``).
        stable_after: seconds a connection must stay up to reset the backoff
            to its first delay (default 10).
        stop: when to give up reconnecting (a ``resile.stop`` condition, asked
            with the consecutive failures, the seconds since the first of them
            and the next delay). Default: never.
        wait_closed: optional async ``wait_closed(conn)`` that returns (or
            raises) when the connection has closed, so that a drop is noticed
            at once even when nobody is reading: ``lambda ws: ws.wait_closed()``
            for ``websockets``.
        close: optional ``close(conn)``, sync or async, to close a connection
            that ``connect`` returned directly. Default: ``conn.aclose()`` or
            ``conn.close()`` if it has one (awaited when async). Its errors
            are logged and ignored.
        name: a name for logs and errors.

    Raises:
        TypeError: a callable or policy of the wrong kind, named in the message.
        ValueError: a duration that is negative, zero (``heartbeat``,
            ``health_timeout``), NaN or infinite.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[C] | AbstractAsyncContextManager[C]],
        *,
        health_check: Callable[[C], Any] | None = None,
        on_reconnect: Callable[[C], Any] | None = None,
        policy: Backoff = DEFAULT_POLICY,
        heartbeat: float | timedelta = 10.0,
        health_timeout: float | timedelta | None = None,
        stable_after: float | timedelta = 10.0,
        stop: Stop = never,
        wait_closed: Callable[[C], Awaitable[Any]] | None = None,
        close: Callable[[C], Any] | None = None,
        name: str = "supervisor",
    ) -> None:
        _check_callable(connect, "connect", required=True)
        _check_callable(health_check, "health_check")
        _check_callable(on_reconnect, "on_reconnect")
        _check_callable(wait_closed, "wait_closed")
        _check_callable(close, "close")
        if not isinstance(policy, Backoff):
            raise TypeError(f"Supervisor: policy must be a resile.backoff strategy, got {policy!r}")
        if not isinstance(stop, Stop):
            raise TypeError(f"Supervisor: stop must be a resile.stop condition, got {stop!r}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"Supervisor: name must be a non-empty str, got {name!r}")
        self.connect = connect
        self.health_check = health_check
        self.on_reconnect = on_reconnect
        self.policy = policy
        self.heartbeat = _time.positive_seconds(heartbeat, "heartbeat", "Supervisor")
        self.health_timeout = (
            self.heartbeat
            if health_timeout is None
            else _time.positive_seconds(health_timeout, "health_timeout", "Supervisor")
        )
        self.stable_after = _time.seconds(stable_after, "stable_after", "Supervisor")
        self.stop_condition = stop
        self.wait_closed = wait_closed
        self.close = close
        self.name = name
        self.statistics = SupervisorStatistics()

        self._state = SupervisorState.STOPPED
        self._conn: C | None = None
        self._lost: Any = None  # event of the current connection
        self._lost_error: BaseException | None = None
        self._changed: Any = None  # set (and replaced) on every state change
        self._running = False
        self._ended = False  # a run ended and no other has started
        self._stopping = False
        self._done: Any = None
        self._lib: str | None = None
        self._thread: int | None = None
        # Runs a callable in the running loop from any thread (set by run()).
        self._call_in_loop: Callable[[Callable[[], object]], object] | None = None
        self._inner: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._scope: Any = None
        self._nursery_cm: Any = None

    # -- what users read ----------------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        """The current ``SupervisorState``."""
        return self._state

    @property
    def connection(self) -> C | None:
        """The open connection, or ``None`` while there is none."""
        return self._current()

    def _current(self) -> C | None:
        # A connection whose loss was reported is not handed out again.
        if self._state is SupervisorState.CONNECTED and self._lost_error is None:
            return self._conn
        return None

    @property
    def running(self) -> bool:
        """True while ``run()`` is going (started and not yet stopped)."""
        return self._running

    def __repr__(self) -> str:
        return (
            f"<Supervisor {self.name!r} state={self._state.value} "
            f"connects={self.statistics.connects} failures={self.statistics.failures}>"
        )

    async def wait_connected(self, timeout: float | timedelta | None = None) -> C:
        """Wait until a connection is up and return it.

        Args:
            timeout: the most seconds to wait (real time); ``None`` waits for ever.

        Raises:
            TimeoutError: no connection within ``timeout``.
            ConnectionError: the supervisor stopped (or gave up) while waiting;
                its ``__cause__`` is the last connection error, if any.
            ValueError: a negative, NaN or infinite ``timeout``.
        """
        limit = None if timeout is None else _time.seconds(timeout, "timeout", "wait_connected")
        end = None if limit is None else time.monotonic() + limit
        while True:
            conn = self._current()
            if conn is not None:
                return conn
            if self._ended:
                raise ConnectionError(
                    f"supervisor {self.name!r} is stopped; start it (start(), run() or "
                    "`async with supervisor:`) before waiting for its connection"
                ) from self.statistics.last_error
            if self._changed is None:
                self._changed = _aio.new_event()
            left = None if end is None else end - time.monotonic()
            if not await _aio.wait_event(self._changed, left):
                raise TimeoutError(
                    f"supervisor {self.name!r}: no connection within {limit:g} s "
                    f"(state {self._state.value}, last error {self.statistics.last_error!r})"
                )

    def connection_lost(self, exc: BaseException | None = None, *, conn: Any = None) -> bool:
        """Report that the connection dropped; the supervisor closes it and reconnects.

        Safe to call from the event loop or from another thread, any number
        of times: only the first report for a connection counts.

        Args:
            exc: the error that showed the drop (kept in ``statistics.last_error``).
            conn: the connection the report is about; a report about an older
                connection than the current one is ignored.

        Returns:
            True when the report was taken (it was about the open connection).
        """
        if conn is not None and conn is not self._conn:
            return False
        lost = self._lost
        if lost is None or self._state is not SupervisorState.CONNECTED:
            return False
        if self._lost_error is None:
            self._lost_error = exc or ConnectionError(f"{self.name}: connection reported lost")
        if self._thread is None or threading.get_ident() == self._thread:
            lost.set()
        else:
            assert self._call_in_loop is not None
            self._call_in_loop(lost.set)
        return True

    @asynccontextmanager
    async def session(self, timeout: float | timedelta | None = None) -> AsyncIterator[C]:
        """``async with supervisor.session() as conn:`` use the connection; errors report a drop.

        Waits for a connection (as ``wait_connected``) and yields it. An
        exception that escapes the block is reported with
        ``connection_lost(exc, conn=conn)`` and then re-raised; a block that
        ends normally reports nothing.

        Raises:
            TimeoutError, ConnectionError: as ``wait_connected``.
        """
        conn = await self.wait_connected(timeout)
        try:
            yield conn
        except Exception as exc:
            self.connection_lost(exc, conn=conn)
            raise

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and keep the connection up until ``stop()`` is called.

        Under trio run it in a nursery (``nursery.start_soon(supervisor.run)``)
        or use ``async with supervisor:``; under asyncio ``start()`` does it
        in a task.

        Raises:
            RuntimeError: it is already running.
            Exception: the last connection error, when the ``stop`` condition
                gave up (the state is then ``stopped``).
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        lib = _aio.current_async_library()
        self._running = True
        self._ended = False
        self._stopping = False
        self._lib = lib
        self._thread = threading.get_ident()
        self._done = _aio.new_event(lib)
        self._call_in_loop = _aio.loop_caller()
        try:
            if lib == _aio.TRIO:
                with _aio.cancel_scope() as scope:
                    self._scope = scope
                    await self._main()
            else:
                inner = asyncio.create_task(self._main(), name=f"resile-supervisor-{self.name}")
                self._inner = inner
                try:
                    await asyncio.wait({inner})
                except asyncio.CancelledError:
                    inner.cancel()
                    await asyncio.wait({inner})
                    raise
                if not inner.cancelled():
                    inner.result()  # re-raise a give-up
                elif not self._stopping:
                    raise asyncio.CancelledError()
        finally:
            self._scope = None
            self._inner = None
            self._conn = None
            self._running = False
            self._ended = True
            self._set_state(SupervisorState.STOPPED)
            self._done.set()

    async def start(self) -> None:
        """Start ``run()`` in a background asyncio task and return at once.

        Raises:
            RuntimeError: under trio (use ``async with supervisor:`` or a
                nursery), or when it is already running.
        """
        if _aio.current_async_library() == _aio.TRIO:
            raise RuntimeError(
                "Supervisor.start() needs asyncio; under trio use `async with supervisor:` "
                "or `nursery.start_soon(supervisor.run)`"
            )
        if self._running or (self._task is not None and not self._task.done()):
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._task = asyncio.create_task(self._run_logged(), name=f"resile-run-{self.name}")
        # Let the task begin, so that stop() and wait_connected() see it running.
        await asyncio.sleep(0)

    async def _run_logged(self) -> None:
        try:
            await self.run()
        except Exception:
            log.exception("supervisor %r gave up", self.name)

    async def stop(self) -> None:
        """Stop supervising: cancel a pending attempt or wait, close the connection, wait for it.

        Returns once ``run()`` has ended; the state is then ``stopped``. Does
        nothing when the supervisor is not running. Do not call it from
        ``connect``, ``health_check`` or ``on_reconnect`` themselves.
        """
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        if self._inner is not None:
            self._inner.cancel()
        task, self._task = self._task, None
        if task is not None:
            if not self._running:
                task.cancel()
            await asyncio.wait({task})
        elif self._running and self._done is not None:
            await self._done.wait()

    async def __aenter__(self) -> Supervisor[C]:
        if _aio.current_async_library() == _aio.TRIO:
            self._nursery_cm = _aio.open_nursery()
            nursery = await self._nursery_cm.__aenter__()
            await nursery.start(self._run_started)
        else:
            await self.start()
        return self

    async def _run_started(self, task_status: Any) -> None:
        task_status.started()
        await self.run()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        cm, self._nursery_cm = self._nursery_cm, None
        if cm is not None:
            await cm.__aexit__(et, e, tb)

    # -- the loop -----------------------------------------------------------------------

    def _set_state(self, state: SupervisorState) -> None:
        if state is self._state:
            return
        log.debug("supervisor %r: %s -> %s", self.name, self._state.value, state.value)
        self._state = state
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _main(self) -> None:
        streak = 0  # consecutive failures (failed connects and short-lived connections)
        streak_start = 0.0
        previous: float | None = None
        first = True
        clock = _time.clock
        while True:
            self._set_state(SupervisorState.CONNECTING)
            connected_at: float | None = None
            error: BaseException
            try:
                async with AsyncExitStack() as stack:
                    try:
                        conn = await self._open(stack)
                        if not first and self.on_reconnect is not None:
                            await _call(self.on_reconnect, conn)
                    except Exception as exc:
                        error = exc
                        self.statistics.failures += 1
                        log.warning("supervisor %r: connect failed: %r", self.name, exc)
                    else:
                        first = False
                        connected_at = clock.monotonic()
                        try:
                            error = await self._serve(conn)
                        finally:
                            self._conn = None
                            self._lost = None
                            if self._state is SupervisorState.CONNECTED:
                                self._set_state(SupervisorState.CONNECTING)
                        self.statistics.drops += 1
                        log.warning("supervisor %r: connection lost: %r", self.name, error)
                    # Leaving the stack closes the connection.
            except Exception as exc:
                log.debug(
                    "supervisor %r: closing the connection raised %r; ignored", self.name, exc
                )
            self.statistics.last_error = error
            now = clock.monotonic()
            if connected_at is not None and now - connected_at >= self.stable_after:
                streak, previous = 0, None
            streak += 1
            if streak == 1:
                streak_start = now
            delay = self.policy.delay(streak, previous)
            previous = delay
            if self.stop_condition.should_stop(streak, now - streak_start, delay):
                _note(error, f"resile: supervisor {self.name!r} gave up after {streak} failure(s)")
                raise error
            self.statistics.delays.append(delay)
            self._set_state(SupervisorState.BACKING_OFF)
            log.info("supervisor %r: reconnecting in %.3f s", self.name, delay)
            if delay > 0.0:
                await clock.async_sleep(delay)

    async def _open(self, stack: AsyncExitStack) -> C:
        opened = self.connect()
        if hasattr(opened, "__aenter__") and hasattr(opened, "__aexit__"):
            cm: Any = opened
            conn_: C = await cm.__aenter__()
            # Stopping the supervisor cancels the loop; that is no error of the
            # connection, so it is always closed as a normal exit.
            stack.push_async_callback(cm.__aexit__, None, None, None)
            return conn_
        if not inspect.isawaitable(opened):
            raise TypeError(
                f"Supervisor: connect() must return an awaitable or an async context manager, "
                f"got {opened!r}"
            )
        conn: C = await opened
        stack.push_async_callback(self._close_conn, conn)
        return conn

    async def _close_conn(self, conn: C) -> None:
        if self._lib == _aio.TRIO:
            # The loop may be canceled (stop()): still close, for a bounded time.
            with _aio.shielded(self.health_timeout):
                await self._close_now(conn)
        else:
            await self._close_now(conn)

    async def _close_now(self, conn: C) -> None:
        try:
            if self.close is not None:
                await _call(self.close, conn)
                return
            closer = getattr(conn, "aclose", None) or getattr(conn, "close", None)
            if callable(closer):
                await _call(closer)
        except Exception as exc:
            log.debug("supervisor %r: closing the connection raised %r; ignored", self.name, exc)

    async def _serve(self, conn: C) -> BaseException:
        """Hand the connection out and watch it; return the error that ended it."""
        lib = self._lib or "asyncio"
        self._lost = lost = _aio.new_event(lib)
        self._lost_error = None
        self._conn = conn
        self.statistics.connects += 1
        log.info("supervisor %r: connected (%d)", self.name, self.statistics.connects)
        self._set_state(SupervisorState.CONNECTED)
        if self.wait_closed is None:
            return await self._watch(conn, lost)
        if lib == _aio.TRIO:
            async with _aio.open_nursery() as nursery:
                nursery.start_soon(self._watch_closed, conn)
                try:
                    return await self._watch(conn, lost)
                finally:
                    nursery.cancel_scope.cancel()
        watcher = asyncio.create_task(self._watch_closed(conn))
        try:
            return await self._watch(conn, lost)
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})

    async def _watch(self, conn: C, lost: Any) -> BaseException:
        while True:
            if self.health_check is None:
                await lost.wait()
            elif not await _aio.wait_event(lost, self.heartbeat):
                failure = await self._check(conn)
                if failure is not None:
                    return failure
                continue
            return self._lost_error or ConnectionError(f"{self.name}: connection lost")

    async def _watch_closed(self, conn: C) -> None:
        assert self.wait_closed is not None
        error: BaseException
        try:
            await _call(self.wait_closed, conn)
            error = ConnectionError(f"{self.name}: the connection closed")
        except Exception as exc:
            error = exc
        self.connection_lost(error, conn=conn)

    async def _check(self, conn: C) -> BaseException | None:
        assert self.health_check is not None
        try:
            async with deadline(self.health_timeout):
                healthy = await _call(self.health_check, conn)
        except DeadlineExceeded as exc:
            failure = _HealthCheckFailed(
                f"{self.name}: health check did not answer within {self.health_timeout:g} s"
            )
            failure.__cause__ = exc
            return failure
        except Exception as exc:
            return exc
        if healthy is False:
            return _HealthCheckFailed(f"{self.name}: health check returned False")
        return None


def _note(exc: BaseException, note: str) -> None:
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(note)
