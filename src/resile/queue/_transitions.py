"""Every state change of a stored task, decided once, as pure functions.

A backend reads the fields a transition needs, calls the function here and
writes what it returns, in one atomic step (a transaction, a Lua script). No
backend decides a transition itself: SQLite calls these functions inside its
transaction; the Redis store calls them between reading the fields and
running the script that applies the decision (the script re-checks ownership),
and where Lua must decide alone (which status may leave for which) it is held
against the sets here by tests. Nothing here does I/O or reads a clock: every
input is a plain value, as a SQLite row or a Redis ``HMGET`` holds it, so
either side of the contract (the worker or the store) can decide.

The state machine::

    create ─▶ PENDING ──lease──▶ DOING ──complete──▶ DONE
                 ▲                 │ fail / lease expired, retries left ─▶ PENDING (due = base + delay)
                 │                 │ fail / lease expired, none left, permanent,
                 │                 │     or an unusable stored policy ─▶ FAILED (dead letter)
                 └──── release ────┘
    cancel: PENDING | DOING ─▶ CANCELED        requeue: FAILED | CANCELED ─▶ PENDING

Which transition may leave which status: ``LEASE_FROM``, ``HELD_FROM`` (complete,
fail, release, renew, reclaim: and only for the lease holder), ``CANCEL_FROM``,
``REQUEUE_FROM``, ``EDIT_FROM`` (progress and checkpoint without a worker id),
with a predicate for each (``can_lease`` ...).

A PENDING task is *ready* (SQLite's ``ready`` flag, Redis' ready sets) once
``due_at <= now``, and *delayed* before: ``is_ready``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from resile.backoff import Backoff
from resile.queue._names import LEASE_EXPIRED_REASON, Outcome, TaskStatus
from resile.queue.task import AttemptRecord, TaskError

__all__ = [
    "CANCELED_ERROR",
    "CANCEL_FROM",
    "EDIT_FROM",
    "HELD_FROM",
    "LEASE_EXPIRED_ERROR",
    "LEASE_FROM",
    "REQUEUE_FROM",
    "AfterFailure",
    "Canceled",
    "Completed",
    "Created",
    "Leased",
    "Released",
    "Requeued",
    "after_failure",
    "can_cancel",
    "can_edit",
    "can_lease",
    "can_requeue",
    "cancel",
    "complete",
    "corrupt",
    "corrupt_error",
    "create",
    "is_held",
    "is_ready",
    "lease",
    "lease_expired",
    "release",
    "requeue",
]

_PENDING, _DOING = TaskStatus.PENDING, TaskStatus.DOING

# -- which status each transition may leave ----------------------------------------------------
LEASE_FROM: frozenset[TaskStatus] = frozenset({_PENDING})
# complete, fail, release, renew and the reclaim of an expired lease: DOING only.
HELD_FROM: frozenset[TaskStatus] = frozenset({_DOING})
CANCEL_FROM: frozenset[TaskStatus] = frozenset({_PENDING, _DOING})
REQUEUE_FROM: frozenset[TaskStatus] = frozenset({TaskStatus.FAILED, TaskStatus.CANCELED})
# progress / save_checkpoint by anyone (a worker id narrows it to HELD_FROM and the holder).
EDIT_FROM: frozenset[TaskStatus] = frozenset({_PENDING, _DOING})

# The errors a transition records by itself.
LEASE_EXPIRED_ERROR = TaskError("LeaseExpired", LEASE_EXPIRED_REASON)
CANCELED_ERROR = TaskError("Canceled", "the task was canceled while this attempt ran")

_Status = TaskStatus | str | None


def _in(status: _Status, allowed: frozenset[TaskStatus]) -> bool:
    # A stored status arrives as text (a SQLite column, a Redis field) or as the enum.
    value = status.value if isinstance(status, TaskStatus) else status
    return any(value == s.value for s in allowed)


def can_lease(status: _Status) -> bool:
    """Whether a task in ``status`` may be leased (``PENDING``; its due time decides when)."""
    return _in(status, LEASE_FROM)


def can_cancel(status: _Status) -> bool:
    """Whether ``cancel`` may end a task in ``status`` (``PENDING`` or ``DOING``)."""
    return _in(status, CANCEL_FROM)


def can_requeue(status: _Status) -> bool:
    """Whether ``requeue`` may bring back a task in ``status`` (``FAILED`` or ``CANCELED``)."""
    return _in(status, REQUEUE_FROM)


def can_edit(status: _Status) -> bool:
    """Whether anyone may set progress or a checkpoint of a task in ``status``."""
    return _in(status, EDIT_FROM)


def is_held(status: _Status, lease_owner: str | None, worker_id: str) -> bool:
    """Whether ``worker_id`` holds the task: ``DOING`` and its lease owner.

    Only the holder may complete, fail, release or renew it.
    """
    return _in(status, HELD_FROM) and lease_owner == worker_id


def is_ready(due_at: float, now: float) -> bool:
    """Whether a ``PENDING`` task due at ``due_at`` is ready at ``now`` (``due_at <= now``)."""
    return due_at <= now


# -- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """A new task: ``PENDING``, due at ``due_at``; ``ready`` when already due."""

    due_at: float
    ready: bool
    status: TaskStatus = _PENDING


def create(due_at: float | None, delay: float | timedelta, now: float) -> Created:
    """A task created at ``now``: due at ``due_at`` if given, else at ``now + delay``."""
    if due_at is not None:
        due = float(due_at)
    else:
        due = now + (delay.total_seconds() if isinstance(delay, timedelta) else float(delay))
    return Created(due_at=due, ready=is_ready(due, now))


@dataclass(frozen=True, slots=True)
class Leased:
    """A leased task: ``DOING``, its attempt counted, its lease running until ``lease_expires_at``."""

    attempts: int
    lease_expires_at: float
    started_at: float
    status: TaskStatus = _DOING


def lease(attempts: int | str | None, now: float, lease_seconds: float) -> Leased:
    """Lease a ``PENDING`` task at ``now``: ``attempts + 1`` (an unreadable count reads as 0)."""
    try:
        count = int(attempts or 0)
    except (TypeError, ValueError):
        count = 0
    return Leased(attempts=count + 1, lease_expires_at=now + float(lease_seconds), started_at=now)


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished attempt: ``DONE`` at ``finished_at``, progress 100, ``entry`` for the history."""

    entry: AttemptRecord
    finished_at: float
    progress: float = 100.0
    status: TaskStatus = TaskStatus.DONE


def complete(
    attempts: int, started_at: float | None, now: float, worker: str | None = None
) -> Completed:
    """The holder (``worker``) reports success at ``now`` for attempt ``attempts`` leased at
    ``started_at``."""
    entry = AttemptRecord(int(attempts), started_at, now, Outcome.OK, worker=worker)
    return Completed(entry=entry, finished_at=now)


@dataclass(frozen=True, slots=True)
class AfterFailure:
    """What follows a failed attempt: a retry (``PENDING`` due at ``due_at``) or ``FAILED``.

    Attributes:
        dead: ``True``: dead-letter it (``FAILED``); ``due_at`` and ``delay`` are then
            unused (``delay`` is 0).
        due_at: ``base + delay``, when the retry is due.
        delay: the wait before the retry; stored as ``last_delay``.
        error: what to store as ``last_error``: the attempt's error, or a
            ``CorruptTask`` error when the stored policy could not be used.
        base: the time the wait counts from: the failure's ``now``, or the
            expired lease's expiry; also the history entry's ``ended_at``.

    The failed attempt's history entry is the backend's to write:
    ``AttemptRecord(attempts, started_at, base, outcome, <the attempt's own error>, worker)``
    (``error`` here may be the ``CorruptTask`` replacement; the entry keeps
    what the attempt raised, ``LEASE_EXPIRED_ERROR`` for a reclaim).
    """

    dead: bool
    due_at: float
    delay: float
    error: TaskError
    base: float

    @property
    def status(self) -> TaskStatus:
        """``FAILED`` when dead, else ``PENDING``."""
        return TaskStatus.FAILED if self.dead else _PENDING

    def ready(self, now: float) -> bool:
        """Whether the retry is due already at ``now`` (never for a dead letter)."""
        return not self.dead and is_ready(self.due_at, now)


def corrupt_error(detail: str, traceback: str = "") -> TaskError:
    """The error a task that cannot be used is dead-lettered with (``CorruptTask``)."""
    return TaskError("CorruptTask", detail, traceback)


def corrupt(detail: str, now: float) -> AfterFailure:
    """A leased task that cannot be decoded: dead-lettered at ``now`` with a ``CorruptTask``
    error saying why (``detail``), nothing else of it touched."""
    return AfterFailure(dead=True, due_at=now, delay=0.0, error=corrupt_error(detail), base=now)


def _delay(
    attempts: int, backoff: str | Mapping[str, Any] | None, last_delay: float | str | None
) -> float:
    """``Backoff.delay(max(1, attempts), last_delay)`` of the stored policy.

    Raises:
        TypeError, ValueError: the policy (JSON text or a dict) or ``last_delay`` is unusable.
    """
    data = json.loads(backoff) if isinstance(backoff, str) else backoff
    policy = Backoff.from_dict(data)  # type: ignore[arg-type]
    if isinstance(last_delay, str):
        last: float | None = float(last_delay) if last_delay else None
    else:
        last = last_delay
    return policy.delay(max(1, attempts), last)


def after_failure(
    *,
    attempts: int | str | None,
    max_retries: int | str | None,
    backoff: str | Mapping[str, Any] | None,
    last_delay: float | str | None,
    error: TaskError,
    base: float,
    permanent: bool = False,
    delay: float | None = None,
) -> AfterFailure:
    """Decide what follows a failed attempt.

    Dead (``FAILED``) when ``permanent``, or when ``attempts > max_retries``
    (the attempt that failed was the last allowed), or when no ``delay`` is
    given and the stored policy cannot give one. Otherwise the retry waits
    ``delay`` when given, else ``Backoff.from_dict(backoff).delay(max(1,
    attempts), last_delay)``, and is due at ``base + delay``.

    Args:
        attempts: attempts started (counting the one that failed); ``None`` or
            ``""`` read as 0.
        max_retries: retries allowed after the first attempt; ``None`` or ``""`` read as 0.
        backoff: the stored policy, as JSON text or its dict.
        last_delay: the last wait used (``None`` or ``""``: none yet).
        error: what the attempt ended with.
        base: when the wait starts (the failure's time).
        permanent: the error says "do not retry".
        delay: a wait the handler asked for, instead of the policy's.

    Raises:
        ValueError: ``attempts`` or ``max_retries`` is text that is not an int.
    """
    count = int(attempts or 0)
    dead = bool(permanent) or count > int(max_retries or 0)
    wait = 0.0
    stored = error
    if not dead:
        if delay is not None:
            wait = float(delay)
        else:
            try:
                wait = _delay(count, backoff, last_delay)
            except (TypeError, ValueError) as exc:
                stored = corrupt_error(
                    f"stored backoff policy is unusable ({exc}); last error: "
                    f"{error.type}: {error.message}",
                    error.traceback,
                )
                dead = True
    return AfterFailure(dead=dead, due_at=base + wait, delay=wait, error=stored, base=base)


def lease_expired(
    *,
    attempts: int | str | None,
    max_retries: int | str | None,
    backoff: str | Mapping[str, Any] | None,
    last_delay: float | str | None,
    lease_expires_at: float | str | None,
    now: float,
) -> AfterFailure:
    """Decide what follows a lease that expired (its worker died or hung): a ``LOST`` attempt.

    The same rule as ``after_failure`` with the error ``LEASE_EXPIRED_ERROR``,
    ``base`` the lease's expiry (``now`` when it is unknown), never permanent
    and no explicit delay. Counts that cannot be read dead-letter the task
    (they read as attempt 1 of 1) rather than stop the reclaim of the others.
    """
    try:
        count, allowed = int(attempts), int(max_retries)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        count, allowed = 1, 0
    base = now if lease_expires_at is None or lease_expires_at == "" else float(lease_expires_at)
    return after_failure(
        attempts=count,
        max_retries=allowed,
        backoff=backoff,
        last_delay=last_delay,
        error=LEASE_EXPIRED_ERROR,
        base=base,
    )


@dataclass(frozen=True, slots=True)
class Released:
    """A lease handed back unrun: ``PENDING``, due ``due_at`` (now), the attempt not counted."""

    attempts: int
    due_at: float
    status: TaskStatus = _PENDING

    @property
    def ready(self) -> bool:
        """Always: a released task is due at once."""
        return True


def release(attempts: int | str | None, now: float) -> Released:
    """The holder gives the task back at ``now``: ``attempts - 1`` (never below 0).

    An unreadable count reads as 1 (so it becomes 0).
    """
    try:
        count = int(attempts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        count = 1
    return Released(attempts=max(count - 1, 0), due_at=now)


@dataclass(frozen=True, slots=True)
class Canceled:
    """A canceled task: ``CANCELED`` at ``finished_at``; ``entry`` when an attempt was running."""

    finished_at: float
    entry: AttemptRecord | None
    status: TaskStatus = TaskStatus.CANCELED


def cancel(
    status: _Status,
    *,
    attempts: int,
    started_at: float | None,
    now: float,
    worker: str | None = None,
) -> Canceled | None:
    """Cancel a task in ``status`` at ``now``; ``None`` when ``status`` may not be canceled.

    A ``DOING`` task gets a ``canceled`` history entry (``CANCELED_ERROR``) for
    its running attempt (held by ``worker``) and keeps its lease owner (its worker
    finds out on renew).
    """
    if not can_cancel(status):
        return None
    entry = None
    if _in(status, HELD_FROM):
        entry = AttemptRecord(
            int(attempts), started_at, now, Outcome.CANCELED, CANCELED_ERROR, worker
        )
    return Canceled(finished_at=now, entry=entry)


@dataclass(frozen=True, slots=True)
class Requeued:
    """A dead letter or canceled task back to ``PENDING``: attempts and ``last_delay`` reset."""

    due_at: float
    ready: bool
    attempts: int = 0
    last_delay: float | None = None
    status: TaskStatus = _PENDING


def requeue(delay: float, now: float) -> Requeued:
    """Requeue at ``now``, due ``delay`` seconds later (allowed from ``REQUEUE_FROM``).

    History, ``last_error``, checkpoint and progress are kept.
    """
    due = now + float(delay)
    return Requeued(due_at=due, ready=is_ready(due, now))
