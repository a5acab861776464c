"""Instrumentation hooks: what the retry engine and the queue tell the outside world.

The engine, the queue's worker and the call-level patterns fire *events*
(small slotted records, below; hooks treat them as read-only: a frozen
dataclass would cost three times as much to build on the retry path) from
the one place each thing happens. A *hook*
is any callable taking one event; ``resile.metrics``, ``resile.otel`` and
``resile.logs`` are three such hooks, and users may install their own::

    from resile import instrument

    def count(event: instrument.Event) -> None:
        if event.kind is instrument.Kind.ATTEMPT_FINISHED:
            print(event.queue, event.task, event.outcome)

    uninstall = instrument.install(count)

The cost when nothing is installed is one truthiness test of the module-level
tuple ``hooks`` per emission point (no event is built). A hook may narrow the
kinds it is sent with a ``kinds`` attribute (an iterable of ``Kind``), and name
a function per kind in a ``handlers`` mapping (called instead of the hook); an
emission point on a hot path (a ``@retry`` attempt) also tests
``wants[kind]``, so a hook that does not listen to it costs nothing there.

An exception raised by a hook never reaches the caller: it is logged once per
hook (on the ``"resile"`` logger, with the traceback) and then ignored.

This module imports nothing outside the standard library; importing resile
imports neither prometheus_client nor opentelemetry.

Multi-process workers: events are plain picklable records, so a child process
installs ``Relay(send)`` (``send`` puts the event on the pipe to its parent)
and the parent hands each received event to ``emit``; the parent's hooks see
every child's events and one ``/metrics`` endpoint serves them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

__all__ = [
    "AttemptOutcome",
    "BreakerEvent",
    "BudgetEvent",
    "Event",
    "GiveUpReason",
    "Hook",
    "Kind",
    "PeriodicEvent",
    "Relay",
    "RetryEvent",
    "ScheduleEvent",
    "SlotsEvent",
    "SupervisorEvent",
    "TaskEvent",
    "attempt_carrier",
    "attempt_scope",
    "emit",
    "for_task",
    "hooks",
    "install",
    "installed",
    "produce",
    "recording",
    "scoped",
    "uninstall",
    "wants",
]

_log = logging.getLogger("resile")


class Kind(str, Enum):
    """What happened. The value is the event's stable name (for logs and tests)."""

    # -- the durable queue (TaskEvent) ----------------------------------------------------------
    TASK_CREATED = "task.created"
    TASK_LEASED = "task.leased"
    ATTEMPT_STARTED = "task.attempt_started"
    ATTEMPT_FINISHED = "task.attempt_finished"
    TASK_RETRY_SCHEDULED = "task.retry_scheduled"
    TASK_DEAD = "task.dead"
    TASK_CANCELED = "task.canceled"
    LEASE_EXPIRED = "task.lease_expired"
    LEASE_LOST = "task.lease_lost"
    TASK_TIMED_OUT = "task.timed_out"
    # -- worker capacity (SlotsEvent) -----------------------------------------------------------
    WORKER_SLOTS = "worker.slots"
    # -- @retry (RetryEvent) --------------------------------------------------------------------
    RETRY_ATTEMPT = "retry.attempt"
    RETRY_SCHEDULED = "retry.scheduled"
    RETRY_GAVE_UP = "retry.gave_up"
    # -- call-level patterns --------------------------------------------------------------------
    BREAKER_TRANSITION = "breaker.transition"
    BUDGET_REJECTED = "budget.rejected"
    PERIODIC_RUN = "periodic.run"
    # -- durable schedules (ScheduleEvent) ------------------------------------------------------
    SCHEDULE_TICK = "schedule.tick"
    SUPERVISOR_RECONNECT = "supervisor.reconnect"

    # Every emission looks a kind up in dicts: hash it as its string, in C (Enum's
    # __hash__ is a Python method, measured at about a third of a microsecond a lookup).
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class AttemptOutcome(str, Enum):
    """How one attempt of a stored task ended (the ``outcome`` label of the metrics)."""

    SUCCEEDED = "succeeded"  # the task is DONE
    RETRYING = "retrying"  # it failed and goes back to PENDING with a delay
    DEAD = "dead"  # it failed with no retry left, or permanently: FAILED
    CANCELED = "canceled"  # it was canceled while it ran
    EXPIRED = "expired"  # its lease lapsed (the worker died or hung) and was reclaimed

    def __str__(self) -> str:
        return self.value


class GiveUpReason(str, Enum):
    """Why ``@retry`` stopped retrying."""

    ATTEMPTS = "attempts"  # the attempt limit was reached
    ELAPSED = "elapsed"  # the time limit of the stop condition passed
    DEADLINE = "deadline"  # the deadline (resile.deadline / timeout=) left no room
    PERMANENT = "permanent"  # the error was permanent
    BUDGET = "budget"  # the shared retry budget was drained

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class TaskEvent:
    """A stored task's transition, or an attempt of it starting or ending.

    Attributes:
        kind: one of the ``task.*`` kinds.
        queue: the queue's name.
        task: the handler's name (bounded: never an id).
        task_id: the task's id (for logs and traces only; metrics never use it).
        attempt: the attempt number, from 1 (0 before the first lease).
        worker_id: the worker that leased it, when one did.
        outcome: on ``ATTEMPT_FINISHED`` and ``LEASE_EXPIRED``, how it ended.
        delay: seconds until the next attempt, on a scheduled retry.
        error_type: the exception's class name, on a failure.
        duration: seconds the attempt ran, on ``ATTEMPT_FINISHED``.
        lateness: seconds between the due time and the start, on ``ATTEMPT_STARTED``.
        traceparent: the W3C trace context stored with the task, when there is one.
    """

    kind: Kind
    queue: str
    task: str
    task_id: str
    attempt: int = 0
    worker_id: str | None = None
    outcome: AttemptOutcome | None = None
    delay: float | None = None
    error_type: str | None = None
    duration: float | None = None
    lateness: float | None = None
    traceparent: str | None = None


@dataclass(slots=True)
class SlotsEvent:
    """A worker's capacity for one queue: ``slots`` it may run at once, ``busy`` running now."""

    kind: Kind
    queue: str
    slots: int
    busy: int
    worker_id: str | None = None


@dataclass(slots=True)
class RetryEvent:
    """An attempt of a ``@retry`` call, a scheduled retry (``delay``), or a give-up (``reason``).

    ``callable`` is the retried function's qualified name (or ``Retrying.name``).
    """

    kind: Kind
    callable: str
    attempt: int
    delay: float | None = None
    error_type: str | None = None
    reason: GiveUpReason | None = None


@dataclass(slots=True)
class BreakerEvent:
    """A circuit breaker moved from ``from_state`` to ``to_state`` (``closed``, ``half_open``, ``open``)."""

    kind: Kind
    breaker: str
    from_state: str
    to_state: str


@dataclass(slots=True)
class BudgetEvent:
    """A retry budget refused a retry."""

    kind: Kind
    budget: str


@dataclass(slots=True)
class PeriodicEvent:
    """A run of a periodic task: ``outcome`` is ``succeeded`` or ``failed``."""

    kind: Kind
    name: str
    outcome: str
    duration: float


@dataclass(slots=True)
class ScheduleEvent:
    """Ticks of a durable schedule handled by a worker: ``count`` ticks had ``outcome``
    ``fired`` (a task enqueued), ``missed`` (no worker in time; the ``missed=`` policy
    dropped them) or ``skipped`` (``overlap=`` dropped them). ``last_fire`` is the newest
    tick handled, ``next_fire`` the next one due (epoch seconds), ``period`` the seconds
    between ticks there. ``outcome="paused"`` (``count`` 0): a look found it paused."""

    kind: Kind
    schedule: str
    queue: str
    outcome: str
    count: int
    last_fire: float | None = None
    next_fire: float | None = None
    period: float | None = None


@dataclass(slots=True)
class SupervisorEvent:
    """A supervised connection is being re-established (``attempt`` from 1)."""

    kind: Kind
    name: str
    attempt: int
    error_type: str | None = None


def for_task(
    kind: Kind,
    task: Any,
    *,
    attempt: int | None = None,
    worker_id: str | None = None,
    outcome: AttemptOutcome | None = None,
    delay: float | None = None,
    error_type: str | None = None,
    duration: float | None = None,
    lateness: float | None = None,
) -> TaskEvent:
    """A ``TaskEvent`` about a stored task (anything with ``queue``, ``handler``, ``id``,
    ``attempts`` and, optionally, ``traceparent``); ``attempt`` defaults to ``task.attempts``.

    Built positionally: a worker builds a few of these per task (keyword arguments
    collected into a dict cost three times as much).
    """
    return TaskEvent(
        kind,
        task.queue,
        task.handler,
        task.id,
        task.attempts if attempt is None else attempt,
        worker_id,
        outcome,
        delay,
        error_type,
        duration,
        lateness,
        getattr(task, "traceparent", None),
    )


Event: TypeAlias = (
    TaskEvent
    | SlotsEvent
    | RetryEvent
    | BreakerEvent
    | BudgetEvent
    | PeriodicEvent
    | ScheduleEvent
    | SupervisorEvent
)
Hook = Callable[[Any], object]

# The installed hooks. Emission points test ``if instrument.hooks:`` before building an
# event; both names are rebound (never mutated) under the lock, so a reader sees a whole value.
hooks: tuple[Hook, ...] = ()
wants: dict[Kind, tuple[Hook, ...]] = dict.fromkeys(Kind, ())
# The installed hooks with a ``scope`` method (``attempt_scope``): the worker's runner tests
# it before entering one, so hooks without (metrics, logs) cost an attempt nothing.
scoped: tuple[Hook, ...] = ()
# What emit calls per kind: (hook, the hook or its handler for the kind).
_calls: dict[Kind, tuple[tuple[Hook, Hook], ...]] = dict.fromkeys(Kind, ())

_lock = threading.Lock()
_reported: set[int] = set()


def _kinds_of(hook: Hook) -> frozenset[Kind]:
    kinds = getattr(hook, "kinds", None)
    if kinds is None:
        return frozenset(Kind)
    try:
        found = frozenset(Kind(k) for k in kinds)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"instrument.install: hook {hook!r} has kinds={kinds!r}: "
            f"each must be a resile.instrument.Kind"
        ) from exc
    return found


def _rebuild(new: tuple[Hook, ...]) -> None:
    global hooks, wants, scoped, _calls
    table: dict[Kind, list[Hook]] = {k: [] for k in Kind}
    calls: dict[Kind, list[tuple[Hook, Hook]]] = {k: [] for k in Kind}
    for hook in new:
        # A hook may name a function per kind (``handlers``): emit calls it directly.
        handlers = getattr(hook, "handlers", None) or {}
        for kind in _kinds_of(hook):
            table[kind].append(hook)
            calls[kind].append((hook, handlers.get(kind, hook)))
    _calls = {k: tuple(v) for k, v in calls.items()}
    wants = {k: tuple(v) for k, v in table.items()}
    scoped = tuple(h for h in new if callable(getattr(h, "scope", None)))
    hooks = new


def install(hook: Hook) -> Callable[[], None]:
    """Send every event (or the hook's ``kinds``) to ``hook`` from now on.

    Installing a hook that is installed already does nothing.

    Returns:
        a function that uninstalls it (as ``uninstall(hook)`` does).

    Raises:
        TypeError: ``hook`` is not callable.
        ValueError: its ``kinds`` attribute holds something that is not a ``Kind``.
    """
    if not callable(hook):
        raise TypeError(f"instrument.install: hook must be callable, got {hook!r}")
    with _lock:
        if hook not in hooks:
            _rebuild((*hooks, hook))
    return lambda: uninstall(hook)


def uninstall(hook: Hook) -> None:
    """Stop sending events to ``hook``; a hook that is not installed is ignored."""
    with _lock:
        if hook in hooks:
            _rebuild(tuple(h for h in hooks if h != hook))
        _reported.discard(id(hook))


def installed() -> tuple[Hook, ...]:
    """The installed hooks, in installation order."""
    return hooks


def _failed(hook: Hook, event: object) -> None:
    key = id(hook)
    if key in _reported:
        return
    _reported.add(key)
    _log.exception(
        "resile: the instrumentation hook %r failed on %r; its further errors are not logged",
        hook,
        event,
    )


def emit(event: Event) -> None:
    """Hand ``event`` to every hook that listens to its kind; a hook's error is logged once."""
    for hook, call in _calls[event.kind]:
        try:
            call(event)
        except Exception:
            _failed(hook, event)


def produce(queue: str, task: str) -> str | None:
    """The trace context to store with a task being enqueued, or ``None``.

    Asks each installed hook that has a ``produce(queue, task)`` method (the
    OpenTelemetry hook starts its producer span there) and returns the first
    string one gives. The queue calls it only when ``hooks`` is not empty.
    """
    return _first_string(hooks, "produce", (queue, task))


def _first_string(among: tuple[Hook, ...], name: str, args: tuple[str, Any]) -> str | None:
    """The first str that a hook's method ``name(*args)`` returns; a failing one is logged once."""
    for hook in among:
        method = getattr(hook, name, None)
        if method is None:
            continue
        try:
            value = method(*args)
        except Exception:
            _failed(hook, args)
            continue
        if isinstance(value, str):
            return value
    return None


@contextmanager
def attempt_scope(task_id: str, attempt: int) -> Iterator[None]:
    """The context the handler of a stored task's attempt runs in.

    Enters what each installed hook with a ``scope(task_id, attempt)`` method
    returns (a context manager, or ``None``): the OpenTelemetry hook makes the
    attempt's consumer span current, so spans and logs the handler makes
    belong to it. The worker's runner enters it around the handler call, in
    the thread or asyncio task that runs it, only when ``scoped`` is not empty.
    A hook whose ``scope`` fails is logged once and skipped.
    """
    with ExitStack() as stack:
        for hook in scoped:
            method = hook.scope  # type: ignore[attr-defined]
            try:
                entered = method(task_id, attempt)
                if entered is not None:
                    stack.enter_context(entered)
            except Exception:
                _failed(hook, (task_id, attempt))
        yield


def attempt_carrier(task_id: str, attempt: int) -> str | None:
    """The trace context of a running attempt, for a handler in another process.

    The first string that a hook's ``carrier(task_id, attempt)`` method gives
    (the OpenTelemetry hook: the consumer span's ``traceparent``), or ``None``.
    Asked of the ``scoped`` hooks (a hook with a carrier has a scope too).
    """
    return _first_string(scoped, "carrier", (task_id, attempt))


class Relay:
    """A hook that forwards every event through ``send`` (e.g. a pipe to a parent process).

    The receiving side calls ``instrument.emit(event)``; events are picklable.
    """

    __slots__ = ("send",)

    def __init__(self, send: Callable[[Event], object]) -> None:
        if not callable(send):
            raise TypeError(f"instrument.Relay: send must be callable, got {send!r}")
        self.send = send

    def __call__(self, event: Event) -> None:
        self.send(event)

    def __repr__(self) -> str:
        return f"Relay({self.send!r})"


@contextmanager
def recording(*kinds: Kind) -> Iterator[list[Event]]:
    """Collect events (of ``kinds``, or all) into a list while the block runs.

    A testing aid: ``with instrument.recording(Kind.RETRY_SCHEDULED) as events: ...``.
    """
    events: list[Event] = []

    def record(event: Event) -> None:
        events.append(event)

    if kinds:
        record.kinds = frozenset(kinds)  # type: ignore[attr-defined]
    install(record)
    try:
        yield events
    finally:
        uninstall(record)
