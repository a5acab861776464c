"""The stored task: what a producer asks for (``TaskSpec``) and what a store keeps (``Task``).

A ``TaskSpec`` is validated when it is built, so every backend receives the
same clean input and a bad field fails at enqueue with its name and value,
before anything is stored. A ``Task`` is an immutable snapshot of a stored
row: stores return a new one after every transition.

Counting (the same in every backend):

* ``attempts`` is incremented when a worker *leases* the task, so an attempt
  whose worker crashes still counts.
* ``max_retries`` is the number of retries after the first attempt:
  ``max_retries=3`` allows at most 4 attempts.
  A failed attempt is retried while ``attempts <= max_retries``.
* The wait before retry ``n`` is ``backoff.delay(attempts, last_delay)``:
  ``attempts`` counts from 1, as ``Backoff.delay`` does.
"""

from __future__ import annotations

import math
import re
import traceback as _traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from resile import _util
from resile.backoff import Backoff
from resile.queue._names import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    MAX_ID_LENGTH,
    TERMINAL_STATUSES,
    TRACEBACK_LIMIT,
    Outcome,
    TaskStatus,
)

__all__ = [
    "AttemptRecord",
    "JSONValue",
    "Task",
    "TaskError",
    "TaskSpec",
    "check_json",
    "new_task_id",
]

# What params, checkpoints and results may hold: anything ``json.dumps`` accepts
# without help (dict keys are strings, floats are finite).
JSONValue = Any

_INT64 = 2**63


def new_task_id() -> str:
    """A fresh random task id (32 hex characters)."""
    return uuid.uuid4().hex


_SCALARS = (str, bool, int)


def _plain(obj: object, depth: int) -> bool:
    """``check_json``'s verdict without building paths (the common, passing case)."""
    if obj is None or isinstance(obj, _SCALARS):
        return True
    if isinstance(obj, float):
        return math.isfinite(obj)
    if depth >= 50:  # deeper: let check_json walk it iteratively
        return False
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return False
            if v is None or isinstance(v, _SCALARS):
                continue
            if not _plain(v, depth + 1):
                return False
        return True
    if isinstance(obj, (list, tuple)):
        return all(_plain(v, depth + 1) for v in obj)
    return False


def check_json(value: object, path: str = "value") -> None:
    """Check that ``value`` is plain JSON: dict (str keys), list/tuple, str, int, finite float, bool, None.

    Raises:
        ValueError: naming the first offending path, e.g.
            ``params['items'][2]: set is not JSON-serializable``.
    """
    if _plain(value, 0):
        return
    # Only to name the offending path. Iterative, so deep structures cannot blow the
    # recursion limit.
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack:
        obj, where, depth = stack.pop()
        if depth > 200:
            raise ValueError(f"{where}: nested deeper than 200 levels")
        if obj is None or isinstance(obj, (str, bool, int)):
            continue
        if isinstance(obj, float):
            if not math.isfinite(obj):
                raise ValueError(f"{where}: {obj!r} is not valid JSON (only finite numbers are)")
            continue
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise ValueError(
                        f"{where}: key {k!r} is a {type(k).__name__}; JSON object keys must be str"
                    )
                stack.append((v, f"{where}[{k!r}]", depth + 1))
            continue
        if isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                stack.append((v, f"{where}[{i}]", depth + 1))
            continue
        raise ValueError(
            f"{where}: {type(obj).__name__} is not JSON-serializable; "
            "use dict, list, str, int, float, bool or None"
        )


# A W3C traceparent: version-traceid-parentid-flags (lower-case hex), e.g. 00-<32>-<16>-01.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def _check_traceparent(value: object) -> None:
    if not isinstance(value, str) or not _TRACEPARENT.fullmatch(value):
        raise ValueError(
            f"task: traceparent must be a W3C traceparent ('00-<32 hex>-<16 hex>-<2 hex>'), "
            f"got {value!r}"
        )


def _check_name(value: object, field_: str, owner: str = "task") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{owner}: {field_} must be a non-empty str of at most {MAX_ID_LENGTH} characters, "
            f"got {value!r}"
        )
    return value


def _check_int(value: object, field_: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"task: {field_} must be an int, got {value!r}")
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"task: {field_} must fit in 64 bits, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"task: {field_} must be >= {minimum}, got {value!r}")
    return value


def _check_seconds(value: object, field_: str, *, positive: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"task: {field_} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"task: {field_} must be a finite number {bound}, got {value!r}")
    return seconds


# Policies already checked, by their items: an enqueue does not rebuild the same strategy.
_CHECKED_BACKOFFS: dict[tuple[tuple[Any, type, Any], ...], dict[str, Any]] = {}


def _check_backoff(value: object) -> dict[str, Any]:
    if isinstance(value, Backoff):
        return value.to_dict()
    if isinstance(value, Mapping):
        try:
            # The type is part of the key: 1, 1.0 and True hash alike but do not check alike.
            key: tuple[tuple[Any, type, Any], ...] | None = tuple(
                sorted((k, type(v), v) for k, v in value.items())
            )
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in _CHECKED_BACKOFFS:
            return dict(_CHECKED_BACKOFFS[key])
        try:
            checked = Backoff.from_dict(value).to_dict()
            if key is not None and len(_CHECKED_BACKOFFS) < 1024:
                _CHECKED_BACKOFFS[key] = checked
            return dict(checked)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"task: backoff {dict(value)!r} is not a valid policy: {exc}"
            ) from None
    raise ValueError(
        "task: backoff must be a resile backoff strategy (resile.Exponential(...), ...) "
        f"or its to_dict(), got {value!r}"
    )


def _check_resources(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"task: resources must be a dict of name -> number, got {value!r}")
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"task: resources key must be a non-empty str, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"task: resources[{k!r}] must be a finite number >= 0, got {v!r}")
        out[k] = float(v)
    return out


@dataclass(frozen=True, slots=True)
class TaskError:
    """An error one attempt ended with: exception type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskError:
        """Describe ``exc``; the traceback is cut to its last ``TRACEBACK_LIMIT`` characters."""
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(
            type=type(exc).__qualname__,
            message=str(exc),
            traceback=tb[-TRACEBACK_LIMIT:],
        )

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form; ``TaskError.from_dict`` reverses it."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskError:
        """Rebuild from ``to_dict()`` output (missing keys become empty strings)."""
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )

    def __repr__(self) -> str:
        return f"TaskError({self.type}: {self.message!r})"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One entry of ``Task.history``: an attempt and how it ended.

    (Named ``Attempt`` before 0.2; that name still works, with a ``DeprecationWarning``.)

    Attributes:
        attempt: its number, counted from 1 (``Task.attempts`` when it ran).
        started_at: epoch seconds when it was leased (``None`` if unknown).
        ended_at: epoch seconds when its outcome was recorded.
        outcome: ``ok``, ``error``, ``timeout``, ``lost`` or ``canceled``.
        error: what it raised, for every outcome but ``ok``.
        worker: the id of the worker that held the attempt's lease (``None``:
            unknown, e.g. an entry written before 0.3).
    """

    attempt: int
    started_at: float | None
    ended_at: float
    outcome: Outcome
    error: TaskError | None = None
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``AttemptRecord.from_dict`` reverses it."""
        return {
            "attempt": self.attempt,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome.value,
            "error": None if self.error is None else self.error.to_dict(),
            "worker": self.worker,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptRecord:
        """Rebuild from ``to_dict()`` output."""
        err = data.get("error")
        return cls(
            attempt=int(data["attempt"]),
            started_at=None if data.get("started_at") is None else float(data["started_at"]),
            ended_at=float(data["ended_at"]),
            outcome=Outcome(data["outcome"]),
            error=TaskError.from_dict(err) if isinstance(err, Mapping) else None,
            worker=data["worker"] if isinstance(data.get("worker"), str) else None,
        )

    @property
    def duration(self) -> float | None:
        """Seconds the attempt ran, when its start is known."""
        return None if self.started_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a producer asks a store to create. Every field is checked here.

    Args:
        handler: the registered handler's name.
        params: keyword arguments for the handler; plain JSON (checked, with
            the offending path in the error).
        id: the task id, unique in the store; ``None`` generates one.
        queue: the queue name.
        priority: lower runs first; equal priorities run in creation order.
        max_retries: retries after the first attempt (>= 0).
        backoff: a ``resile.backoff`` strategy or its ``to_dict()``; stored
            as the dict.
        timeout: exec timeout of one attempt in seconds (> 0), or ``None``.
        resources: needs a worker must meet to lease the task, e.g.
            ``{"min_gpu_memory_gb": 0.5, "min_gpu_utilization": 10}``.
        delay: seconds from creation until the task is due (>= 0).
        due_at: an absolute due time (epoch seconds); overrides ``delay``.
        traceparent: the W3C trace context to store with the task; by default
            the one an installed tracing hook (``resile.otel``) gives when the
            store creates it.

    Raises:
        ValueError: any invalid field, named with its value; nothing is stored.
    """

    handler: str
    params: Mapping[str, JSONValue] = field(default_factory=dict)
    id: str | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: Backoff | Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKOFF))
    timeout: float | timedelta | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    delay: float | timedelta = 0.0
    due_at: float | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _check_name(self.handler, "handler")
        if self.id is not None:
            _check_name(self.id, "id")
        _check_name(self.queue, "queue")
        if not isinstance(self.params, Mapping):
            raise ValueError(
                f"task: params must be a dict of keyword arguments, got {self.params!r}"
            )
        params = dict(self.params)
        check_json(params, "params")
        set_(self, "params", params)
        _check_int(self.priority, "priority")
        _check_int(self.max_retries, "max_retries", minimum=0)
        set_(self, "backoff", _check_backoff(self.backoff))
        if self.timeout is not None:
            set_(self, "timeout", _check_seconds(self.timeout, "timeout", positive=True))
        set_(self, "resources", _check_resources(self.resources))
        set_(self, "delay", _check_seconds(self.delay, "delay"))
        if self.due_at is not None:
            if (
                isinstance(self.due_at, bool)
                or not isinstance(self.due_at, (int, float))
                or not (math.isfinite(self.due_at))
            ):
                raise ValueError(f"task: due_at must be epoch seconds, got {self.due_at!r}")
            set_(self, "due_at", float(self.due_at))
        if self.traceparent is not None:
            _check_traceparent(self.traceparent)

    @classmethod
    def _prechecked(
        cls,
        handler: str,
        params: Mapping[str, JSONValue],
        queue: str,
        max_retries: int,
        backoff: dict[str, Any],
        timeout: float | None,
        resources: dict[str, float],
        *,
        id: str | None,
        priority: int,
        delay: float | timedelta,
        due_at: float | None,
    ) -> TaskSpec:
        """A spec from a task function's defaults, checked once when it was declared.

        Checks only what varies per call (params, id, priority, delay, due_at),
        with the same errors as the constructor. ``backoff`` and ``resources``
        are shared with the caller, not copied: they must not change.
        """
        if params.__class__ is not dict and not isinstance(params, Mapping):  # dict: skip the ABC
            raise ValueError(f"task: params must be a dict of keyword arguments, got {params!r}")
        params = dict(params)
        if params:
            check_json(params, "params")
        if id is not None:
            _check_name(id, "id")
        if priority.__class__ is not int or not -_INT64 <= priority < _INT64:
            _check_int(priority, "priority")
        if delay.__class__ is not float or not 0.0 <= delay < math.inf:
            delay = _check_seconds(delay, "delay")
        spec = object.__new__(cls)
        set_ = object.__setattr__
        set_(spec, "handler", handler)
        set_(spec, "params", params)
        set_(spec, "id", id)
        set_(spec, "queue", queue)
        set_(spec, "priority", priority)
        set_(spec, "max_retries", max_retries)
        set_(spec, "backoff", backoff)
        set_(spec, "timeout", timeout)
        set_(spec, "resources", resources)
        set_(spec, "delay", delay)
        set_(spec, "due_at", None)
        set_(spec, "traceparent", None)
        if due_at is not None:
            if (
                isinstance(due_at, bool)
                or not isinstance(due_at, (int, float))
                or not (math.isfinite(due_at))
            ):
                raise ValueError(f"task: due_at must be epoch seconds, got {due_at!r}")
            set_(spec, "due_at", float(due_at))
        return spec

    def due_time(self, now: float) -> float:
        """When the task is first due, given the creation time ``now``."""
        return self.due_at if self.due_at is not None else now + float(self.delay)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, repr=False)
class Task:
    """A snapshot of one stored task. Stores return a fresh one after every change.

    Attributes:
        id: unique in the store.
        queue: the queue.
        handler: the registered handler's name.
        params: the handler's keyword arguments (JSON object).
        priority: lower runs first.
        sequence: creation order in the store, strictly increasing; ties of
            ``priority`` run in ``sequence`` order (FIFO).
        status: a ``TaskStatus``.
        attempts: attempts started (incremented at lease time).
        max_retries: retries allowed after the first attempt.
        backoff: the policy as ``Backoff.to_dict()``; see ``backoff_policy``.
        last_delay: the last retry wait used (``DecorrelatedJitter`` continues from it).
        due_at: epoch seconds when a ``PENDING`` task may run.
        lease_owner: the worker id holding (or that last held) the lease.
        lease_expires_at: when the current lease lapses, for ``DOING`` tasks.
        progress: 0..100, reported by the handler (100 when ``DONE``).
        checkpoint: what the handler saved to resume from (JSON), or ``None``.
        result: the handler's return value (JSON) once ``DONE``.
        last_error: the last attempt's error, if any.
        history: the most recent attempts, oldest first.
        timeout: exec timeout of one attempt in seconds, or ``None``.
        resources: needs a worker must meet to lease it.
        created_at, updated_at: epoch seconds.
        started_at: when the latest attempt was leased.
        finished_at: when it reached a terminal state.
        traceparent: the W3C trace context stored at enqueue, or ``None``.
    """

    id: str
    queue: str
    handler: str
    params: dict[str, JSONValue]
    priority: int
    sequence: int
    status: TaskStatus
    attempts: int
    max_retries: int
    backoff: dict[str, Any]
    due_at: float
    created_at: float
    updated_at: float
    last_delay: float | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    progress: float = 0.0
    checkpoint: JSONValue = None
    result: JSONValue = None
    last_error: TaskError | None = None
    history: tuple[AttemptRecord, ...] = ()
    timeout: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    traceparent: str | None = None

    @property
    def terminal(self) -> bool:
        """True once ``DONE``, ``FAILED`` or ``CANCELED``."""
        return self.status in TERMINAL_STATUSES

    @property
    def max_attempts(self) -> int:
        """``max_retries + 1``."""
        return self.max_retries + 1

    @property
    def retries_left(self) -> int:
        """Attempts still allowed after those already started."""
        return max(0, self.max_attempts - self.attempts)

    @property
    def backoff_policy(self) -> Backoff:
        """The stored policy as a strategy object (``Backoff.from_dict(self.backoff)``)."""
        return Backoff.from_dict(self.backoff)

    def is_due(self, now: float) -> bool:
        """True when ``PENDING`` and ``due_at <= now``."""
        return self.status is TaskStatus.PENDING and self.due_at <= now

    def fits(self, capacity: Mapping[str, float] | None) -> bool:
        """True when a worker offering ``capacity`` meets every need in ``resources``.

        A need ``{k: v}`` is met when ``capacity.get(k, 0.0) >= v``; needs of 0
        are always met, and a task without needs fits any worker. ``None``
        capacity means "do not check" (every task fits).
        """
        if capacity is None:
            return True
        return all(capacity.get(k, 0.0) >= v for k, v in self.resources.items())

    def replace(self, **changes: Any) -> Task:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field; ``Task.from_dict`` reverses it."""
        return {
            "id": self.id,
            "queue": self.queue,
            "handler": self.handler,
            "params": self.params,
            "priority": self.priority,
            "sequence": self.sequence,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "backoff": self.backoff,
            "last_delay": self.last_delay,
            "due_at": self.due_at,
            "lease_owner": self.lease_owner,
            "lease_expires_at": self.lease_expires_at,
            "progress": self.progress,
            "checkpoint": self.checkpoint,
            "result": self.result,
            "last_error": None if self.last_error is None else self.last_error.to_dict(),
            "history": [a.to_dict() for a in self.history],
            "timeout": self.timeout,
            "resources": self.resources,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Rebuild from ``to_dict()`` output.

        Raises:
            KeyError, ValueError, TypeError: a missing or malformed field.
        """
        err = data.get("last_error")
        return cls(
            id=str(data["id"]),
            queue=str(data["queue"]),
            handler=str(data["handler"]),
            params=dict(data["params"]),
            priority=int(data["priority"]),
            sequence=int(data["sequence"]),
            status=TaskStatus(data["status"]),
            attempts=int(data["attempts"]),
            max_retries=int(data["max_retries"]),
            backoff=dict(data["backoff"]),
            last_delay=_opt_float(data.get("last_delay")),
            due_at=float(data["due_at"]),
            lease_owner=data.get("lease_owner"),
            lease_expires_at=_opt_float(data.get("lease_expires_at")),
            progress=float(data.get("progress", 0.0)),
            checkpoint=data.get("checkpoint"),
            result=data.get("result"),
            last_error=TaskError.from_dict(err) if isinstance(err, Mapping) else None,
            history=tuple(AttemptRecord.from_dict(a) for a in data.get("history", ())),
            timeout=_opt_float(data.get("timeout")),
            resources={str(k): float(v) for k, v in dict(data.get("resources", {})).items()},
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            started_at=_opt_float(data.get("started_at")),
            finished_at=_opt_float(data.get("finished_at")),
            traceparent=data.get("traceparent") or None,
        )

    def __repr__(self) -> str:
        parts = [
            f"id={self.id!r}",
            f"queue={self.queue!r}",
            f"handler={self.handler!r}",
            f"status={self.status.value}",
            f"attempts={self.attempts}/{self.max_attempts}",
            f"priority={self.priority}",
            f"due_at={self.due_at:.6f}",
        ]
        if self.status is TaskStatus.DOING:
            parts.append(f"lease_owner={self.lease_owner!r}")
        if self.progress:
            parts.append(f"progress={self.progress:g}")
        if self.last_error is not None:
            parts.append(f"last_error={self.last_error!r}")
        return f"Task({', '.join(parts)})"


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


# ``Attempt``, the old name of ``AttemptRecord``, still works with a ``DeprecationWarning``.
__getattr__ = _util.renamed(__name__, {"Attempt": ("AttemptRecord", AttemptRecord)})
