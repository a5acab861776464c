"""The worker: lease due tasks, run their handlers, record every outcome.

::

    worker = resile.Worker(queue)          # 10 threads; mode="process" | "async"
    worker.run()                           # until SIGINT / SIGTERM
    worker.run(burst=True)                 # until the queue is drained (tests, cron)

One *scheduler* loop (the thread that calls ``run``) does every store call
of the worker: it leases as many due tasks as it has free slots, hands them to
the executor of the mode, renews the leases of running attempts (heartbeat),
enforces exec timeouts, and records results and errors. Executors only run
handlers and report back, so a late result of an attempt that was timed out or
cancelled is never written.

Timing: the loop sleeps until the earliest of the next due task
(``Store.next_due_at``), the next heartbeat and the next exec deadline; an
enqueue in this process wakes it at once (``Store.add_listener``); a finished
attempt wakes it too. Tasks enqueued by *other* processes wake it through
``Store.watch`` when the store can tell (Redis: pub/sub); otherwise (SQLite)
they are noticed by a bounded poll of ``next_due_at`` (``poll_interval``,
20 ms by default) while the worker has a free slot. See ``docs/worker.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import multiprocessing
import os
import queue as queue_
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from resile._time import seconds as _seconds
from resile.backoff import Exponential
from resile.queue import _runner
from resile.queue._names import DEFAULT_LEASE_SECONDS, DEFAULT_QUEUE, Outcome, TaskStatus
from resile.queue._probe import Probe, capacity, gpu_probe, no_gpu_probe
from resile.queue._runner import Result, failure, load_queue
from resile.queue.context import context_parameter
from resile.queue.store.base import Store, normalize_queues
from resile.queue.task import Task, TaskError

__all__ = ["Mode", "Worker", "WorkerStats", "load_queue"]

logger = logging.getLogger("resile.worker")

Mode = Literal["thread", "process", "async"]
_MODES = ("thread", "process", "async")

# How long a probe's measurement is trusted before the worker asks again.
_PROBE_TTL = 1.0
# After "something is due" but the lease got nothing (a race with another worker, a lease
# lapsing at exactly now), look again after this gap, doubling up to the poll interval.
_MIN_GAP = 0.001
# Successes recorded together (``Store.complete_many``) at most.
_WRITE_BATCH = 256
# Store trouble (disk full, database locked for long) is retried with this policy.
_STORE_BACKOFF = Exponential(0.05, max_delay=2.0, jitter="full")

# The error type of an attempt whose process-mode child died under it.
_CHILD_DIED = "WorkerProcessDied"

# Attempt states, as seen by the scheduler.
_RUNNING = "running"  # the executor is running it
_FINISHED = "finished"  # the executor reported; its result is being written
_ABORTED = "aborted"  # timed out, canceled, lease lost or handed back: executor output ignored


@dataclass
class WorkerStats:
    """What a worker did since it started (read it any time; updated by the worker).

    Attributes:
        leased: attempts started.
        done: tasks completed.
        retried: failed attempts scheduled for a retry.
        failed: tasks dead-lettered.
        timeouts: attempts that overran their exec timeout.
        lost: attempts stopped, or whose outcome was not recorded, because the
            task was canceled or the lease lost meanwhile.
        released: tasks handed back unrun or unfinished at shutdown.
    """

    leased: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    timeouts: int = 0
    lost: int = 0
    released: int = 0


@dataclass(eq=False)
class _Attempt:
    task: Task
    # Set to stop the attempt; only made for handlers that take a TaskContext (the others
    # cannot look at it), which saves an Event (a Condition and two locks) per task.
    cancel_event: threading.Event | None = None
    deadline: float = math.inf  # monotonic
    state: str = _RUNNING
    handle: Any = None  # the executor's: an asyncio task, a child process


# -- executors --------------------------------------------------------------------------------


class _Executor:
    """Runs attempts and reports each ``Result`` through ``worker._report``."""

    def __init__(self, worker: Worker, slots: int) -> None:
        self.worker = worker
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

    def submit(self, attempt: _Attempt) -> None:
        raise NotImplementedError

    def abort(self, attempt: _Attempt) -> None:
        """Stop ``attempt`` as well as the mode allows; its result will be ignored."""
        if attempt.cancel_event is not None:
            attempt.cancel_event.set()

    def close(self, timeout: float) -> None:
        """Release everything; attempts still running were aborted before."""

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
        self.worker._signal()


class _ThreadExecutor(_Executor):
    """A pool of daemon threads. A thread cannot be killed: a timed-out or
    cancelled attempt keeps its thread (and its slot) until the handler returns."""

    def __init__(self, worker: Worker, slots: int) -> None:
        super().__init__(worker, slots)
        # A C-level queue: one put / get per task, cheaper than a deque and a Semaphore.
        self._inbox: queue_.SimpleQueue[_Attempt | None] = queue_.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, attempt: _Attempt) -> None:
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
        self._inbox.put(attempt)
        if spawn:
            t.start()

    def _serve(self) -> None:
        w = self.worker
        while True:
            attempt = self._inbox.get()
            if attempt is None:
                return
            try:
                result = _runner.run_sync(
                    w.queue, w.store, attempt.task, w.worker_id, attempt.cancel_event
                )
            except BaseException as exc:  # run_sync never raises; belt and braces
                result = failure(type(exc).__name__, str(exc))
            with self._lock:
                self._busy -= 1
            w._report(attempt, result)

    def close(self, timeout: float) -> None:
        # Idle threads exit at once; a thread stuck in an abandoned handler is a daemon
        # and is not waited for.
        for _ in self._threads:
            self._inbox.put(None)


class _AsyncExecutor(_Executor):
    """Coroutines on an event loop: the caller's (``run_async``) or one of our own."""

    def __init__(
        self, worker: Worker, slots: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        super().__init__(worker, slots)
        self._own = loop is None
        self.loop = loop if loop is not None else asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        if self._own:
            self._thread = threading.Thread(
                target=self.loop.run_forever, name="resile-async-loop", daemon=True
            )
            self._thread.start()

    def submit(self, attempt: _Attempt) -> None:
        with self._lock:
            self._busy += 1
        self.loop.call_soon_threadsafe(self._start, attempt)

    def _start(self, attempt: _Attempt) -> None:
        task = self.loop.create_task(self._run(attempt))
        attempt.handle = task
        if attempt.state is _ABORTED:
            task.cancel()
        task.add_done_callback(lambda t: self._finished(attempt, t))

    async def _offload(self, call: Callable[[], Any]) -> Any:
        # A daemon thread per call: a hung sync handler must not hold up interpreter exit,
        # as a ThreadPoolExecutor's threads would.
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def target() -> None:
            try:
                cf.set_result(call())
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

    async def _run(self, attempt: _Attempt) -> Result:
        w = self.worker
        return await _runner.run_async(
            w.queue, w.store, attempt.task, w.worker_id, attempt.cancel_event, self._offload
        )

    def _finished(self, attempt: _Attempt, task: asyncio.Task[Result]) -> None:
        with self._lock:
            self._busy -= 1
        if task.cancelled():
            self.worker._signal()
            return
        exc = task.exception()
        result = failure(type(exc).__name__, str(exc)) if exc is not None else task.result()
        self.worker._report(attempt, result)

    def abort(self, attempt: _Attempt) -> None:
        if attempt.cancel_event is not None:
            attempt.cancel_event.set()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(self._cancel, attempt)

    @staticmethod
    def _cancel(attempt: _Attempt) -> None:
        if attempt.handle is not None:
            attempt.handle.cancel()

    def close(self, timeout: float) -> None:
        if self._own:
            # Aborted coroutines were cancelled; give them a moment to unwind so that the
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
    __slots__ = ("attempt", "conn", "dying", "proc", "ready")

    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.dying = False
        self.attempt: _Attempt | None = None


class _ProcessExecutor(_Executor):
    """Long-lived child processes (``forkserver``, else ``spawn``), one attempt at a time each.

    A child that times out or is cancelled gets SIGTERM, then SIGKILL after
    ``kill_grace``, and is replaced. A child that dies by itself (``os._exit``,
    a segfault, the OOM killer) fails its attempt; the worker goes on.
    """

    def __init__(self, worker: Worker, slots: int, import_path: str, kill_grace: float) -> None:
        super().__init__(worker, slots)
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
            return sum(1 for c in self._children if c.ready and not c.dying and c.attempt is None)

    def booting(self) -> bool:
        with self._lock:
            return any(not c.ready and not c.dying for c in self._children)

    def submit(self, attempt: _Attempt) -> None:
        with self._lock:
            child = next(c for c in self._children if c.ready and not c.dying and c.attempt is None)
            child.attempt = attempt
            attempt.handle = child
        payload = {"task": attempt.task.to_dict(), "worker_id": self.worker.worker_id}
        with contextlib.suppress(OSError, ValueError):  # a dead child: its reader reports it
            child.conn.send(payload)

    def _read(self, child: _Child) -> None:
        w = self.worker
        try:
            kind, info = child.conn.recv()
            if kind == "fatal":
                err = TaskError.from_dict(info)
                w._fatal(
                    f"process mode: a child could not import the queue {self.import_path!r}: "
                    f"{err.type}: {err.message}"
                )
                return
            with self._lock:
                child.ready = True
                self._boot_failures = 0
            w._signal()
            while True:
                kind, wire = child.conn.recv()
                with self._lock:
                    attempt, child.attempt = child.attempt, None
                if attempt is not None:
                    w._report(attempt, Result.from_wire(wire))
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
            attempt, child.attempt = child.attempt, None
            if child in self._children:
                self._children.remove(child)
            respawn = not self._closing and not self.worker._stopping
            if not child.ready and not child.dying:
                self._boot_failures += 1
            too_many = self._boot_failures >= 3
        if attempt is not None:
            self.worker._report(
                attempt,
                failure(_CHILD_DIED, f"the handler's process {_describe_exit(code)}"),
            )
        if too_many:
            self.worker._fatal(
                f"process mode: 3 children in a row died before they were ready "
                f"(last {_describe_exit(code)}); is {self.import_path!r} importable?"
            )
        elif respawn:
            self._spawn()
        self.worker._signal()

    def abort(self, attempt: _Attempt) -> None:
        if attempt.cancel_event is not None:
            attempt.cancel_event.set()
        child = attempt.handle
        if not isinstance(child, _Child):
            return
        with self._lock:
            if child.attempt is not attempt or child.dying:
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


# -- the worker -------------------------------------------------------------------------------


def _find_import_path(queue: Any) -> str | None:
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


class Worker:
    """Runs the tasks of a queue: ``Worker(queue).run()``.

    Args:
        queue: the queue (``resile.connect(...)``) whose handlers run here.
        concurrency: attempts at once; default 10 threads, one process per
            CPU, or 100 coroutines.
        mode: ``"thread"`` (default), ``"process"`` (each attempt in a
            long-lived child process; a timed-out or cancelled attempt is
            killed) or ``"async"`` (coroutines on an event loop).
        queues: the queue names to serve; default the queue's own names.
        lease_seconds: how long a lease lasts without a heartbeat: a dead
            worker's tasks come back after at most this long.
        heartbeat: seconds between lease renewals; default ``lease_seconds / 3``.
        grace: at shutdown, how long running attempts may finish before
            they are stopped and handed back.
        probe: measures what this machine offers (see ``resile.queue._probe``);
            the worker leases only tasks whose ``resources`` it meets. Default:
            NVML when ``nvidia-ml-py`` is installed, else no GPU.
        worker_id: the lease owner name; default ``host:pid:random``.
        poll_interval: while idle, how often to look for tasks enqueued by
            other processes (an enqueue in this process wakes the worker at
            once); ``None`` turns polling off. Not used with a store that
            wakes workers across processes (``Store.watch``: Redis).
        kill_grace: process mode, seconds between SIGTERM and SIGKILL.
        import_path: process mode, ``"package.module:queue"`` for the
            children to import; found automatically for a module-level queue.

    Raises:
        ValueError: a bad mode, concurrency, duration or queue name (named
            with its value); process mode on a store other processes cannot
            open (``sqlite:///:memory:``) or a queue without an import path.
        TypeError: ``queue`` is not a queue or ``probe`` is not callable.
    """

    def __init__(
        self,
        queue: Any,
        *,
        concurrency: int | None = None,
        mode: Mode = "thread",
        queues: str | Sequence[str] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat: float | None = None,
        grace: float = 10.0,
        probe: Probe | None = None,
        worker_id: str | None = None,
        poll_interval: float | None = 0.02,
        kill_grace: float = 2.0,
        import_path: str | None = None,
    ) -> None:
        store = getattr(queue, "store", None)
        if not isinstance(store, Store):
            raise TypeError(
                f"Worker: queue must be a resile queue (resile.connect(...)), got {queue!r}"
            )
        if mode not in _MODES:
            raise ValueError(f"Worker: mode must be one of {list(_MODES)}, got {mode!r}")
        if concurrency is None:
            concurrency = {"thread": 10, "process": os.cpu_count() or 1, "async": 100}[mode]
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"Worker: concurrency must be an int >= 1, got {concurrency!r}")
        lease = _seconds(lease_seconds, "lease_seconds", "Worker")
        if lease <= 0:
            raise ValueError(f"Worker: lease_seconds must be > 0, got {lease_seconds!r}")
        beat = lease / 3 if heartbeat is None else _seconds(heartbeat, "heartbeat", "Worker")
        if not 0 < beat < lease:
            raise ValueError(
                f"Worker: heartbeat must be > 0 and below lease_seconds ({lease:g}), got {heartbeat!r}"
            )
        if probe is not None and not callable(probe):
            raise TypeError(f"Worker: probe must be a callable returning a dict, got {probe!r}")
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise ValueError(f"Worker: worker_id must be a non-empty str, got {worker_id!r}")
        self.queue = queue
        self.store: Store = store
        self.mode: Mode = mode
        self.concurrency = concurrency
        self.queues: tuple[str, ...] = normalize_queues(
            queues if queues is not None else _default_queues(queue)
        )
        self.lease_seconds = lease
        self.heartbeat = beat
        self.grace = _seconds(grace, "grace", "Worker")
        self.poll_interval = (
            None if poll_interval is None else _seconds(poll_interval, "poll_interval", "Worker")
        )
        if self.poll_interval == 0:
            raise ValueError("Worker: poll_interval must be > 0 or None, got 0")
        self.kill_grace = _seconds(kill_grace, "kill_grace", "Worker")
        self.probe: Probe = probe if probe is not None else gpu_probe
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.import_path = import_path
        if mode == "process":
            if ":memory:" in (store.url or "") or "mode=memory" in (store.url or ""):
                raise ValueError(
                    f"Worker: process mode needs a store other processes can open, got "
                    f"{store.url!r}; use a file (sqlite:///tasks.db) or thread mode"
                )
            if self.import_path is None:
                self.import_path = _find_import_path(queue)
            if self.import_path is None:
                raise ValueError(
                    "Worker: process mode needs the queue's import path for its children: "
                    "define the queue at module level or pass import_path='package.module:queue'"
                )
        self.stats = WorkerStats()

        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._force = False
        self._running_flag = False
        self._fatal_error: str | None = None
        self._reports: deque[tuple[_Attempt, Result]] = deque()
        self._context_of: dict[str, bool] = {}
        self._writes: deque[tuple[_Attempt, Result | None]] = deque()  # None: release
        self._running: dict[str, _Attempt] = {}
        self._executor: _Executor | None = None
        self._capacity: dict[str, float] = {}
        self._capacity_at = -math.inf
        self._watched = False  # the store wakes us for other processes' tasks: no polling

    # -- construction helpers -----------------------------------------------------------------

    @classmethod
    def from_import_path(cls, path: str, **options: Any) -> Worker:
        """A worker for the queue named ``"package.module:queue"`` (what the CLI calls).

        Raises:
            ValueError, ImportError, AttributeError, TypeError: see ``load_queue``;
                and whatever ``Worker`` raises for ``options``.
        """
        queue = load_queue(path)
        options.setdefault("import_path", path)
        return cls(queue, **options)

    def __repr__(self) -> str:
        return (
            f"Worker(id={self.worker_id!r}, mode={self.mode!r}, concurrency={self.concurrency}, "
            f"queues={list(self.queues)!r})"
        )

    # -- public control -------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Ask ``run`` to return: stop leasing, let running attempts finish within ``grace``,
        hand back the rest. ``force=True`` skips the grace period. Thread-safe, idempotent."""
        self._stopping = True
        if force:
            self._force = True
        self._signal()

    @property
    def running(self) -> bool:
        """True while ``run`` / ``run_async`` is serving."""
        return self._running_flag

    @property
    def free_slots(self) -> int:
        """Attempts that could start right now (0 when not running; process children
        still starting are not counted)."""
        executor = self._executor
        return 0 if executor is None else max(0, executor.free())

    def run(self, *, burst: bool = False, wait_for_scheduled: bool | float = True) -> None:
        """Serve the queue in this thread until stopped.

        SIGINT / SIGTERM stop it gracefully when ``run`` is called in the main
        thread (a second signal skips the grace period); elsewhere call ``stop()``.

        Args:
            burst: return once there is nothing left to do instead of waiting
                for new tasks.
            wait_for_scheduled: in burst mode, whether pending tasks that are
                not due yet (scheduled retries, delayed tasks, leases of other
                workers that may lapse) keep the worker alive: ``True`` waits
                for all of them, ``False`` returns once nothing is due now, a
                number waits for those due within that many seconds.

        Raises:
            RuntimeError: already running; process mode's children cannot
                start (the queue is not importable in them).
        """
        self._check_burst_arg(wait_for_scheduled)
        if self.mode == "async":
            executor: _Executor = _AsyncExecutor(self, self.concurrency)
        else:
            executor = self._make_executor()
        with self._signals():
            self._serve(executor, burst, wait_for_scheduled)

    async def run_async(
        self, *, burst: bool = False, wait_for_scheduled: bool | float = True
    ) -> None:
        """Serve the queue with handlers on the running asyncio loop (mode ``"async"``).

        The scheduler (store calls) runs in a helper thread; coroutine handlers
        run on this loop, sync ones in a thread pool. Cancelling the awaiting
        task stops the worker gracefully. Arguments as for ``run``.

        Raises:
            RuntimeError: the mode is not ``"async"``, or already running.
        """
        if self.mode != "async":
            raise RuntimeError(
                f"Worker.run_async needs mode='async', this worker has {self.mode!r}"
            )
        self._check_burst_arg(wait_for_scheduled)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Worker.run_async runs on asyncio; under trio call worker.run() in a thread "
                "(trio.to_thread.run_sync) instead"
            ) from None
        executor = _AsyncExecutor(self, self.concurrency, loop)
        fut = loop.run_in_executor(None, self._serve, executor, burst, wait_for_scheduled)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(Exception):
                await fut
            raise

    # -- internals: setup ---------------------------------------------------------------------

    @staticmethod
    def _check_burst_arg(wait: object) -> None:
        if isinstance(wait, bool):
            return
        if not isinstance(wait, (int, float)) or not 0 <= wait < math.inf:
            raise ValueError(
                f"Worker.run: wait_for_scheduled must be True, False or seconds >= 0, got {wait!r}"
            )

    def _make_executor(self) -> _Executor:
        if self.mode == "process":
            assert self.import_path is not None
            return _ProcessExecutor(self, self.concurrency, self.import_path, self.kill_grace)
        return _ThreadExecutor(self, self.concurrency)

    @contextlib.contextmanager
    def _signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[signal.Signals, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info(
                "resile worker %s: got %s, shutting down",
                self.worker_id,
                signal.Signals(signum).name,
            )
            self.stop(force=self._stopping)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                with contextlib.suppress(ValueError, OSError, TypeError):
                    signal.signal(sig, old)

    # -- internals: wake-ups and reports (any thread) --------------------------------------------

    def _signal(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _report(self, attempt: _Attempt, result: Result) -> None:
        self._reports.append((attempt, result))
        # A wake-up not yet taken by the loop covers this report too: the loop clears
        # ``_woken`` before it collects, and this report is in ``_reports`` before we look.
        if not self._woken:
            self._signal()

    def _fatal(self, message: str) -> None:
        logger.error("resile worker %s: %s", self.worker_id, message)
        self._fatal_error = message
        self.stop(force=True)

    def _on_created(self, tasks: Sequence[Task]) -> None:
        if any(t.queue in self.queues for t in tasks):
            self._signal()

    def _wait(self, timeout: float) -> None:
        with self._cond:
            if not self._woken and timeout > 0:
                self._cond.wait(timeout)
            self._woken = False

    # -- internals: the scheduler loop ------------------------------------------------------------

    def _offer(self) -> dict[str, float]:
        t = time.monotonic()
        if t - self._capacity_at >= _PROBE_TTL:
            try:
                self._capacity = capacity(self.probe())
            except Exception:
                logger.exception(
                    "resile worker %s: resource probe failed; offering no GPU", self.worker_id
                )
                self._capacity = capacity(no_gpu_probe())
            self._capacity_at = t
        return self._capacity

    def _serve(self, executor: _Executor, burst: bool, wait: bool | float) -> None:
        if self._running_flag:
            raise RuntimeError(f"{self!r} is already running")
        self._running_flag = True
        self._stopping = self._force = False
        self._fatal_error = None
        self._executor = executor
        remove_listener = self.store.add_listener(self._on_created)
        stop_watching: Callable[[], None] | None = None
        logger.info(
            "resile worker %s: serving %s (%s x%d)",
            self.worker_id,
            list(self.queues),
            self.mode,
            self.concurrency,
        )
        try:
            stop_watching = self.store.watch(self.queues, self._signal)
            self._watched = stop_watching is not None
            executor.open()
            self._loop(executor, burst, wait)
        finally:
            remove_listener()
            if stop_watching is not None:
                stop_watching()
            self._watched = False
            try:
                self._hand_back(executor)
            finally:
                executor.close(max(self.kill_grace, 1.0) + 1.0)
                self._executor = None
                self._running_flag = False
        if self._fatal_error is not None:
            raise RuntimeError(f"resile worker {self.worker_id}: {self._fatal_error}")

    def _loop(self, executor: _Executor, burst: bool, wait: bool | float) -> None:
        store = self.store
        next_beat = time.monotonic() + self.heartbeat
        stop_at: float | None = None
        gap = _MIN_GAP
        errors = 0
        while True:
            try:
                self._collect()
                # Successes wait for the lease below, to go in its round trip.
                held = None if self._stopping else self._held_successes()
                if held is None:
                    self._flush()
                mono = time.monotonic()
                if mono >= next_beat:
                    self._beat()
                    next_beat = mono + self.heartbeat
                self._expire(mono)
                deadline = min(
                    (a.deadline for a in self._running.values() if a.state is _RUNNING),
                    default=math.inf,
                )
                timeout = min(next_beat, deadline) - mono
                if self._stopping:
                    if stop_at is None:
                        stop_at = mono + (0.0 if self._force else self.grace)
                    if self._force:
                        stop_at = min(stop_at, mono)
                    if not self._running or mono >= stop_at:
                        return
                    self._wait(min(timeout, stop_at - mono))
                    continue
                free = executor.free()
                due: float | None = None
                now = 0.0
                if free > 0:
                    capacity_ = self._offer()
                    # Lease first: under load there is work, and asking "when is the next
                    # due time?" only when the lease came back empty saves a store call.
                    got = self._lease(store, free, capacity_, held)
                    held = None
                    for task in got:
                        self._dispatch(executor, task)
                    if got:
                        gap = _MIN_GAP
                        continue
                    now = store.now()
                    due = store.next_due_at(self.queues, capacity=capacity_)
                    if due is not None and due <= now:
                        # Due, yet nothing leased: someone else took it, a task came in just
                        # now, or a lapsed lease is reclaimed only strictly after its expiry.
                        # Look again shortly.
                        timeout = min(timeout, gap)
                        gap = min(gap * 2, self.poll_interval or 0.05)
                    elif due is not None:
                        timeout = min(timeout, due - now)
                    if self.poll_interval is not None and not self._watched:
                        timeout = min(timeout, self.poll_interval)
                if held:
                    self._flush()
                if burst and not self._running and not self._reports and not self._writes:
                    if free <= 0 and not executor.booting():
                        # Every slot is held by an abandoned (timed-out, unkillable) thread:
                        # end the burst only if there is nothing to wait for anyway.
                        now = store.now()
                        due = store.next_due_at(self.queues, capacity=self._offer())
                    if (free > 0 or not executor.booting()) and self._burst_over(due, now, wait):
                        return
                errors = 0
                self._wait(timeout)
            except Exception:
                errors += 1
                pause = _STORE_BACKOFF.delay(min(errors, 30))
                logger.exception(
                    "resile worker %s: store error; trying again in %.3f s", self.worker_id, pause
                )
                self._wait(pause)

    def _lease(
        self,
        store: Store,
        free: int,
        capacity_: dict[str, float],
        held: list[tuple[_Attempt, Result]] | None,
    ) -> list[Task]:
        """Lease up to ``free`` tasks, recording the ``held`` successes in the same call."""
        if held:
            try:
                done, got = store.complete_then_lease(
                    [(a.task.id, r.value) for a, r in held],
                    self.queues,
                    self.worker_id,
                    limit=free,
                    lease_seconds=self.lease_seconds,
                    capacity=capacity_,
                )
            except ValueError:  # a result that is not JSON: one by one, that one fails
                self._flush()
            else:
                self._completed(held, done)
                return got
        return store.lease(
            self.queues,
            self.worker_id,
            limit=free,
            lease_seconds=self.lease_seconds,
            capacity=capacity_,
        )

    @staticmethod
    def _burst_over(due: float | None, now: float, wait: bool | float) -> bool:
        if due is None:
            return True
        if due <= now:
            return False
        if wait is True:
            return False
        if wait is False:
            return True
        return due > now + float(wait)

    def _takes_context(self, handler: str) -> bool:
        """Whether ``handler``'s function has a TaskContext parameter (cached once found)."""
        known = self._context_of.get(handler)
        if known is None:
            fn = _runner.lookup_handler(self.queue, handler)
            if fn is None:
                return True  # unknown here (a child may know it): keep the event
            known = self._context_of[handler] = context_parameter(fn) is not None
        return known

    def _dispatch(self, executor: _Executor, task: Task) -> None:
        attempt = _Attempt(task)
        if self.mode != "thread" or self._takes_context(task.handler):
            attempt.cancel_event = threading.Event()
        if task.timeout is not None:
            attempt.deadline = time.monotonic() + task.timeout
        self._running[task.id] = attempt
        self.stats.leased += 1
        try:
            executor.submit(attempt)
        except Exception as exc:
            logger.exception("resile worker %s: could not start task %s", self.worker_id, task.id)
            self._report(
                attempt,
                failure(type(exc).__name__, f"the worker could not start the attempt: {exc}"),
            )

    def _collect(self) -> None:
        """Move executor reports of still-running attempts to the write queue."""
        while self._reports:
            attempt, result = self._reports.popleft()
            if attempt.state is not _RUNNING:
                continue  # timed out, canceled or handed back before it finished
            attempt.state = _FINISHED
            if self._stopping and result.error is not None and result.error.type == _CHILD_DIED:
                # A SIGTERM sent to the whole process group (systemd, a terminal) killed
                # the child while the worker shuts down: hand the task back uncounted.
                self._writes.append((attempt, None))
                continue
            self._writes.append((attempt, result))

    def _flush(self) -> None:
        """Write every outcome; a store error leaves the rest for the next round."""
        while self._writes:
            if self._complete_batch():
                continue
            attempt, result = self._writes[0]
            self._write(attempt, result)
            self._writes.popleft()
            self._running.pop(attempt.task.id, None)

    def _complete_batch(self) -> bool:
        """Record the successes at the head of the write queue with one
        ``Store.complete_many`` (one round trip on Redis); False when fewer than two."""
        batch: list[tuple[_Attempt, Result]] = []
        for attempt, result in self._writes:
            if result is None or not result.ok or len(batch) >= _WRITE_BATCH:
                break
            batch.append((attempt, result))
        if len(batch) < 2:
            return False
        try:
            done = self.store.complete_many_flags(
                [(a.task.id, r.value) for a, r in batch], self.worker_id
            )
        except ValueError:  # a result that is not JSON: one by one, that one fails
            return False
        self._completed(batch, done)
        return True

    def _held_successes(self) -> list[tuple[_Attempt, Result]] | None:
        """The write queue when it holds only successes (at most a batch), else ``None``.

        Those are sent together with the next lease (``Store.complete_then_lease``)."""
        writes = self._writes
        if len(writes) > _WRITE_BATCH:
            return None
        batch: list[tuple[_Attempt, Result]] = []
        for attempt, result in writes:
            if result is None or not result.ok:
                return None
            batch.append((attempt, result))
        return batch

    def _completed(self, batch: Sequence[tuple[_Attempt, Result]], done: Sequence[bool]) -> None:
        """Account for the head of the write queue (``batch``), recorded or not (``done``)."""
        for (attempt, _), ok in zip(batch, done, strict=True):
            if ok:
                self.stats.done += 1
            else:  # canceled meanwhile, or the lease was lost: nothing was written
                self.stats.lost += 1
            self._writes.popleft()
            self._running.pop(attempt.task.id, None)

    def _write(self, attempt: _Attempt, result: Result | None) -> None:
        store, task, wid = self.store, attempt.task, self.worker_id
        if result is None:
            if store.release(task.id, wid) is not None:
                self.stats.released += 1
            return
        if result.ok:
            try:
                done = store.complete(task.id, wid, result.value)
            except ValueError as exc:
                result = failure("ResultNotJSON", f"the handler's result cannot be stored: {exc}")
            else:
                if done is not None:
                    self.stats.done += 1
                else:  # canceled meanwhile, or the lease was lost: nothing was written
                    self.stats.lost += 1
                return
        assert result.error is not None
        after = store.fail(
            task.id,
            wid,
            result.error,
            permanent=result.permanent,
            outcome=result.outcome,
            delay=result.retry_after,
        )
        if after is None:
            self.stats.lost += 1
            return
        if after.status is TaskStatus.FAILED:
            self.stats.failed += 1
            logger.warning("resile: task %s dead-lettered: %r", task.id, result.error)
        else:
            self.stats.retried += 1

    def _beat(self) -> None:
        ids = [tid for tid, a in self._running.items() if a.state is not _ABORTED]
        if not ids:
            return
        held = self.store.renew_many(ids, self.worker_id, lease_seconds=self.lease_seconds)
        for tid in ids:
            if tid in held:
                continue
            attempt = self._running.pop(tid)
            if attempt.state is _RUNNING:
                attempt.state = _ABORTED
                self.stats.lost += 1
                logger.info(
                    "resile worker %s: task %s was canceled or its lease lost; stopping it",
                    self.worker_id,
                    tid,
                )
                assert self._executor is not None
                self._executor.abort(attempt)

    def _expire(self, mono: float) -> None:
        for attempt in list(self._running.values()):
            if attempt.state is _RUNNING and attempt.deadline <= mono:
                attempt.state = _ABORTED
                self.stats.timeouts += 1
                assert self._executor is not None
                self._executor.abort(attempt)
                t = attempt.task
                self._writes.append(
                    (
                        attempt,
                        failure(
                            "TimeoutError",
                            f"attempt {t.attempts} of task {t.id!r} exceeded its exec timeout "
                            f"of {t.timeout:g} s and was stopped ({self.mode} mode)",
                            outcome=Outcome.TIMEOUT,
                        ),
                    )
                )

    def _hand_back(self, executor: _Executor) -> None:
        """At exit: abort what still runs and give it back to the queue; write what is pending."""
        self._collect()
        for attempt in list(self._running.values()):
            if attempt.state is _RUNNING:
                attempt.state = _ABORTED
                executor.abort(attempt)
                self._writes.append((attempt, None))
        for i in range(5):
            try:
                self._flush()
                break
            except Exception:
                logger.exception(
                    "resile worker %s: could not record outcomes at shutdown", self.worker_id
                )
                time.sleep(_STORE_BACKOFF.delay(i + 1))
        self._running.clear()
        self._writes.clear()
        self._reports.clear()


def _default_queues(queue: Any) -> Sequence[str]:
    names = getattr(queue, "queues", None)
    if callable(names):
        names = None
    if isinstance(names, (list, tuple, set, frozenset)) and names:
        return sorted(str(n) for n in names)
    name = getattr(queue, "name", None)
    if isinstance(name, str) and name:
        return [name]
    return [DEFAULT_QUEUE]
