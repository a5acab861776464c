"""The contract every task store honours; one conformance suite tests them all.

Rules for every backend:

* **Each method is one atomic step**: one SQLite transaction, one Redis Lua
  script. No read-modify-write spans two calls, so any number of threads,
  processes and machines may call any method at any time.
* **Times are epoch seconds** (``float``, sub-millisecond precision). Every
  method that reads the time takes ``now=``; ``None`` means ``store.now()``
  (the store's ``clock``, ``time.time`` by default). Tests pass ``now``
  explicitly and never sleep.
* **Ids are unique in the store** (so within every queue too).
* **Who may write a leased task**: ``complete``, ``fail``, ``release`` and
  ``renew`` check that the task is ``DOING`` and that ``worker_id`` holds its
  lease. A worker whose lease lapsed and was reclaimed (or whose task was
  canceled) gets ``None`` / ``False`` and nothing is written, so it can never
  overwrite the new owner's state.

State machine (see ``docs/queue.md``; every transition is decided once, by the pure
functions of ``resile.queue._transitions``, which each backend calls and applies)::

    create ─▶ PENDING ──lease──▶ DOING ──complete──▶ DONE
                 ▲                 │ fail, retries left ─▶ PENDING (due = now + backoff)
                 │                 │ fail, none left / permanent ─▶ FAILED
                 │                 │ lease expired: retries left ─▶ PENDING, else FAILED
                 └──── release ────┘
    cancel: PENDING | DOING ─▶ CANCELED        requeue: FAILED | CANCELED ─▶ PENDING

Ordering: among the tasks that are due (``due_at <= now``), ``lease`` takes the
lowest ``priority`` first and, within a priority, the lowest ``sequence``
(creation order, FIFO). A due urgent task therefore overtakes an older due
routine one; ``due_at`` only decides *whether* a task may run, not its rank.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import dataclasses
import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from resile import instrument
from resile._aio import run_in_thread
from resile._closing import Closing
from resile.errors import StoreConflict
from resile.queue import _transitions as _tr
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    MAX_PARAMS_BYTES,
    TERMINAL_STATUSES,
    TIMING_EDGES,
    TIMING_SEP,
    Outcome,
    Tally,
    TaskField,
    TaskStatus,
)
from resile.queue.registry import WorkerRecord
from resile.queue.schedules import ScheduleRecord, check_name
from resile.queue.task import JSONValue, Task, TaskError, TaskSpec, check_json

__all__ = [
    "LIST_ORDERS",
    "IfExists",
    "Listener",
    "Quantiles",
    "Reclaimed",
    "Store",
    "Timings",
    "check_create_args",
    "check_lease_args",
    "check_list_args",
    "check_list_order",
    "check_pct",
    "check_queue",
    "check_seconds",
    "counts_by_queue",
    "dumps",
    "dumps_params",
    "dumps_shared",
    "encode_results",
    "fail_args",
    "lease_call_args",
    "list_key",
    "normalize_queues",
    "normalize_statuses",
    "purge_statuses",
    "tally_counts",
    "tally_range",
    "timed_tally",
    "timing_bucket",
    "timing_counts",
    "with_trace_context",
]

IfExists = Literal["error", "return"]


class Reclaimed(NamedTuple):
    """A lapsed lease a ``lease`` reclaimed: what its ``task.lease_expired`` event names."""

    queue: str
    handler: str
    id: str
    attempts: int  # the attempt that was lost
    traceparent: str | None
    dead: bool  # no retry was left: the task went to FAILED


# Called after tasks were created (in the creating process only), with the new tasks.
Listener = Callable[[Sequence[Task]], None]

log_name = "resile.queue"
# Compare-and-set tries of a schedule change before StoreConflict (each try is one read, one swap).
_SWAP_TRIES = 50


class Store(Closing, ABC):
    """Durable storage of tasks: the operations a queue and its workers need.

    Subclasses implement the abstract methods, each as one atomic step.
    A store is safe to share between threads; ``close()`` releases it and is
    idempotent. Stores are context managers.

    Args:
        clock: returns the current epoch time; ``now=None`` reads it.
    """

    #: The URL the store was opened with (``sqlite:///tasks.db``), for display.
    url: str = ""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    # -- time and wake-ups (shared, not abstract) ---------------------------------------------

    def now(self, now: float | None = None) -> float:
        """``now`` when given, else the store's clock."""
        return self.clock() if now is None else float(now)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(tasks)`` after each successful create in this process.

        Workers in the same process use it to wake up at once instead of
        waiting for their next look at the store. The listener runs in the
        producer's thread and must be quick; its errors are ignored.

        Returns:
            a function that removes the listener.
        """
        with self._listeners_lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._listeners_lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def watch(self, queues: Sequence[str], wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` (from a helper thread) whenever *another process* may
        have made work due on ``queues``: a create, a retry, a release, a requeue.

        Wake-ups may be spurious, but none may be missed once ``watch`` has
        returned: a worker that reads ``next_due_at`` after subscribing and
        sleeps until then or until woken never oversleeps new work.

        Returns:
            a function that stops watching; or ``None`` when the store cannot
            tell (the default, e.g. SQLite): workers then poll ``next_due_at``
            (``Worker(poll_interval=...)``) to notice other processes' tasks.
        """
        return None

    def _after_create(self, tasks: Sequence[Task]) -> None:
        """Backends call this after a create committed: instrumentation, then ``_notify``."""
        if instrument.hooks:
            for task in tasks:
                instrument.emit(instrument.for_task(instrument.Kind.TASK_CREATED, task))
        self._notify(tasks)

    def _after_reclaim(self, reclaimed: Sequence[Reclaimed]) -> None:
        """Backends call this after a lease's reclaim of lapsed leases committed.

        With a hook installed, each reclaimed lease is a ``task.lease_expired``
        event (outcome ``expired``), and a ``task.dead`` one follows when no
        retry was left: fired here, where the reclaim happened, so a lease that
        dead-letters its task is counted too (no worker leases that task again).
        """
        if not reclaimed or not instrument.hooks:
            return
        kind, expired = instrument.Kind, instrument.AttemptOutcome.EXPIRED
        for r in reclaimed:
            instrument.emit(
                instrument.for_task(
                    kind.LEASE_EXPIRED, r, outcome=expired, error_type=_tr.LEASE_EXPIRED_ERROR.type
                )
            )
            if r.dead:
                instrument.emit(
                    instrument.for_task(
                        kind.TASK_DEAD, r, outcome=expired, error_type=_tr.LEASE_EXPIRED_ERROR.type
                    )
                )

    def _notify(self, tasks: Sequence[Task]) -> None:
        """Backends call this after a create / requeue committed."""
        if not tasks:
            return
        with self._listeners_lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(tasks)
            except Exception:  # a listener never breaks an enqueue
                import logging

                logging.getLogger(log_name).exception("resile: task listener %r failed", fn)

    # -- producers --------------------------------------------------------------------------------

    @abstractmethod
    def create(
        self, spec: TaskSpec, *, if_exists: IfExists = "error", now: float | None = None
    ) -> Task:
        """Store a new ``PENDING`` task, due at ``spec.due_time(now)``.

        ``spec.id=None`` generates an id (``new_task_id()``). The sequence
        number is the next in the store.

        Args:
            if_exists: a task with this id already exists: ``"error"`` raises
                ``DuplicateTask``; ``"return"`` returns the existing task
                unchanged (whatever its state) and stores nothing.

        Raises:
            resile.errors.DuplicateTask: the id exists and ``if_exists="error"``.
            ValueError: ``if_exists`` is neither value.
        """

    @abstractmethod
    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
    ) -> list[Task]:
        """Create several tasks in one atomic step; all are stored or none is.

        Returns the tasks in the order of ``specs`` (existing ones for
        duplicates under ``if_exists="return"``). Sequence numbers follow the
        order of ``specs``. A duplicate id *within* ``specs`` counts as a
        duplicate of the first.

        Raises:
            resile.errors.DuplicateTask: under ``if_exists="error"``; nothing is stored.
        """

    # -- workers ----------------------------------------------------------------------------------

    @abstractmethod
    def lease(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> list[Task]:
        """Take up to ``limit`` due tasks of ``queues`` for ``worker_id``, atomically.

        In the same atomic step, first *reclaim* expired leases in ``queues``:
        every ``DOING`` task whose ``lease_expires_at < now`` has lost its
        attempt (already counted at lease time). Its history gets an
        ``Outcome.LOST`` entry and ``last_error`` becomes
        ``TaskError("LeaseExpired", LEASE_EXPIRED_REASON)``; it goes to
        ``FAILED`` when ``attempts > max_retries``, else back to ``PENDING``
        due at ``lease_expires_at + backoff.delay(attempts, last_delay)``.

        Then, from the queues that are not paused (``pause``), pick
        ``PENDING`` tasks with ``due_at <= now`` that fit
        ``capacity`` (``Task.fits``), lowest ``(priority, sequence)`` first,
        and for each: ``status=DOING``, ``attempts += 1``,
        ``lease_owner=worker_id``, ``lease_expires_at = now + lease_seconds``,
        ``started_at = now``.

        A stored task that cannot be decoded (corrupt JSON in a column) is not
        returned: it is moved to ``FAILED`` with ``last_error`` type
        ``"CorruptTask"`` naming the column, and leasing goes on.

        Args:
            queues: one queue name or several (their tasks compete on
                ``(priority, sequence)``).
            capacity: what this worker offers (``{"min_gpu_memory_gb": 8}``);
                ``None`` leases regardless of resource needs.

        Returns:
            the leased tasks, in lease order; empty when nothing is due.

        Raises:
            ValueError: ``limit < 1`` or ``lease_seconds <= 0``.
        """

    def renew(
        self,
        task_id: str,
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> bool:
        """Extend the lease to ``now + lease_seconds`` (the worker's heartbeat).

        A lease past its expiry but not yet reclaimed may still be renewed.
        The one-id case of ``renew_many``.

        Returns:
            ``True`` while ``worker_id`` holds the task ``DOING``; ``False`` when
            the lease was lost (reclaimed, another owner), the task was
            canceled or is gone: the worker should stop the attempt.
        """
        return task_id in self.renew_many(
            [task_id], worker_id, lease_seconds=lease_seconds, now=now
        )

    @abstractmethod
    def renew_many(
        self,
        task_ids: Iterable[str],
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> set[str]:
        """Renew several leases in one step; returns the ids still held (the others were lost).

        Raises:
            ValueError: ``lease_seconds <= 0``.
        """

    @abstractmethod
    def complete(
        self,
        task_id: str,
        worker_id: str,
        result: JSONValue = None,
        *,
        now: float | None = None,
    ) -> Task | None:
        """Record success: ``DOING -> DONE``, ``result`` stored, ``progress=100``.

        Clears the lease, sets ``finished_at=now`` and appends an
        ``Outcome.OK`` history entry.

        Returns:
            the ``DONE`` task; ``None`` (and nothing written) when
            ``worker_id`` does not hold the task ``DOING``.

        Raises:
            ValueError: ``result`` is not plain JSON (the path is named);
                nothing is written and the lease is kept, so the worker can
                ``fail`` the attempt instead.
        """

    def complete_many(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[Task | None]:
        """``complete`` for several ``(task_id, result)`` of one worker; one answer each, in order.

        Each completion is its own atomic step, exactly as ``complete``;
        backends may send them together (Redis: one round trip). The default
        calls ``complete`` for each.

        Raises:
            ValueError: a result is not plain JSON (the path is named); then
                nothing is written.
        """
        for _, result in items:
            check_json(result, "result")
        at = self.now(now)
        return [self.complete(tid, worker_id, result, now=at) for tid, result in items]

    def complete_many_flags(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[bool]:
        """``complete_many`` when only "recorded or not" matters (the worker's hot path).

        Writes exactly what ``complete_many`` writes; answers ``True`` where
        ``complete_many`` would return the task, ``False`` where it would
        return ``None``. Backends may skip reading the tasks back. The default
        calls ``complete_many``.

        Raises:
            ValueError: as ``complete_many``; then nothing is written.
        """
        return [t is not None for t in self.complete_many(items, worker_id, now=now)]

    def complete_then_lease(
        self,
        items: Sequence[tuple[str, JSONValue]],
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[Task]]:
        """``complete_many_flags(items)``, then ``lease(queues, limit=...)``: two atomic
        steps, in that order, which backends may send together (Redis: one round trip).

        Returns:
            ``(flags, leased)``: the answers of ``complete_many_flags`` and of ``lease``.

        Raises:
            ValueError: a result is not plain JSON (nothing is written or
                leased), or bad lease arguments (as ``lease``).
        """
        flags = self.complete_many_flags(items, worker_id, now=now) if items else []
        leased = self.lease(
            queues,
            worker_id,
            limit=limit,
            lease_seconds=lease_seconds,
            capacity=capacity,
            now=now,
        )
        return flags, leased

    @abstractmethod
    def fail(
        self,
        task_id: str,
        worker_id: str,
        error: TaskError | BaseException,
        *,
        permanent: bool = False,
        outcome: Outcome = Outcome.ERROR,
        delay: float | None = None,
        now: float | None = None,
    ) -> Task | None:
        """Record a failed attempt and schedule what comes next, atomically.

        Stores ``error`` as ``last_error`` and appends a history entry with
        ``outcome`` (``ERROR`` or ``TIMEOUT``). Then:

        * ``permanent`` or ``attempts > max_retries``: ``FAILED`` (dead
          letter), ``finished_at=now``;
        * otherwise ``PENDING`` with ``due_at = now + d`` where
          ``d = delay`` when given (a server's ``Retry-After``) else
          ``Backoff.from_dict(backoff).delay(attempts, last_delay)``; ``d`` is
          stored as ``last_delay``.

        The lease is cleared in both cases. A stored policy that cannot be
        rebuilt dead-letters the task with that reason.

        Returns:
            the task after the change; ``None`` (nothing written) when
            ``worker_id`` does not hold the task ``DOING``.
        """

    @abstractmethod
    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        """Hand a leased task back unrun (shutdown, prefetched but not started).

        ``DOING -> PENDING`` due at ``now``, lease cleared, and the attempt is
        *not* counted (``attempts -= 1``); no history entry.

        Returns:
            the ``PENDING`` task; ``None`` when ``worker_id`` does not hold it.
        """

    # -- anyone -----------------------------------------------------------------------------------

    def cancel(self, task_id: str, *, now: float | None = None) -> bool:
        """``PENDING`` or ``DOING`` -> ``CANCELED``, ``finished_at=now``.

        A ``DOING`` task keeps its ``lease_owner`` and gets an
        ``Outcome.CANCELED`` history entry; its worker finds out through
        ``renew`` (``False``) or ``get``, and its later ``complete``/``fail``
        write nothing. With a hook installed, a ``task.canceled`` event follows
        (here, in the canceling process, whatever the backend).

        Returns:
            ``True`` when the task was canceled now; ``False`` when it does not
            exist or was already terminal.
        """
        done = self._cancel(task_id, self.now(now))
        if done and instrument.hooks:
            self._after_cancel(self.get(task_id))
        return done

    @abstractmethod
    def _cancel(self, task_id: str, at: float) -> bool:
        """The one step behind ``cancel``: ``_transitions.cancel`` applied at ``at``."""

    def _after_cancel(self, task: Task | None) -> None:
        """The ``task.canceled`` event of a task canceled now (read back after the step)."""
        if task is not None:
            instrument.emit(instrument.for_task(instrument.Kind.TASK_CANCELED, task))

    def progress(
        self,
        task_id: str,
        pct: float,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Set ``progress`` (0..100) of a ``PENDING`` or ``DOING`` task.

        With ``worker_id``, only while that worker holds the task ``DOING``.

        Returns:
            ``True`` when written; ``False`` when the task is gone, terminal
            or (with ``worker_id``) not held by that worker.

        Raises:
            ValueError: ``pct`` is not a number in ``[0, 100]``.
        """
        return self._set_field(
            task_id, TaskField.PROGRESS.value, check_pct(pct), worker_id, self.now(now)
        )

    def save_checkpoint(
        self,
        task_id: str,
        value: JSONValue,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Store ``value`` (plain JSON) as the checkpoint the next attempt resumes from.

        Same conditions and return value as ``progress``.

        Raises:
            ValueError: ``value`` is not plain JSON (the path is named).
        """
        check_json(value, "checkpoint")
        return self._set_field(
            task_id, TaskField.CHECKPOINT.value, dumps(value), worker_id, self.now(now)
        )

    @abstractmethod
    def _set_field(
        self, task_id: str, field: str, value: float | str, worker_id: str | None, at: float
    ) -> bool:
        """Write ``progress`` (a float) or ``checkpoint`` (JSON text) of an editable task.

        The one step behind ``progress`` and ``save_checkpoint``: only when the
        status may be edited (``_transitions.EDIT_FROM``) and, with ``worker_id``,
        while that worker holds the task; ``True`` when written.
        """

    @abstractmethod
    def get_checkpoint(self, task_id: str) -> JSONValue:
        """The task's checkpoint, ``None`` when there is none or the task is gone."""

    @abstractmethod
    def get(self, task_id: str) -> Task | None:
        """The task with this id, or ``None``."""

    @abstractmethod
    def list(
        self,
        *,
        queue: str | None = None,
        status: TaskStatus | str | Collection[TaskStatus | str] | None = None,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
        order: str = "created",
        descending: bool = False,
        after_key: float | None = None,
    ) -> list[Task]:
        """Tasks sorted by ``order`` (ties by ``sequence``), filtered and keyset-paginated.

        A page costs about a page of reads on every backend in creation order, for
        PENDING tasks by due time and for finished ones by updated time (a finished
        task's ``updated_at`` is its ``finished_at``: backends write both from one clock
        reading, and the finish-time indexes serve the order); other states sorted by
        a time sort every match (docs/dashboard.md).

        Args:
            queue: only this queue.
            status: one status or several.
            limit: at most this many (>= 1).
            offset: skip this many matches (simple paging).
            after: the ``sequence`` of the last task seen: only tasks that sort
                after it come (stable cursor paging while tasks change).
            order: ``"created"`` (``sequence``, the default), ``"due"``
                (``due_at``) or ``"updated"`` (``updated_at``); ``LIST_ORDERS``.
            descending: newest / latest first.
            after_key: with ``order`` ``"due"`` or ``"updated"``, the sort key
                (``due_at`` / ``updated_at``) of that last task; given together
                with ``after``. The page holds the tasks whose ``(key, sequence)``
                comes after ``(after_key, after)`` in the chosen direction.

        Raises:
            ValueError: a status that does not exist, ``limit < 1``, ``offset < 0``,
                an unknown ``order``, ``after_key`` without ``after`` (or the
                other way round for a keyed order), ``after_key`` with ``"created"``.
        """

    @abstractmethod
    def stats(self, queue: str | None = None) -> dict[TaskStatus, int]:
        """How many tasks are in each state (every ``TaskStatus`` is a key, zeros included)."""

    @abstractmethod
    def queues(self) -> builtins.list[str]:
        """Names of the queues that hold at least one task, sorted."""

    def counts(self) -> dict[str, dict[TaskStatus, int]]:
        """Tasks per queue and status, read from what the store keeps: never a scan of the tasks.

        Exact on every backend. The SQL stores keep a ``(queue, status) -> n``
        table that triggers adjust in the transaction of every insert, delete
        and change of status (so no transition can forget to count); Redis
        counts the sorted set it keeps per queue and status (``ZCARD``). The
        cost grows with the number of queues, not of tasks.

        Returns:
            every queue that holds a task (sorted by name) -> ``{TaskStatus: n}``,
            every status a key, zeros included. The default asks ``stats`` once
            per name of ``queues``.
        """
        return {name: self.stats(name) for name in self.queues()}

    @abstractmethod
    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        """``FAILED`` or ``CANCELED`` -> ``PENDING`` due at ``now + delay``.

        ``attempts`` and ``last_delay`` are reset; ``history``, ``last_error``,
        ``checkpoint`` and ``progress`` are kept; ``finished_at`` is cleared.

        Returns:
            the ``PENDING`` task; ``None`` when it does not exist or is in
            another state.
        """

    @abstractmethod
    def make_due(self, task_id: str, *, now: float | None = None) -> Task | None:
        """A ``PENDING`` task that waits (a retry's backoff, a delay) becomes due at ``now``.

        An operator's "retry now": only ``due_at`` (and ``updated_at``) change, so
        the attempt count, the backoff and the history stay; workers waiting on
        the queue are woken as for a new task.

        Returns:
            the task, due now; ``None`` when it does not exist, is not ``PENDING``
            or is due already (nothing is written).
        """

    @abstractmethod
    def delete(self, task_id: str) -> bool:
        """Delete one task, whatever its state but ``DOING`` (cancel a running one first).

        Returns:
            ``True`` when it was deleted now; ``False`` when it does not exist or is ``DOING``.
        """

    @abstractmethod
    def purge(
        self,
        older_than: float,
        *,
        statuses: Collection[TaskStatus | str] = TERMINAL_STATUSES,
        queue: str | None = None,
        now: float | None = None,
    ) -> int:
        """Delete terminal tasks whose ``finished_at <= now - older_than``.

        Returns:
            how many were deleted.

        Raises:
            ValueError: ``older_than < 0`` or a non-terminal status in ``statuses``.
        """

    @abstractmethod
    def next_due_at(
        self,
        queues: str | Sequence[str],
        *,
        capacity: Mapping[str, float] | None = None,
    ) -> float | None:
        """The earliest time ``lease`` on ``queues`` could return something.

        The earliest ``due_at`` of ``PENDING`` tasks that fit ``capacity``, or
        the earliest ``lease_expires_at`` of ``DOING`` tasks (a lease that will
        lapse and must be reclaimed), whichever comes first; ``None`` when
        there are neither. When some task is due already, any time ``<= now``
        may be returned (a backend need not scan the due tasks for the exact
        minimum). A worker sleeps until then, or until ``add_listener`` wakes it.
        A paused queue counts as holding nothing.
        """

    @abstractmethod
    def oldest_due_at(self, queue: str) -> float | None:
        """The earliest ``due_at`` of ``queue``'s ``PENDING`` tasks (due or not yet); ``None``
        when it holds none.

        Exact, and one indexed lookup (not a scan), so a metrics scrape can ask it of
        every queue: ``now - oldest_due_at(queue)``, when positive, is how long the
        oldest due task has waited. A paused queue's tasks count (they wait too);
        resource needs do not matter.

        Raises:
            ValueError: ``queue`` is not a non-empty str.
        """

    # -- pausing a queue ----------------------------------------------------------------------------

    @abstractmethod
    def pause(self, queue: str, *, now: float | None = None) -> bool:
        """Stop ``lease`` from taking ``queue``'s tasks, for every worker, from this step on.

        Running tasks go on (they can complete, fail, renew); producers can
        still enqueue; expired leases are still reclaimed. A queue may be
        paused before it holds any task.

        Returns:
            ``True`` when the queue was paused now, ``False`` when it already was.

        Raises:
            ValueError: ``queue`` is not a non-empty str.
        """

    @abstractmethod
    def resume(self, queue: str) -> bool:
        """Let ``lease`` take ``queue``'s tasks again, and wake the workers that wait on it.

        Returns:
            ``True`` when the queue was paused, ``False`` when it was not.

        Raises:
            ValueError: ``queue`` is not a non-empty str.
        """

    @abstractmethod
    def paused(self) -> dict[str, float]:
        """The paused queues, each with the time it was paused (epoch seconds), by name."""

    # -- per-minute outcome counters ----------------------------------------------------------------

    @abstractmethod
    def tallies(
        self, *, since: float, until: float | None = None, queue: str | None = None
    ) -> dict[int, dict[Tally, int]]:
        """Outcomes per minute: how many attempts were done, retried or went dead.

        Each transition that ends an attempt (complete, fail, a reclaimed lease,
        a corrupt task dead-lettered) counts one, in the same atomic step, under
        its queue and the minute of its ``now``. Stores keep ``TALLY_WINDOW``
        (48 h).

        Args:
            since, until: epoch seconds; the minutes that start in ``[since, until]``
                (``until=None``: now).
            queue: one queue, or ``None`` for the sum over every queue.

        Returns:
            minute start (epoch seconds, a multiple of 60) -> {``Tally``: count}, only the
            minutes that counted something, each with every ``Tally`` as a key.

        Raises:
            ValueError: a time that is not a finite number.
        """

    def timings(
        self, *, since: float, until: float | None = None, queue: str | None = None
    ) -> dict[str, Timings]:
        """Run time and retry lateness per queue: p50, p95 and how many, over some minutes.

        Kept in the per-minute counters of ``tallies`` (same step, same window):
        an attempt that ends by ``complete`` or ``fail`` at ``now`` counts its
        run time ``now - started_at``; a retry attempt (attempts >= 2) also its
        lateness ``started_at - due_at`` (how long after the time its retry was
        due a worker took it), both in log-spaced buckets (``TIMING_EDGES``).
        A lapsed lease or a corrupt task counts neither. The percentiles are
        estimates: interpolated inside the bucket where the rank falls
        (``Quantiles.of``), within a factor of 2.5 of the truth.

        Args:
            since, until: epoch seconds; the minutes that start in ``[since, until]``
                (``until=None``: now), as in ``tallies``.
            queue: one queue, or ``None`` for each queue that counted something.

        Returns:
            queue -> ``Timings`` (``run`` and ``late``, each a ``Quantiles``), only
            the queues that counted a run time in the range.

        Raises:
            ValueError: a time that is not a finite number.
        """
        lo, hi = tally_range(since, until, self.now())
        return timing_counts(self._timing_rows(lo, hi, queue))

    @abstractmethod
    def _timing_rows(self, lo: int, hi: int, queue: str | None) -> Iterable[tuple[str, str, int]]:
        """``(queue, counter name, n)`` of the counters with a bucket, minutes ``lo`` .. ``hi``
        (minute numbers), summed over the minutes or not; plain counters may be left out."""

    # -- the worker registry ------------------------------------------------------------------------

    @abstractmethod
    def record_worker(self, record: WorkerRecord) -> None:
        """Write a worker's record (create or replace it): at start and at every heartbeat.

        In the same step, drop the records of workers gone (``expires_at``
        passed) for more than ``registry.GONE_KEPT`` seconds before
        ``record.beat_at``.
        """

    @abstractmethod
    def remove_worker(self, worker_id: str) -> bool:
        """Delete a worker's record (it stopped cleanly); False when there was none."""

    @abstractmethod
    def workers(self) -> builtins.list[WorkerRecord]:
        """Every recorded worker, by id: those beating and those gone (``WorkerRecord.alive``)."""

    # -- durable schedules (resile.queue.schedules) ------------------------------------------------
    # Written once, here, over three primitives each backend implements: read one record, read
    # them all, and swap one record for another (compare-and-set on its whole stored text) with
    # an optional task created in the same atomic step.

    @abstractmethod
    def _schedule_texts(self) -> builtins.list[str]:
        """Every stored schedule record (its JSON text), in name order."""

    @abstractmethod
    def _schedule_text(self, name: str) -> str | None:
        """The stored text of schedule ``name``, or ``None``."""

    @abstractmethod
    def _schedule_swap(
        self, name: str, old: str | None, new: str | None, task: TaskSpec | None, now: float
    ) -> Task | bool:
        """One atomic step: when schedule ``name``'s stored text is ``old`` (``None``: there is
        none), store ``new`` (``None``: delete it) and, with ``task``, create that task
        unless a task with its id exists.

        Returns:
            ``False`` when the stored text was not ``old`` (nothing written); else the
            created task, or ``True`` when no task was created.
        """

    def schedules(self, queue: str | None = None) -> builtins.list[ScheduleRecord]:
        """The stored schedules (of ``queue``, or all), by name; unreadable records are left out."""
        out = []
        for text in self._schedule_texts():
            try:
                record = ScheduleRecord.from_json(text)
            except ValueError:
                continue
            if queue is None or record.queue == queue:
                out.append(record)
        return out

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule called ``name``, or ``None``."""
        text = self._schedule_text(check_name(name))
        return None if text is None else ScheduleRecord.from_json(text)

    def _change_schedule(
        self, name: str, change: Callable[[ScheduleRecord | None], ScheduleRecord | bool | None]
    ) -> ScheduleRecord | bool | None:
        """Apply ``change`` (record -> new record, ``None`` to delete, ``False``: leave it) with
        compare-and-set, again while other writers get there first."""
        check_name(name)
        for _ in range(_SWAP_TRIES):
            text = self._schedule_text(name)
            current = None if text is None else ScheduleRecord.from_json(text)
            new = change(current)
            if new is False or (new is None and current is None):
                return False
            assert not isinstance(new, bool)
            if self._schedule_swap(name, text, None if new is None else new.text, None, self.now()):
                return new if new is not None else True
        raise StoreConflict(name, "schedule change", _SWAP_TRIES)

    def save_schedule(
        self, name: str, queue: str, declaration: Mapping[str, Any], *, now: float | None = None
    ) -> Literal["added", "updated", "unchanged"]:
        """Declare schedule ``name`` (what a worker does for each ``@queue.periodic`` at start).

        A new schedule is stored with ``last = now`` (no tick before its creation fires);
        a changed declaration replaces the stored one and keeps the firing state; one
        paused as ``"undeclared"`` runs again. A schedule paused by an operator stays paused.

        Raises:
            ValueError: a bad name, or a declaration that is not plain JSON.
        """
        at = self.now(now)
        decl = json.loads(dumps(dict(declaration)))
        outcome: builtins.list[Literal["added", "updated", "unchanged"]] = ["unchanged"]

        def change(cur: ScheduleRecord | None) -> ScheduleRecord | bool:
            if cur is None:
                outcome[0] = "added"
                fresh = ScheduleRecord(name, queue, decl, last=at, created_at=at)
                return fresh.changed(at)
            revive = cur.paused == "undeclared"
            if cur.declaration == decl and cur.queue == queue and not revive:
                outcome[0] = "unchanged"
                return False
            outcome[0] = "updated"
            return cur.changed(
                at,
                declaration=decl,
                queue=queue,
                paused="" if revive else cur.paused,
                paused_at=None if revive else cur.paused_at,
            )

        self._change_schedule(name, change)
        return outcome[0]

    def pause_schedule(
        self, name: str, *, reason: Literal["operator", "undeclared"] = "operator",
        now: float | None = None,
    ) -> bool:  # fmt: skip
        """Stop ``name`` from firing (its ticks while paused count as missed, ``missed=`` applies
        on resume). ``False`` when there is no such schedule or it is paused already."""
        at = self.now(now)

        def change(cur: ScheduleRecord | None) -> ScheduleRecord | bool:
            if cur is None or cur.paused:
                return False
            return cur.changed(at, paused=reason, paused_at=at)

        return bool(self._change_schedule(name, change))

    def resume_schedule(self, name: str, *, now: float | None = None) -> bool:
        """Let a paused schedule fire again; ``False`` when it is unknown or not paused."""
        at = self.now(now)

        def change(cur: ScheduleRecord | None) -> ScheduleRecord | bool:
            if cur is None or not cur.paused:
                return False
            return cur.changed(at, paused="", paused_at=None)

        return bool(self._change_schedule(name, change))

    def delete_schedule(self, name: str) -> bool:
        """Delete a schedule's record (its tick tasks stay); ``False`` when there was none.

        A worker whose code still declares it adds it again when it starts.
        """
        return bool(self._change_schedule(name, lambda cur: None if cur is not None else False))

    def fire_tick(
        self,
        record: ScheduleRecord,
        new: ScheduleRecord,
        task: TaskSpec | None = None,
        *,
        now: float | None = None,
    ) -> Task | bool:
        """Advance ``record`` to ``new`` and enqueue the tick ``task``, atomically, only while the
        stored record is still ``record`` (its ``text``) and not paused.

        ``task.id`` is the tick's unique id (``schedules.tick_id``); a task with that id that
        exists already is kept and not created twice. This compare-and-set is what makes a
        tick fire once however many workers try it.

        Returns:
            the created task, ``True`` (advanced, no task created), or ``False``: the record
            changed meanwhile (another worker fired, a pause, a new declaration): read it again.
        """
        if record.paused or not record.text:
            return False
        if task is not None:
            (task,) = with_trace_context([task])
        result = self._schedule_swap(record.name, record.text, new.text, task, self.now(now))
        if isinstance(result, Task):
            self._after_create([result])
        return result

    @abstractmethod
    def close(self) -> None:
        """Release connections; idempotent. The store is unusable afterwards."""

    # -- async producers and readers ---------------------------------------------------------------
    # For event-loop code (a FastAPI endpoint): the same steps without blocking the loop. By
    # default the sync method runs in a worker thread (asyncio or trio); a backend with an
    # asyncio client of its own (Redis) overrides them under asyncio.

    async def create_async(self, spec: TaskSpec, *, if_exists: IfExists = "error") -> Task:
        """``create`` for async code."""
        return await run_in_thread(lambda: self.create(spec, if_exists=if_exists))

    async def create_many_async(
        self, specs: Iterable[TaskSpec], *, if_exists: IfExists = "error"
    ) -> builtins.list[Task]:
        """``create_many`` for async code."""
        items = builtins.list(specs)
        return await run_in_thread(lambda: self.create_many(items, if_exists=if_exists))

    async def get_async(self, task_id: str) -> Task | None:
        """``get`` for async code."""
        return await run_in_thread(lambda: self.get(task_id))

    async def cancel_async(self, task_id: str) -> bool:
        """``cancel`` for async code."""
        return await run_in_thread(lambda: self.cancel(task_id))

    async def stats_async(self, queue: str | None = None) -> dict[TaskStatus, int]:
        """``stats`` for async code."""
        return await run_in_thread(lambda: self.stats(queue))

    async def aclose(self) -> None:
        """``close`` for async code: also closes the connections made for this event loop."""
        self.close()

    # -- conveniences -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def tally_range(since: object, until: object, now: float) -> tuple[int, int]:
    """``tallies``' bounds as the first and last minute numbers (epoch seconds // 60).

    Raises:
        ValueError: a bound that is not a finite number.
    """
    for name, value in (("since", since), ("until", until)):
        if value is None and name == "until":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"tallies: {name} must be epoch seconds, got {value!r}")
    hi = now if until is None else float(until)  # type: ignore[arg-type]
    return math.ceil(float(since) / 60), math.floor(hi / 60)  # type: ignore[arg-type]


def tally_counts(rows: Iterable[tuple[int, str, int]]) -> dict[int, dict[Tally, int]]:
    """``(minute, counter, n)`` rows summed into ``tallies``' answer: a counter
    ``<tally>[:<bucket>...]`` (``timed_tally``) counts for its tally; unknown ones are skipped."""
    out: dict[int, dict[Tally, int]] = {}
    for minute, what, n in rows:
        try:
            kind = Tally(what.partition(TIMING_SEP)[0])
        except ValueError:
            continue
        counts = out.setdefault(int(minute) * 60, dict.fromkeys(Tally, 0))
        counts[kind] += int(n)
    return dict(sorted(out.items()))


def timing_bucket(seconds: float) -> int:
    """The histogram bucket of a duration: the first ``i`` with ``seconds <= TIMING_EDGES[i]``
    (``len(TIMING_EDGES)`` above the last edge)."""
    return bisect.bisect_left(TIMING_EDGES, seconds)


def timed_tally(
    what: Tally, *, started_at: float | None, due_at: float | None, attempts: int, now: float
) -> str:
    """The counter an attempt that ends at ``now`` adds one to: ``<tally>:<run bucket>``, and
    ``:<lateness bucket>`` for a retry attempt (``attempts >= 2``); just ``<tally>`` without a
    start. The SQL stores call it in Python; the Redis scripts do the same in ``lib.lua``."""
    if started_at is None:
        return what.value
    key = f"{what.value}{TIMING_SEP}{timing_bucket(now - started_at)}"
    if attempts >= 2 and due_at is not None:
        key += f"{TIMING_SEP}{timing_bucket(started_at - due_at)}"
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class Quantiles:
    """The median and 95th percentile (seconds, estimated) of ``n`` durations; ``None`` if none."""

    n: int = 0
    p50: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, histogram: Mapping[int, int]) -> Quantiles:
        """Estimated from bucket -> count (``timing_bucket``): the rank ``q * n`` falls in a
        bucket; the value is interpolated in it, geometrically (linearly in the first, from 0).
        Above the last edge the estimate is that edge (a lower bound)."""
        n = sum(histogram.values())
        if n <= 0:
            return cls()
        return cls(n, _quantile(histogram, n, 0.5), _quantile(histogram, n, 0.95))

    def to_dict(self) -> dict[str, int | float | None]:
        """``{"n", "p50", "p95"}`` (JSON: the API and the CLI)."""
        return {"n": self.n, "p50": self.p50, "p95": self.p95}


def _quantile(histogram: Mapping[int, int], n: int, q: float) -> float:
    rank, below = q * n, 0
    top = len(TIMING_EDGES)
    for bucket in sorted(histogram):
        k = histogram[bucket]
        if k <= 0 or below + k < rank:
            below += max(k, 0)
            continue
        if bucket >= top:
            return TIMING_EDGES[-1]
        hi = TIMING_EDGES[bucket]
        share = (rank - below) / k
        if bucket == 0:
            return hi * share
        lo = TIMING_EDGES[bucket - 1]
        return float(lo * (hi / lo) ** share)
    return TIMING_EDGES[-1]


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """A queue's run time (attempts that ended by complete or fail) and retry lateness."""

    run: Quantiles
    late: Quantiles


def timing_counts(rows: Iterable[tuple[str, str, int]]) -> dict[str, Timings]:
    """``(queue, counter, n)`` rows into ``timings``' answer (counters without a bucket, or
    not parsed, skipped)."""
    runs: dict[str, dict[int, int]] = {}
    lates: dict[str, dict[int, int]] = {}
    for queue, what, n in rows:
        parts = what.split(TIMING_SEP)
        if len(parts) < 2 or not all(p.isdigit() for p in parts[1:3]):
            continue
        run = runs.setdefault(queue, {})
        run[int(parts[1])] = run.get(int(parts[1]), 0) + int(n)
        if len(parts) >= 3:
            late = lates.setdefault(queue, {})
            late[int(parts[2])] = late.get(int(parts[2]), 0) + int(n)
    return {q: Timings(Quantiles.of(runs[q]), Quantiles.of(lates.get(q, {}))) for q in sorted(runs)}


def counts_by_queue(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[TaskStatus, int]]:
    """``(queue, status, n)`` rows summed into ``counts``' answer (unknown statuses skipped)."""
    out: dict[str, dict[TaskStatus, int]] = {}
    for queue, status, n in rows:
        try:
            kind = TaskStatus(status)
        except ValueError:
            continue
        if int(n):
            out.setdefault(str(queue), dict.fromkeys(TaskStatus, 0))[kind] += int(n)
    return dict(sorted(out.items()))


def check_queue(queue: object, what: str) -> str:
    """``queue`` checked to be a non-empty str (``pause`` / ``resume``'s argument).

    Raises:
        ValueError: naming ``what`` and the value.
    """
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"{what}: queue must be a non-empty str, got {queue!r}")
    return queue


def normalize_queues(queues: str | Sequence[str]) -> tuple[str, ...]:
    """``"a"`` or ``["a", "b"]`` -> ``("a", "b")``, checked non-empty.

    Raises:
        ValueError: no queue, or a name that is not a non-empty str.
    """
    names = (queues,) if isinstance(queues, str) else tuple(queues)
    if not names or not all(isinstance(q, str) and q for q in names):
        raise ValueError(f"queues must be a queue name or a list of them, got {queues!r}")
    return tuple(dict.fromkeys(names))


def normalize_statuses(
    status: TaskStatus | str | Collection[TaskStatus | str] | None,
) -> tuple[TaskStatus, ...] | None:
    """One status or several, as ``TaskStatus`` members; ``None`` stays ``None``.

    Raises:
        ValueError: a name that is not a ``TaskStatus`` value.
    """
    if status is None:
        return None
    items: Iterable[Any] = (status,) if isinstance(status, str) else status
    out: list[TaskStatus] = []
    for s in items:
        try:
            out.append(TaskStatus(s.upper() if isinstance(s, str) else s))
        except ValueError:
            raise ValueError(
                f"status must be one of {[m.value for m in TaskStatus]}, got {s!r}"
            ) from None
    return tuple(dict.fromkeys(out))


def check_pct(pct: object) -> float:
    """``pct`` as a float in ``[0, 100]``.

    Raises:
        ValueError: not a number, NaN, or out of range.
    """
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise ValueError(f"progress must be a number from 0 to 100, got {pct!r}")
    return float(pct)


def check_lease_args(limit: int, lease_seconds: float) -> None:
    """Validate ``lease``'s ``limit`` and ``lease_seconds``.

    Raises:
        ValueError: ``limit`` not an int >= 1, ``lease_seconds`` not a finite number > 0.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"lease: limit must be an int >= 1, got {limit!r}")
    if (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, (int, float))
        or not 0 < lease_seconds < float("inf")
    ):
        raise ValueError(f"lease: lease_seconds must be a finite number > 0, got {lease_seconds!r}")


# -- argument checks shared by every backend (one message per mistake, whatever the store) ------


# One encoder for every call (``json.dumps`` with options builds a new one each time).
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON, NaN and infinities refused: how stores write JSON fields."""
    return _encode(value)


def dumps_params(params: Mapping[str, Any], task_id: str) -> str:
    """``dumps(params)`` of a new task, refused past ``MAX_PARAMS_BYTES``.

    Raises:
        ValueError: naming the task, the size and the limit (before anything is written).
    """
    text = _encode(params)
    if len(text) > MAX_PARAMS_BYTES:  # ASCII (the encoder escapes the rest): chars = bytes
        raise ValueError(
            f"task {task_id!r}: params are {len(text):,} bytes of JSON, more than the "
            f"{MAX_PARAMS_BYTES:,} a task may carry; keep large data elsewhere (a file, an "
            "object store) and pass its name in params"
        )
    return text


# Flat mappings that many tasks share (a task function's backoff policy): id -> (a copy of
# the mapping as it was, its JSON). The copy is compared on each hit, so a mapping changed
# since it was encoded is encoded again; holding it in the entry keeps its id from being reused.
_shared_json: dict[int, tuple[dict[Any, Any], Mapping[Any, Any], str]] = {}
_SHARED_JSON_MAX = 512


def dumps_shared(value: Mapping[Any, Any]) -> str:
    """``dumps(value)`` for a flat mapping of plain values that recurs (the same object).

    A hit costs a dict comparison instead of an encode.
    """
    hit = _shared_json.get(id(value))
    if hit is not None and hit[1] is value and hit[0] == value:
        return hit[2]
    text = _encode(value)
    if len(_shared_json) >= _SHARED_JSON_MAX:
        _shared_json.clear()
    _shared_json[id(value)] = (dict(value), value, text)
    return text


def check_seconds(value: object, what: str, allowed: str = "seconds >= 0") -> float:
    """``value`` as a float of seconds in ``[0, inf)``.

    Raises:
        ValueError: ``"<what> must be <allowed>, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{what} must be {allowed}, got {value!r}")
    return float(value)


def with_trace_context(specs: Sequence[TaskSpec]) -> Sequence[TaskSpec]:
    """``specs``, each with the trace context a tracing hook gives (``instrument.produce``).

    Backends call it as a create starts; without a hook installed it returns
    ``specs`` as they are. A spec that names its own ``traceparent`` keeps it.
    """
    if not instrument.hooks:
        return specs
    out: builtins.list[TaskSpec] = []
    for spec in specs:
        if spec.traceparent is None:
            carrier = instrument.produce(spec.queue, spec.handler)
            if carrier is not None:
                spec = dataclasses.replace(spec, traceparent=carrier)
        out.append(spec)
    return out


def check_create_args(specs: Iterable[object], if_exists: object) -> None:
    """Validate ``create`` / ``create_many``'s ``if_exists`` and that every spec is a TaskSpec.

    Raises:
        ValueError: an unknown ``if_exists``. TypeError: an item that is not a ``TaskSpec``.
    """
    if if_exists not in ("error", "return"):
        raise ValueError(f'if_exists must be "error" or "return", got {if_exists!r}')
    for spec in specs:
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"create: expected a TaskSpec, got {spec!r}")


def lease_call_args(
    queues: str | Sequence[str], worker_id: object, limit: int, lease_seconds: float
) -> tuple[str, ...]:
    """Validate ``lease``'s arguments; returns the queue names.

    Raises:
        ValueError: as ``check_lease_args``, an empty ``worker_id``, or bad queue names.
    """
    check_lease_args(limit, lease_seconds)
    if not isinstance(worker_id, str) or not worker_id:
        raise ValueError(f"lease: worker_id must be a non-empty str, got {worker_id!r}")
    return normalize_queues(queues)


def encode_results(items: Iterable[tuple[str, JSONValue]]) -> list[tuple[str, str]]:
    """``complete_many``'s ``(task_id, result)`` pairs with each result as JSON text.

    Raises:
        ValueError: a result that is not plain JSON (naming its task when there are several),
            before anything is written.
    """
    pairs = list(items)
    out: list[tuple[str, str]] = []
    for task_id, result in pairs:
        check_json(result, "result" if len(pairs) == 1 else f"result of {task_id!r}")
        out.append((task_id, dumps(result)))
    return out


def fail_args(
    error: TaskError | BaseException, delay: float | None, outcome: Outcome
) -> tuple[TaskError, float | None, Outcome]:
    """``fail``'s error as a ``TaskError``, its checked ``delay`` and ``outcome``.

    Raises:
        ValueError: ``delay`` not seconds >= 0 or None, or an unknown outcome.
    """
    err = error if isinstance(error, TaskError) else TaskError.from_exception(error)
    if delay is not None:
        delay = check_seconds(delay, "fail: delay", "seconds >= 0 or None")
    return err, delay, Outcome(outcome)


def check_list_args(
    status: TaskStatus | str | Collection[TaskStatus | str] | None, limit: int, offset: int
) -> tuple[TaskStatus, ...] | None:
    """Validate ``list``'s paging; returns the statuses asked for (``None``: all).

    Raises:
        ValueError: an unknown status, ``limit`` not an int >= 1, ``offset`` not an int >= 0.
    """
    statuses = normalize_statuses(status)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"list: limit must be an int >= 1, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"list: offset must be an int >= 0, got {offset!r}")
    return statuses


# ``Store.list``'s orders -> the ``Task`` attribute (and column) each sorts by.
LIST_ORDERS: dict[str, str] = {"created": "sequence", "due": "due_at", "updated": "updated_at"}


def check_list_order(
    order: str, descending: bool, after: int | None, after_key: float | None
) -> str:
    """Validate ``list``'s sort and keyset cursor; returns the ``Task`` attribute sorted by.

    Raises:
        ValueError: naming the argument and its value.
    """
    if not isinstance(order, str) or order not in LIST_ORDERS:
        raise ValueError(f"list: order must be one of {', '.join(LIST_ORDERS)}, got {order!r}")
    if not isinstance(descending, bool):
        raise ValueError(f"list: descending must be a bool, got {descending!r}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise ValueError(f"list: after must be an int (a sequence), got {after!r}")
    if order == "created":
        if after_key is not None:
            raise ValueError(f"list: after_key applies to order due or updated, got {after_key!r}")
    elif (after is None) != (after_key is None):
        raise ValueError(
            f"list: after and after_key go together with order {order!r},"
            f" got after={after!r}, after_key={after_key!r}"
        )
    elif after_key is not None and (
        isinstance(after_key, bool)
        or not isinstance(after_key, (int, float))
        or not math.isfinite(after_key)
    ):
        raise ValueError(f"list: after_key must be finite epoch seconds, got {after_key!r}")
    return LIST_ORDERS[order]


def list_key(task: Task, order: str) -> tuple[float, int]:
    """The ``(key, sequence)`` a task sorts by in ``list`` under ``order`` (a ``LIST_ORDERS`` key)."""
    if order == "created":
        return (float(task.sequence), task.sequence)
    return (float(getattr(task, LIST_ORDERS[order])), task.sequence)


def purge_statuses(statuses: Collection[TaskStatus | str]) -> tuple[TaskStatus, ...]:
    """``purge``'s statuses, checked to be finished ones (an empty tuple: purge nothing).

    Raises:
        ValueError: an unknown status, or one that is not DONE, FAILED or CANCELED.
    """
    chosen = normalize_statuses(statuses) or ()
    bad = [s.value for s in chosen if s not in TERMINAL_STATUSES]
    if bad:
        raise ValueError(
            f"purge: only finished tasks can be purged (DONE, FAILED, CANCELED), got {bad}"
        )
    return chosen
