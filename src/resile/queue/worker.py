"""The worker: lease due tasks, run their handlers, record every outcome.

::

    worker = resile.Worker(queue)          # 10 threads; mode="process" | "async"
    worker.run()                           # until SIGINT / SIGTERM
    worker.run(burst=True)                 # until the queue is drained (tests, cron)

One *scheduler* loop (the thread that calls ``run``) does every store call
of the worker: it leases as many due tasks as it has free slots, hands them to
the executor of the mode, renews the leases of running attempts (heartbeat),
enforces exec timeouts, and records results and errors. Executors
(``resile.queue._executors``) only run handlers and report back, so a late
result of an attempt that was timed out or canceled is never written.

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
import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, Literal

from resile import _time, instrument
from resile._time import seconds as _seconds
from resile.backoff import Exponential
from resile.deadline import deadline
from resile.errors import StoreUnavailable
from resile.instrument import AttemptOutcome, Kind
from resile.queue import _executors, _runner
from resile.queue._executors import (
    ABORTED,
    CHILD_DIED,
    FINISHED,
    RUNNING,
    Execution,
    Executor,
    Host,
    find_import_path,
)
from resile.queue._names import DEFAULT_LEASE_SECONDS, DEFAULT_QUEUE, Outcome, TaskStatus
from resile.queue._probe import Probe, capacity, gpu_probe, no_gpu_probe
from resile.queue._runner import Result, failure, load_queue
from resile.queue._scheduler import Scheduler
from resile.queue.context import context_parameter
from resile.queue.registry import WorkerRecord
from resile.queue.store.base import Store, normalize_queues
from resile.queue.task import Task

__all__ = ["Mode", "Worker", "WorkerStats", "load_queue"]

logger = logging.getLogger("resile.worker")

Mode = Literal["thread", "process", "async"]
_MODES = ("thread", "process", "async")

# How long a probe's measurement is trusted before the worker asks again.
_PROBE_TTL = 1.0
# After "something is due" but the lease got nothing (it became due just after the lease
# looked, a race with another worker, a lease lapsing at exactly now), lease again at once,
# then after this gap, doubling up to the poll interval.
_MIN_GAP = 0.001
# Successes recorded together (``Store.complete_many``) at most.
_WRITE_BATCH = 256
# Store trouble (disk full, database locked for long) is retried with this policy.
_STORE_BACKOFF = Exponential(0.05, max_delay=2.0, jitter="full")
# Seconds the store calls of one round of the loop may spend riding through an outage (the
# store's own retries: Redis' retry_for, SQLite's lock_timeout) before the loop takes over:
# it looks at the stop flag, logs the outage once and tries again after _STORE_BACKOFF. So
# a signal is noticed within about this long whatever the store does.
_STORE_PATIENCE = 1.0


# The same after a second signal: one try of each write, bounded so the exit is at once.
_FORCED_PATIENCE = 0.5
# At most this many task ids are named in the log line of outcomes left unwritten at exit.
_NAMED = 20


class _ForcedStop(BaseException):
    """Raised by a second SIGINT / SIGTERM in the loop, to leave a blocked store call."""


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


class Worker:
    """Runs the tasks of a queue: ``Worker(queue).run()``.

    Args:
        queue: the queue (``resile.connect(...)``) whose handlers run here.
        concurrency: attempts at once; default 10 threads, one process per
            CPU, or 100 coroutines.
        mode: ``"thread"`` (default), ``"process"`` (each attempt in a
            long-lived child process; a timed-out or canceled attempt is
            killed) or ``"async"`` (coroutines on an event loop).
        queues: the queue names to serve; default the queue's own names.
        lease_seconds: how long a lease lasts without a heartbeat: a dead
            worker's tasks come back after at most this long. It must outlast
            the longest store outage to ride out plus the reconnect backoff
            (2 s), or tasks run twice.
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
        schedules: bool = True,
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
                self.import_path = find_import_path(queue)
            if self.import_path is None:
                raise ValueError(
                    "Worker: process mode needs the queue's import path for its children: "
                    "define the queue at module level or pass import_path='package.module:queue'"
                )
        self.stats = WorkerStats()
        self.schedules = bool(schedules)
        self._scheduler: Scheduler | None = None

        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._force = False
        # Whether the main thread is in ``_loop`` (a second signal then leaves it at once).
        self._in_loop = False
        self._running_flag = False
        self._fatal_error: str | None = None
        self._reports: deque[tuple[Execution, Result]] = deque()
        self._context_of: dict[str, bool] = {}
        # Outcomes to record: successes (written in batches, with the next lease when there
        # is one) and the rest, failures and releases (None), written one by one.
        self._done: deque[tuple[Execution, Result]] = deque()
        self._writes: deque[tuple[Execution, Result | None]] = deque()
        self._running: dict[str, Execution] = {}
        self._record: WorkerRecord | None = None
        self._executor: Executor | None = None
        self._capacity: dict[str, float] = {}
        self._capacity_at = -math.inf
        self._watched = False  # the store wakes us for other processes' tasks: no polling
        self._clock: _time.Clock = _time.SYSTEM
        self._jumps = True  # a fake clock may be moved forward while idle (see _wait)
        self._stop_at: float | None = None  # when stopping: the grace period's end
        # The store outage under way: since when (resile's clock), failed rounds, last error.
        self._outage_since: float | None = None
        self._outage_errors = 0
        self._outage_kind = ""

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
        executor = self._make_executor(loop)
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

    def _make_executor(self, loop: asyncio.AbstractEventLoop | None = None) -> Executor:
        host = Host(
            queue=self.queue,
            store=self.store,
            worker_id=self.worker_id,
            report=self._report,
            wake=self._signal,
            fatal=self._fatal,
            stopping=lambda: self._stopping,
        )
        return _executors.make(
            self.mode,
            host,
            self.concurrency,
            import_path=self.import_path,
            kill_grace=self.kill_grace,
            loop=loop,
        )

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
            second = self._stopping
            self.stop(force=second)
            if second and self._in_loop:
                # The loop may be blocked in one store call (a connect, a pool waiting
                # for its connect_timeout) that no flag reaches: leave it at once. The
                # exit's hand-back still runs, bounded (``_at_exit``).
                self._in_loop = False
                raise _ForcedStop

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

    def _report(self, execution: Execution, result: Result) -> None:
        execution.ended_at = self.store.now()
        execution.ended = self._clock.monotonic()
        self._reports.append((execution, result))
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

    def _wait(self, timeout: float, poll: float = math.inf, due_in: float | None = None) -> None:
        """Wait until woken, ``timeout`` seconds on resile's clock or ``poll`` real seconds.

        On the system clock this is one wait on the condition. On a fake clock
        (``resile.testing.no_waits``) an idle worker (nothing running, nothing
        to write) with a task due in ``due_in`` seconds moves the clock there
        instead of sleeping, so that a retry due in 30 s is leased at once,
        when the store's clock follows resile's (``clock=lambda: T0 +
        fake.monotonic()``). Otherwise (attempts in flight, nothing due at
        all) it waits for real and moves the clock by the time that took, so
        that exec timeouts, heartbeats and the grace period still pass and an
        idle worker does not spin.
        """
        clock = self._clock
        if clock is _time.SYSTEM:
            with self._cond:
                if not self._woken and timeout > 0:
                    self._cond.wait(min(timeout, poll))
                self._woken = False
            return
        jump = due_in is not None and due_in > 0 and self._jumps and self._idle()
        with self._cond:
            if self._woken or timeout <= 0:
                self._woken = False
                return
            if jump:
                assert due_in is not None
                before = self.store.now()
                clock.sleep(due_in)
                if self.store.now() - before >= due_in / 2:
                    return
                # The store reads another clock (the real one): jumping would only make
                # resile's clock run away from it. Wait for real from now on.
                self._jumps = False
            started = time.monotonic()
            self._cond.wait(min(timeout, poll))
            self._woken = False
        clock.sleep(time.monotonic() - started)

    def _idle(self) -> bool:
        """Nothing runs, nothing is left to write, every slot is free (fake-clock waits)."""
        executor = self._executor
        return (
            not self._running
            and not self._reports
            and not self._writes
            and not self._done
            and executor is not None
            and executor.free() >= executor.slots
            and not executor.booting()
        )

    # -- internals: the scheduler loop ------------------------------------------------------------

    def _offer(self) -> dict[str, float]:
        t = self._clock.monotonic()
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

    def _serve(self, executor: Executor, burst: bool, wait: bool | float) -> None:
        if self._running_flag:
            raise RuntimeError(f"{self!r} is already running")
        self._running_flag = True
        self._stopping = self._force = False
        self._stop_at = None
        self._outage_since, self._outage_errors, self._outage_kind = None, 0, ""
        self._fatal_error = None
        self._executor = executor
        # The clock in force when the run starts serves the whole run.
        self._clock = _time.clock
        self._jumps = True
        remove_listener = self.store.add_listener(self._on_created)
        stop_watching: Callable[[], None] | None = None
        logger.info(
            "resile worker %s: serving %s (%s x%d)",
            self.worker_id,
            list(self.queues),
            self.mode,
            self.concurrency,
        )
        self._slots_seen: dict[str, tuple[int, int]] = {}
        if instrument.hooks:
            self._report_slots()
        try:
            stop_watching = self.store.watch(self.queues, self._signal)
            self._watched = stop_watching is not None
            executor.open()
            with self._bounded():
                self._register()
            self._start_schedules()
            self._in_loop = True
            try:
                self._loop(executor, burst, wait)
            except _ForcedStop:
                logger.info("resile worker %s: second signal, leaving at once", self.worker_id)
            finally:
                self._in_loop = False
        finally:
            self._scheduler = None
            remove_listener()
            if stop_watching is not None:
                stop_watching()
            self._watched = False
            try:
                if self._hand_back(executor):
                    # Not after an outage the hand-back met: the record expires by itself.
                    with contextlib.suppress(TimeoutError):
                        self._at_exit(self._unregister, _FORCED_PATIENCE)
            finally:
                executor.close(max(self.kill_grace, 1.0) + 1.0)
                self._executor = None
                self._running_flag = False
                if instrument.hooks:
                    self._report_slots(stopped=True)
        if self._fatal_error is not None:
            raise RuntimeError(f"resile worker {self.worker_id}: {self._fatal_error}")

    def _start_schedules(self) -> None:
        """Reconcile the declared schedules of our queues; their ticks fire from ``_loop``."""
        declared = getattr(self.queue, "periodics", None)
        if not self.schedules or not declared:
            return
        scheduler = Scheduler(self.store, declared, self.queues)
        if not scheduler.schedules:
            return
        try:
            done = scheduler.reconcile(self.store.now())
        except Exception:
            logger.exception("resile worker %s: could not reconcile the schedules", self.worker_id)
        else:
            logger.info("resile worker %s: schedules %s", self.worker_id, done)
        self._scheduler = scheduler

    def _schedule(self, timeout: float) -> float:
        """Fire the ticks due now; ``timeout`` cut to the time until the next one."""
        scheduler = self._scheduler
        if scheduler is None or self._stopping:
            return timeout
        now = self.store.now()
        at = scheduler.next_at()
        if at <= now:
            at = scheduler.run_due(now)
            now = self.store.now()
        return min(timeout, max(0.0, at - now))

    def _loop(self, executor: Executor, burst: bool, wait: bool | float) -> None:
        store = self.store
        clock = self._clock
        next_beat = clock.monotonic() + self.heartbeat
        gap = 0.0
        while True:
            # The stop flag first, before any store call: a store that refuses every call
            # must not keep a stopping worker alive past its grace period.
            mono = clock.monotonic()
            if self._stopping:
                stop_at = self._stop_at
                if stop_at is None:
                    stop_at = mono + (0.0 if self._force else self.grace)
                if self._force:
                    stop_at = min(stop_at, mono)
                self._stop_at = stop_at
                if mono >= stop_at or (not self._running and not self._reports):
                    return
            try:
                with self._bounded():
                    self._collect()
                    # Whether a store call went through this round (only that ends an outage).
                    answered = False
                    # Successes wait for the lease below, to go in its round trip; failures
                    # are written right after it: a retry due now must not wait for their
                    # round trips.
                    leasing = not self._stopping and executor.free() > 0
                    held = self._held_successes() if leasing else None
                    if not leasing and self._pending():
                        self._flush()
                        answered = True
                    mono = clock.monotonic()
                    if mono >= next_beat:
                        self._beat()
                        next_beat = mono + self.heartbeat
                        answered = True
                    self._expire(mono)
                    deadline_ = min(
                        (a.deadline for a in self._running.values() if a.state is RUNNING),
                        default=math.inf,
                    )
                    timeout = self._schedule(min(next_beat, deadline_) - mono)
                    if self._stopping:
                        assert self._stop_at is not None
                        if answered:
                            self._store_answered()
                        self._wait(min(timeout, self._stop_at - mono))
                        continue
                    free = executor.free()
                    due: float | None = None
                    now = 0.0
                    poll = math.inf
                    due_in: float | None = None
                    if free > 0:
                        capacity_ = self._offer()
                        # Lease first: under load there is work, and asking "when is the next
                        # due time?" only when the lease came back empty saves a store call.
                        got = self._lease(store, free, capacity_, held)
                        held = None
                        answered = True
                        for task in got:
                            if not self._holds(task):
                                self._dispatch(executor, task)
                        self._flush()
                        if got:
                            gap = 0.0
                            if len(got) >= free:
                                self._store_answered()
                                continue  # more may be due
                            # Fewer than asked for: nothing else was due when the lease
                            # looked. Ask for the next due time now rather than after another
                            # lease.
                        due = store.next_due_at(self.queues, capacity=capacity_)
                        # Read after the call: a wait armed for ``due`` must not overrun by
                        # the time the call took.
                        now = store.now()
                        if due is not None and due <= now:
                            # Due, yet nothing leased: it became due after the lease looked,
                            # someone else took it, or a lapsed lease is reclaimed only
                            # strictly after its expiry. Look again at once, then with a
                            # growing gap.
                            timeout = min(timeout, gap)
                            gap = min(max(gap * 2, _MIN_GAP), self.poll_interval or 0.05)
                        elif due is not None:
                            due_in = due - now
                            timeout = min(timeout, due_in)
                        if self.poll_interval is not None and not self._watched:
                            poll = self.poll_interval
                    if held is not None:  # not leased after all (a child process died meanwhile)
                        self._flush()
                    if burst and not self._running and not self._reports and not self._pending():
                        if free <= 0 and not executor.booting():
                            # Every slot is held by an abandoned (timed-out, unkillable)
                            # thread: end the burst only if there is nothing to wait for.
                            now = store.now()
                            due = store.next_due_at(self.queues, capacity=self._offer())
                            answered = True
                        if (free > 0 or not executor.booting()) and self._burst_over(
                            due, now, wait
                        ):
                            if answered:
                                self._store_answered()
                            return
                if answered:
                    self._store_answered()
                if instrument.hooks:
                    self._report_slots()
                self._wait(timeout, poll, due_in)
            except Exception as exc:
                pause = self._store_failed(exc)
                if self._stop_at is not None:
                    pause = min(pause, max(0.0, self._stop_at - clock.monotonic()))
                self._wait(pause)

    def _at_exit(self, call: Callable[[], object], patience: float) -> None:
        """``call`` (store calls at exit) within about ``patience`` seconds, whatever the
        store does.

        A deadline bounds the store's retrying but not one blocking call (a connect
        or a pool waiting for its ``connect_timeout``), so the call runs in a daemon
        thread that the exit does not wait for past the bound.

        Raises:
            TimeoutError: the call had not returned by then (it is left behind).
            Exception: what ``call`` raised.
        """
        failed: list[BaseException] = []
        end = self._clock.monotonic() + patience

        def run() -> None:
            try:
                with deadline(at=end):
                    call()
            except BaseException as exc:  # handed to the exiting thread
                failed.append(exc)

        helper = threading.Thread(target=run, name="resile-exit-write", daemon=True)
        helper.start()
        helper.join(patience + 0.25)
        if helper.is_alive():
            raise TimeoutError(f"the store did not answer within {patience:g} s")
        if failed:
            raise failed[0]

    def _bounded(self) -> deadline:
        """The deadline of the store calls of one round: they ride through an outage for at
        most ``_STORE_PATIENCE`` seconds, and never past the end of the grace period."""
        now = self._clock.monotonic()
        end = now + _STORE_PATIENCE
        if self._stop_at is not None:
            end = max(now, min(end, self._stop_at))
        return deadline(at=end)

    def _holds(self, task: Task) -> bool:
        """Whether this worker already runs ``task``, or holds its outcome unwritten.

        That happens when its lease lapsed during a store outage and this very worker
        leased the task again when the store came back: the new lease is this worker's,
        so the outcome it holds is written under it (or the attempt still running
        finishes under it); the task is not run a second time.
        """
        execution = self._running.get(task.id)
        if execution is None:
            return False
        logger.info(
            "resile worker %s: leased task %s again after its lease lapsed; keeping the "
            "attempt it already ran",
            self.worker_id,
            task.id,
        )
        return True

    def _store_failed(self, exc: Exception) -> float:
        """Note a failed round (the store refused a call); returns the pause before the next.

        An outage is logged once when it starts (a ``StoreUnavailable`` in one line, any
        other error with its traceback) and once when it ends (``_store_answered``); a
        new kind of error during it is logged once more.
        """
        self._outage_errors += 1
        kind = type(exc).__name__
        if self._outage_since is None or kind != self._outage_kind:
            if self._outage_since is None:
                self._outage_since = self._clock.monotonic()
            self._outage_kind = kind
            held = len(self._done) + len(self._writes)
            if isinstance(exc, StoreUnavailable):
                logger.warning(
                    "resile worker %s: %s; holding %d outcome(s) unwritten, trying again "
                    "with backoff (logged again when the store answers)",
                    self.worker_id,
                    exc,
                    held,
                )
            else:
                logger.exception(
                    "resile worker %s: store error; holding %d outcome(s) unwritten, trying "
                    "again with backoff (logged again when the store answers)",
                    self.worker_id,
                    held,
                )
        else:
            logger.debug("resile worker %s: store error again: %r", self.worker_id, exc)
        return _STORE_BACKOFF.delay(min(self._outage_errors, 30))

    def _store_answered(self) -> None:
        """A round went through: end the outage under way, if any, with one log line."""
        since = self._outage_since
        if since is None:
            return
        logger.warning(
            "resile worker %s: the store answers again after %.1f s (%d round(s) failed)",
            self.worker_id,
            self._clock.monotonic() - since,
            self._outage_errors,
        )
        self._outage_since = None
        self._outage_errors = 0
        self._outage_kind = ""

    def _lease(
        self,
        store: Store,
        free: int,
        capacity_: dict[str, float],
        held: list[tuple[Execution, Result]] | None,
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

    def _dispatch(self, executor: Executor, task: Task) -> None:
        execution = Execution(task)
        if self.mode != "thread" or self._takes_context(task.handler):
            execution.cancel_event = threading.Event()
        if task.timeout is not None:
            execution.deadline = self._clock.monotonic() + task.timeout
        self._running[task.id] = execution
        self.stats.leased += 1
        if instrument.hooks:
            self._started(execution)
        # The store calls' deadline of this round is not the handler's (an async executor
        # would hand the coroutine a copy of this context).
        token = _time.DEADLINE.set(None)
        try:
            executor.submit(execution)
        except Exception as exc:
            logger.exception("resile worker %s: could not start task %s", self.worker_id, task.id)
            self._report(
                execution,
                failure(type(exc).__name__, f"the worker could not start the attempt: {exc}"),
            )
        finally:
            _time.DEADLINE.reset(token)

    def _collect(self) -> None:
        """Move executor reports of still-running attempts to the write queue."""
        while self._reports:
            execution, result = self._reports.popleft()
            if execution.state is not RUNNING:
                continue  # timed out, canceled or handed back before it finished
            execution.state = FINISHED
            if self._stopping and result.error is not None and result.error.type == CHILD_DIED:
                # A SIGTERM sent to the whole process group (systemd, a terminal) killed
                # the child while the worker shuts down: hand the task back uncounted.
                self._writes.append((execution, None))
                continue
            if result.ok:
                self._done.append((execution, result))
            else:
                self._writes.append((execution, result))

    def _pending(self) -> bool:
        """Outcomes are waiting to be recorded."""
        return bool(self._done or self._writes)

    def _flush(self) -> None:
        """Write every outcome; a store error leaves the rest for the next round."""
        while self._done:
            if self._complete_batch():
                continue
            execution, result = self._done[0]
            self._write(execution, result)
            self._done.popleft()
            self._forget(execution.task.id)
        while self._writes:
            execution, outcome = self._writes[0]
            self._write(execution, outcome)
            self._writes.popleft()
            self._forget(execution.task.id)

    def _forget(self, task_id: str) -> None:
        """An attempt's outcome is recorded: drop it; a schedule's tick may free the next one."""
        self._running.pop(task_id, None)
        if self._scheduler is not None:
            self._scheduler.poke(task_id, self.store.now())

    def _complete_batch(self) -> bool:
        """Record the first successes with one ``Store.complete_many`` (one round trip
        on Redis); False when fewer than two."""
        batch = self._held_successes()
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

    def _held_successes(self) -> list[tuple[Execution, Result]]:
        """The first successes to record (at most a batch): sent with the next lease
        (``Store.complete_then_lease``) or together (``Store.complete_many``)."""
        done = self._done
        if len(done) <= _WRITE_BATCH:
            return list(done)
        return [done[i] for i in range(_WRITE_BATCH)]

    def _completed(self, batch: Sequence[tuple[Execution, Result]], done: Sequence[bool]) -> None:
        """Account for the first successes (``batch``), recorded or not (``done``)."""
        for (execution, _), ok in zip(batch, done, strict=True):
            if ok:
                self.stats.done += 1
                if instrument.hooks:
                    self._finished(execution, AttemptOutcome.SUCCEEDED)
            else:  # canceled meanwhile, or the lease was lost: nothing was written
                self.stats.lost += 1
                if instrument.hooks:
                    self._gone(execution)
            self._done.popleft()
            self._forget(execution.task.id)

    def _write(self, execution: Execution, result: Result | None) -> None:
        store, task, wid = self.store, execution.task, self.worker_id
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
                    if instrument.hooks:
                        self._finished(execution, AttemptOutcome.SUCCEEDED)
                else:  # canceled meanwhile, or the lease was lost: nothing was written
                    self.stats.lost += 1
                    if instrument.hooks:
                        self._gone(execution)
                return
        assert result.error is not None
        after = store.fail(
            task.id,
            wid,
            result.error,
            permanent=result.permanent,
            outcome=result.outcome,
            delay=result.retry_after,
            now=execution.ended_at,
        )
        if after is None:
            self.stats.lost += 1
            if instrument.hooks:
                self._gone(execution)
            return
        if after.status is TaskStatus.FAILED:
            self.stats.failed += 1
            logger.warning("resile: task %s dead-lettered: %r", task.id, result.error)
            if instrument.hooks:
                self._finished(execution, AttemptOutcome.DEAD, error_type=result.error.type)
        else:
            self.stats.retried += 1
            if instrument.hooks:
                delay = max(0.0, after.due_at - store.now())
                self._finished(
                    execution, AttemptOutcome.RETRYING, error_type=result.error.type, delay=delay
                )

    # -- instrumentation (called only when a hook is installed) ---------------------------------

    def _started(self, execution: Execution) -> None:
        task, wid = execution.task, self.worker_id
        execution.started = self._clock.monotonic()
        # (A lapsed lease's task.lease_expired event is fired by the store that reclaimed it.)
        lateness = None if task.started_at is None else task.started_at - task.due_at
        if instrument.wants[Kind.TASK_LEASED]:  # the metrics hook does not listen to it
            instrument.emit(instrument.for_task(Kind.TASK_LEASED, task, worker_id=wid))
        instrument.emit(
            instrument.for_task(Kind.ATTEMPT_STARTED, task, worker_id=wid, lateness=lateness)
        )

    def _finished(
        self,
        execution: Execution,
        outcome: AttemptOutcome,
        *,
        error_type: str | None = None,
        delay: float | None = None,
    ) -> None:
        task, wid = execution.task, self.worker_id
        ended = execution.ended or self._clock.monotonic()
        duration = max(0.0, ended - execution.started) if execution.started else None
        instrument.emit(
            instrument.for_task(
                Kind.ATTEMPT_FINISHED,
                task,
                worker_id=wid,
                outcome=outcome,
                error_type=error_type,
                delay=delay,
                duration=duration,
            )
        )
        then = _THEN.get(outcome)
        if then is not None:
            instrument.emit(
                instrument.for_task(
                    then, task, worker_id=wid, outcome=outcome, error_type=error_type, delay=delay
                )
            )

    def _gone(self, execution: Execution) -> None:
        """An attempt whose task this worker no longer holds: canceled, or its lease lost."""
        try:
            now = self.store.get(execution.task.id)
        except Exception:
            now = None
        if now is not None and now.status is TaskStatus.CANCELED:
            self._finished(execution, AttemptOutcome.CANCELED)
            return
        instrument.emit(
            instrument.for_task(Kind.LEASE_LOST, execution.task, worker_id=self.worker_id)
        )

    def _report_slots(self, *, stopped: bool = False) -> None:
        """One ``worker.slots`` event per queue whose slots or busy count changed (once a round)."""
        busy = dict.fromkeys(self.queues, 0)
        if not stopped:
            for e in self._running.values():
                if e.state is RUNNING and e.task.queue in busy:
                    busy[e.task.queue] += 1
        slots = 0 if stopped else self.concurrency
        for name, n in busy.items():
            if self._slots_seen.get(name) != (slots, n):
                self._slots_seen[name] = (slots, n)
                instrument.emit(
                    instrument.SlotsEvent(
                        Kind.WORKER_SLOTS, name, slots=slots, busy=n, worker_id=self.worker_id
                    )
                )

    # -- the worker registry: best effort, never a reason to stop serving ----------------------

    def _register(self) -> None:
        now = self.store.now()
        self._record = WorkerRecord(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            mode=self.mode,
            concurrency=self.concurrency,
            queues=tuple(self.queues),
            started_at=now,
            beat_at=now,
            expires_at=now + self.lease_seconds,
        )
        self._write_record()

    def _write_record(self) -> None:
        if self._record is None:
            return
        try:
            self.store.record_worker(self._record)
        except Exception:
            logger.warning("resile worker %s: could not write its registry record", self.worker_id)

    def _beat_record(self) -> None:
        if self._record is None:
            return
        now = self.store.now()
        self._record = replace(
            self._record,
            beat_at=now,
            expires_at=now + self.lease_seconds,
            running=len(self._running),
        )
        self._write_record()

    def _unregister(self) -> None:
        if self._record is None:
            return
        self._record = None
        try:
            self.store.remove_worker(self.worker_id)
        except Exception:
            logger.warning("resile worker %s: could not remove its registry record", self.worker_id)

    def _beat(self) -> None:
        self._beat_record()
        # Every task this worker holds: running attempts, and finished or timed-out ones
        # whose outcome is not written yet (a store outage): their leases must not lapse.
        ids = list(self._running)
        if not ids:
            return
        held = self.store.renew_many(ids, self.worker_id, lease_seconds=self.lease_seconds)
        for tid in ids:
            if tid in held:
                continue
            execution = self._running.pop(tid)
            if execution.state is RUNNING:
                execution.state = ABORTED
                self.stats.lost += 1
                if instrument.hooks:
                    self._gone(execution)
                logger.info(
                    "resile worker %s: task %s was canceled or its lease lost; stopping it",
                    self.worker_id,
                    tid,
                )
                assert self._executor is not None
                self._executor.abort(execution)

    def _expire(self, mono: float) -> None:
        for execution in list(self._running.values()):
            if execution.state is RUNNING and execution.deadline <= mono:
                execution.state = ABORTED
                execution.ended = mono
                self.stats.timeouts += 1
                if instrument.hooks:
                    instrument.emit(
                        instrument.for_task(
                            Kind.TASK_TIMED_OUT, execution.task, worker_id=self.worker_id
                        )
                    )
                assert self._executor is not None
                self._executor.abort(execution)
                t = execution.task
                self._writes.append(
                    (
                        execution,
                        failure(
                            "TimeoutError",
                            f"attempt {t.attempts} of task {t.id!r} exceeded its exec timeout "
                            f"of {t.timeout:g} s and was stopped ({self.mode} mode)",
                            outcome=Outcome.TIMEOUT,
                        ),
                    )
                )

    def _hand_back(self, executor: Executor) -> bool:
        """At exit: abort what still runs and give it back to the queue; write what is
        pending. One pass that rides through an outage for at most ``_STORE_PATIENCE``
        (not at all after a second signal); what the store refuses is logged, naming
        the tasks. Whether the store took everything."""
        self._collect()
        for execution in list(self._running.values()):
            if execution.state is RUNNING:
                execution.state = ABORTED
                executor.abort(execution)
                self._writes.append((execution, None))
        took = True
        try:
            # The hand-back rides through an outage for a second, but not after a second
            # signal (stop(force=True)): then each write is tried once.
            self._at_exit(self._flush, _FORCED_PATIENCE if self._force else _STORE_PATIENCE)
        except Exception as exc:
            took = False
            left = [e.task.id for e, _ in self._done] + [e.task.id for e, _ in self._writes]
            named = ", ".join(left[:_NAMED]) + (", ..." if len(left) > _NAMED else "")
            logger.warning(
                "resile worker %s: exiting with %d outcome(s) the store did not take (%s): %s; "
                "those tasks run again once their leases lapse (within %g s), the attempt "
                "counted",
                self.worker_id,
                len(left),
                " ".join(str(exc).split()) or type(exc).__name__,
                named,
                self.lease_seconds,
            )
        self._running.clear()
        self._done.clear()
        self._writes.clear()
        self._reports.clear()
        return took


# The task-level event that follows an attempt's end, by outcome. (A cancel's task.canceled
# is fired by the store's cancel, in the canceling process, once.)
_THEN = {
    AttemptOutcome.RETRYING: Kind.TASK_RETRY_SCHEDULED,
    AttemptOutcome.DEAD: Kind.TASK_DEAD,
}


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
