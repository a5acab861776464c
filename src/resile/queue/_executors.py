"""Where a leased task's handler runs: a pool thread, a coroutine, or a child process.

The worker (``resile.queue.worker``) leases tasks, renews their leases and
records every outcome; an executor only runs handlers and reports each
``Result`` back through its ``Host``, so a late result of an attempt the
worker already timed out or canceled is never written. Each running attempt
is an ``Execution``; its ``state`` says whether the executor's report still
counts.

* ``ThreadExecutor``: daemon threads, spawned on demand up to the slots.
* ``AsyncExecutor``: coroutines on the caller's event loop (``run_async``)
  or on one of its own in a thread.
* ``ProcessExecutor``: long-lived child processes (``_runner.child_main``),
  killed and replaced when an attempt must stop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import math
import multiprocessing
import queue as queue_
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resile import instrument
from resile.queue import _runner
from resile.queue._runner import Result, failure
from resile.queue.store.base import Store
from resile.queue.task import Task, TaskError

__all__ = [
    "ABORTED",
    "CHILD_DIED",
    "FINISHED",
    "RUNNING",
    "AsyncExecutor",
    "Execution",
    "Executor",
    "Host",
    "ProcessExecutor",
    "ThreadExecutor",
    "find_import_path",
    "make",
]

# The error type of an attempt whose process-mode child died under it.
CHILD_DIED = "WorkerProcessDied"

# Execution states, as seen by the worker. Plain strings compared with ``is``: the
# worker checks them for every task, and a module constant is the cheapest lookup.
RUNNING = "running"  # the executor is running it
FINISHED = "finished"  # the executor reported; its result is being written
ABORTED = "aborted"  # timed out, canceled, lease lost or handed back: executor output ignored


@dataclass(eq=False)
class Execution:
    """One attempt of a leased task while it runs (not its number, not its history record).

    Attributes:
        task: the task as leased.
        cancel_event: set to stop the attempt; only made for handlers that
            take a ``TaskContext`` (the others cannot look at it), which
            saves an Event (a Condition and two locks) per task.
        deadline: the exec-timeout instant on resile's monotonic clock.
        state: ``RUNNING``, ``FINISHED`` or ``ABORTED``.
        handle: the executor's: an asyncio task, a child process.
        ended_at: when the handler returned or raised, on the store's clock; a
            failure is recorded as of then, so its retry is due ``delay`` after
            the handler raised, however long the write waited.
        started, ended: when it started and ended (monotonic; for the instrumentation).
    """

    task: Task
    cancel_event: threading.Event | None = None
    deadline: float = math.inf
    state: str = RUNNING
    handle: Any = None
    ended_at: float | None = None
    # When it started and ended on resile's monotonic clock (kept for the instrumentation).
    started: float = 0.0
    ended: float = 0.0


@dataclass(frozen=True, eq=False)
class Host:
    """What an executor needs of the worker that owns it.

    Attributes:
        queue: the queue whose handlers run.
        store: its store (handlers' ``TaskContext`` writes through it).
        worker_id: the lease owner.
        report: hand back how an execution ended (any thread).
        wake: wake the worker's loop (a slot came free, a child is ready).
        fatal: stop the worker with this error (children cannot start).
        stopping: whether the worker is shutting down.
    """

    queue: Any
    store: Store
    worker_id: str
    report: Callable[[Execution, Result], None]
    wake: Callable[[], None]
    fatal: Callable[[str], None]
    stopping: Callable[[], bool]


class Executor:
    """Runs attempts and reports each ``Result`` through ``Host.report``."""

    def __init__(self, host: Host, slots: int) -> None:
        self.host = host
        self.slots = slots
        self._lock = threading.Lock()
        self._busy = 0

    def open(self) -> None:
        """Get ready to run (start threads, loops, children)."""

    def free(self) -> int:
        """Attempts that could start now."""
        with self._lock:
            return self.slots - self._busy

    def booting(self) -> bool:
        """True while capacity is still coming up (process children starting)."""
        return False

    def submit(self, execution: Execution) -> None:
        raise NotImplementedError

    def abort(self, execution: Execution) -> None:
        """Stop ``execution`` as well as the mode allows; its result will be ignored."""
        if execution.cancel_event is not None:
            execution.cancel_event.set()

    def close(self, timeout: float) -> None:
        """Release everything; attempts still running were aborted before."""

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
        self.host.wake()


class ThreadExecutor(Executor):
    """A pool of daemon threads. A thread cannot be killed: a timed-out or
    canceled attempt keeps its thread (and its slot) until the handler returns."""

    def __init__(self, host: Host, slots: int) -> None:
        super().__init__(host, slots)
        # A C-level queue: one put / get per task, cheaper than a deque and a Semaphore.
        self._inbox: queue_.SimpleQueue[Execution | None] = queue_.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, execution: Execution) -> None:
        with self._lock:
            self._busy += 1
            spawn = len(self._threads) < self._busy
            if spawn:
                t = threading.Thread(
                    target=self._serve,
                    name=f"resile-worker-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(t)
        self._inbox.put(execution)
        if spawn:
            t.start()

    def _serve(self) -> None:
        host = self.host
        while True:
            execution = self._inbox.get()
            if execution is None:
                return
            try:
                result = _runner.run_sync(
                    host.queue, host.store, execution.task, host.worker_id, execution.cancel_event
                )
            except BaseException as exc:  # run_sync never raises; belt and braces
                result = failure(type(exc).__name__, str(exc))
            with self._lock:
                self._busy -= 1
            host.report(execution, result)

    def close(self, timeout: float) -> None:
        # Idle threads exit at once; a thread stuck in an abandoned handler is a daemon
        # and is not waited for.
        for _ in self._threads:
            self._inbox.put(None)


class AsyncExecutor(Executor):
    """Coroutines on an event loop: the caller's (``run_async``) or one of our own."""

    def __init__(
        self, host: Host, slots: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        super().__init__(host, slots)
        self._own = loop is None
        self.loop = loop if loop is not None else asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        # Submitted, not started yet on the loop (``_start_all``).
        self._starting: collections.deque[Execution] = collections.deque()

    def open(self) -> None:
        if self._own:
            self._thread = threading.Thread(
                target=self.loop.run_forever, name="resile-async-loop", daemon=True
            )
            self._thread.start()

    def submit(self, execution: Execution) -> None:
        # One wake-up of the loop for a whole lease's batch (each ``call_soon_threadsafe``
        # writes to the loop's self-pipe: 20 us a task, docs/benchmarks.md).
        with self._lock:
            self._busy += 1
            first = not self._starting
            self._starting.append(execution)
        if first:
            self.loop.call_soon_threadsafe(self._start_all)

    def _start_all(self) -> None:
        while True:
            with self._lock:
                if not self._starting:
                    return
                execution = self._starting.popleft()
            self._start(execution)

    def _start(self, execution: Execution) -> None:
        task = self.loop.create_task(self._run(execution))
        execution.handle = task
        if execution.state is ABORTED:
            task.cancel()
        task.add_done_callback(lambda t: self._finished(execution, t))

    async def _offload(self, call: Callable[[], Any]) -> Any:
        # A daemon thread per call: a hung sync handler must not hold up interpreter exit,
        # as a ThreadPoolExecutor's threads would.
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        context = contextvars.copy_context()  # the attempt's scope (a current span) goes along

        def target() -> None:
            try:
                cf.set_result(context.run(call))
            except BaseException as exc:
                cf.set_exception(exc)

        threading.Thread(target=target, name="resile-sync-handler", daemon=True).start()
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            # The thread goes on; keep its slot until it returns.
            with self._lock:
                self._busy += 1
            cf.add_done_callback(lambda _: self._release())
            raise

    async def _run(self, execution: Execution) -> Result:
        host = self.host
        return await _runner.run_async(
            host.queue,
            host.store,
            execution.task,
            host.worker_id,
            execution.cancel_event,
            self._offload,
        )

    def _finished(self, execution: Execution, task: asyncio.Task[Result]) -> None:
        with self._lock:
            self._busy -= 1
        if task.cancelled():
            self.host.wake()
            return
        exc = task.exception()
        result = failure(type(exc).__name__, str(exc)) if exc is not None else task.result()
        self.host.report(execution, result)

    def abort(self, execution: Execution) -> None:
        if execution.cancel_event is not None:
            execution.cancel_event.set()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(self._cancel, execution)

    @staticmethod
    def _cancel(execution: Execution) -> None:
        if execution.handle is not None:
            execution.handle.cancel()

    def close(self, timeout: float) -> None:
        if self._own:
            # Aborted coroutines were canceled; give them a moment to unwind so that the
            # loop closes with no task pending.
            async def drain() -> None:
                me = asyncio.current_task()
                left = [t for t in asyncio.all_tasks() if t is not me]
                for t in left:
                    t.cancel()
                if left:
                    await asyncio.wait(left, timeout=1.0)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
            if not self.loop.is_running():
                self.loop.close()


class _Child:
    __slots__ = ("conn", "dying", "execution", "proc", "ready")

    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.dying = False
        self.execution: Execution | None = None


class ProcessExecutor(Executor):
    """Long-lived child processes (``forkserver``, else ``spawn``), one attempt at a time each.

    A child that times out or is canceled gets SIGTERM, then SIGKILL after
    ``kill_grace``, and is replaced. A child that dies by itself (``os._exit``,
    a segfault, the OOM killer) fails its attempt; the worker goes on.
    """

    def __init__(self, host: Host, slots: int, import_path: str, kill_grace: float) -> None:
        super().__init__(host, slots)
        self.import_path = import_path
        self.kill_grace = kill_grace
        self._ctx = _mp_context()
        self._children: list[_Child] = []
        self._closing = False
        self._boot_failures = 0

    def open(self) -> None:
        for _ in range(self.slots):
            self._spawn()

    def _spawn(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_runner.child_main,
            args=(child_conn, self.import_path),
            name="resile-worker-child",
            daemon=True,
        )
        child = _Child(proc, parent_conn)
        with self._lock:
            if self._closing:
                parent_conn.close()
                child_conn.close()
                return
            self._children.append(child)
            # Started under the lock, so that close() never sees an unstarted child.
            proc.start()
        child_conn.close()
        threading.Thread(
            target=self._read, args=(child,), name="resile-child-reader", daemon=True
        ).start()

    def free(self) -> int:
        with self._lock:
            return sum(1 for c in self._children if c.ready and not c.dying and c.execution is None)

    def booting(self) -> bool:
        with self._lock:
            return any(not c.ready and not c.dying for c in self._children)

    def submit(self, execution: Execution) -> None:
        with self._lock:
            child = next(
                c for c in self._children if c.ready and not c.dying and c.execution is None
            )
            child.execution = execution
            execution.handle = child
        payload = {
            "task": execution.task.to_dict(),
            "worker_id": self.host.worker_id,
            "relay": bool(instrument.hooks),  # the child forwards its events only when heard
            # The attempt's span, for the child to make current (a tracing hook's carrier).
            "span": instrument.attempt_carrier(execution.task.id, execution.task.attempts)
            if instrument.scoped
            else None,
        }
        with contextlib.suppress(OSError, ValueError):  # a dead child: its reader reports it
            child.conn.send(payload)

    def _read(self, child: _Child) -> None:
        host = self.host
        try:
            kind, info = child.conn.recv()
            if kind == "fatal":
                err = TaskError.from_dict(info)
                host.fatal(
                    f"process mode: a child could not import the queue {self.import_path!r}: "
                    f"{err.type}: {err.message}"
                )
                return
            with self._lock:
                child.ready = True
                self._boot_failures = 0
            host.wake()
            while True:
                kind, wire = child.conn.recv()
                if kind == "event":  # the child's instrumentation, counted here (one endpoint)
                    instrument.emit(wire)
                    continue
                with self._lock:
                    execution, child.execution = child.execution, None
                if execution is not None:
                    host.report(execution, Result.from_wire(wire))
        except (EOFError, OSError):
            pass
        finally:
            self._died(child)

    def _died(self, child: _Child) -> None:
        child.proc.join(5.0)
        code = child.proc.exitcode
        with contextlib.suppress(Exception):
            child.conn.close()
        with self._lock:
            execution, child.execution = child.execution, None
            if child in self._children:
                self._children.remove(child)
            respawn = not self._closing and not self.host.stopping()
            if not child.ready and not child.dying:
                self._boot_failures += 1
            too_many = self._boot_failures >= 3
        if execution is not None:
            self.host.report(
                execution,
                failure(CHILD_DIED, f"the handler's process {_describe_exit(code)}"),
            )
        if too_many:
            self.host.fatal(
                f"process mode: 3 children in a row died before they were ready "
                f"(last {_describe_exit(code)}); is {self.import_path!r} importable?"
            )
        elif respawn:
            self._spawn()
        self.host.wake()

    def abort(self, execution: Execution) -> None:
        if execution.cancel_event is not None:
            execution.cancel_event.set()
        child = execution.handle
        if not isinstance(child, _Child):
            return
        with self._lock:
            if child.execution is not execution or child.dying:
                return
            child.dying = True
        threading.Thread(
            target=self._kill, args=(child,), name="resile-child-killer", daemon=True
        ).start()

    def _kill(self, child: _Child) -> None:
        with contextlib.suppress(Exception):
            child.proc.terminate()
            child.proc.join(self.kill_grace)
            if child.proc.is_alive():
                child.proc.kill()

    def close(self, timeout: float) -> None:
        with self._lock:
            self._closing = True
            children = list(self._children)
        for c in children:
            with contextlib.suppress(Exception):
                c.conn.send(None)
        # Real time, not resile's clock: this bounds a wait on real processes.
        end = time.monotonic() + timeout
        for c in children:
            if c.proc.pid is None:  # a replacement that was never started
                continue
            c.proc.join(max(0.0, end - time.monotonic()))
            if c.proc.is_alive():
                c.proc.kill()
                c.proc.join(1.0)


def _mp_context() -> Any:
    """``forkserver`` where it exists, else ``spawn``; never plain ``fork``.

    ``fork`` from a process that runs threads (ours does) can deadlock the
    child. A fork server is a clean single-threaded process that has imported
    resile and the main script once (the main script under the usual
    ``if __name__ == "__main__":`` guard), so each child starts in
    milliseconds instead of re-importing everything as ``spawn`` does.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "resile.queue._runner"])
        return ctx
    return multiprocessing.get_context("spawn")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def find_import_path(queue: Any) -> str | None:
    """``"module:name"`` of a module-level variable holding ``queue``, if any."""
    found: str | None = None
    for name, module in list(sys.modules.items()):
        if module is None or name == "__mp_main__":
            continue
        try:
            attrs = vars(module)
        except TypeError:
            continue
        for attr, value in list(attrs.items()):
            if value is queue and not attr.startswith("__"):
                if name != "__main__":
                    return f"{name}:{attr}"
                found = f"__main__:{attr}"
    return found


def make(
    mode: str,
    host: Host,
    slots: int,
    *,
    import_path: str | None = None,
    kill_grace: float = 2.0,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Executor:
    """The executor of ``mode`` (``"thread"``, ``"process"``, ``"async"``) with ``slots`` slots.

    ``loop`` (async mode) runs the coroutines on that loop instead of one of
    the executor's own; ``import_path`` (process mode) is what the children
    import.
    """
    if mode == "async":
        return AsyncExecutor(host, slots, loop)
    if mode == "process":
        assert import_path is not None
        return ProcessExecutor(host, slots, import_path, kill_grace)
    return ThreadExecutor(host, slots)
