"""One encoding of a task for every backend: stored fields <-> ``Task``.

A stored task is a mapping of field name (``resile.queue._names.TaskField``)
to a value: JSON text for the structured fields (``params``, ``backoff``,
``resources``, ``history``, ``last_error``, ``checkpoint``, ``result``),
numbers or their text for the others, and ``None`` or ``""`` for "not set".
SQLite hands a row over as ``dict(row)``; Redis an ``HGETALL`` as a dict of
strings. ``decode`` reads both.

Strict and lenient decoding:

* ``strict=True`` (what ``lease`` uses before it hands a task to a handler)
  raises ``CorruptField`` for any JSON field that does not parse or has the
  wrong shape, so the store dead-letters the task with the reason.
* ``strict=False`` (every read for display: ``get``, ``list`` ...) gives such
  fields their default (``{}``, ``[]``, ``None``), so a broken task can still
  be shown and requeued.

Either way an unknown status, or a missing or malformed required field, raises
``CorruptField``: there is no task to show without them.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from typing import Any

from resile.queue._names import HISTORY_LIMIT, TaskStatus
from resile.queue.store.base import dumps, dumps_params, dumps_shared
from resile.queue.task import AttemptRecord, Task, TaskError, TaskSpec

__all__ = [
    "CorruptField",
    "created_task",
    "decode",
    "encode_error",
    "encode_new",
    "has_needs",
    "history_with",
    "load_json",
]


class CorruptField(ValueError):
    """A stored field that cannot be decoded; ``field`` names it (``"?"`` when unknown)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"stored task is unreadable: field {field!r}: {detail}")
        self.field = field


# JSON texts that most tasks store, decoded without the parser (a fresh object each time).
_LITERALS: dict[str, Callable[[], Any]] = {"{}": dict, "[]": builtins.list, "null": lambda: None}
# Backoff policies repeat (one per task function): decoded once, copied per task.
_policy_cache: dict[str, dict[str, Any]] = {}
_POLICY_CACHE_MAX = 256


def load_json(
    fields: Mapping[str, Any], name: str, strict: bool, default: Any, kind: type | None
) -> Any:
    """The JSON field ``name`` of ``fields``, decoded; ``default`` when it is not set.

    Args:
        strict: raise ``CorruptField`` for text that does not parse or is not
            a ``kind``; otherwise return ``default`` for it.
        kind: the JSON type expected (``dict``, ``list``), or ``None`` for any.
    """
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    make = _LITERALS.get(raw) if isinstance(raw, str) else None
    if make is not None:
        value = make()
    elif name == "backoff" and raw in _policy_cache:
        return dict(_policy_cache[raw])
    else:
        try:
            value = json.loads(raw)
        except (TypeError, ValueError) as exc:
            if strict:
                raise CorruptField(name, f"not valid JSON ({exc})") from None
            return default
        if (
            name == "backoff"
            and isinstance(value, dict)
            and len(_policy_cache) < _POLICY_CACHE_MAX
            and all(isinstance(v, (str, int, float, bool)) or v is None for v in value.values())
        ):
            _policy_cache[raw] = dict(value)  # flat: a shallow copy is a full copy
    if kind is not None and not isinstance(value, kind):
        if strict:
            raise CorruptField(name, f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return default
    return value


def _opt(fields: Mapping[str, Any], name: str) -> float | None:
    raw = fields.get(name)
    return None if raw is None or raw == "" else float(raw)


_STATUSES = {s.value: s for s in TaskStatus}


def decode(fields: Mapping[str, Any], strict: bool = True) -> Task:
    """Stored fields -> ``Task`` (see the module docstring for ``strict``).

    Raises:
        CorruptField: a bad JSON field (``strict`` only); an unknown status or a
            missing or malformed required field (always).
    """
    get = fields.get
    # Fields most tasks leave unset or at "{}" skip the generic loader (the hot path).
    params = {} if get("params") == "{}" else load_json(fields, "params", strict, {}, dict)
    backoff = load_json(fields, "backoff", strict, {}, dict)
    resources: dict[str, float] = {}
    if get("resources"):
        resources_raw = load_json(fields, "resources", strict, {}, dict)
        try:
            resources = {str(k): float(v) for k, v in resources_raw.items()}
        except (TypeError, ValueError) as exc:
            if strict:
                raise CorruptField("resources", str(exc)) from None
    history: tuple[AttemptRecord, ...] = ()
    if get("history"):
        history_raw = load_json(fields, "history", strict, [], builtins.list)
        try:
            history = tuple(AttemptRecord.from_dict(a) for a in history_raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if strict:
                raise CorruptField("history", f"bad entry ({exc!r})") from None
    error_raw = load_json(fields, "last_error", strict, None, dict) if get("last_error") else None
    checkpoint = load_json(fields, "checkpoint", strict, None, None) if get("checkpoint") else None
    result = load_json(fields, "result", strict, None, None) if get("result") else None
    status = _STATUSES.get(get("status"))  # type: ignore[arg-type]
    if status is None:
        raise CorruptField("status", f"unknown status {get('status')!r}")
    try:
        return Task(
            id=fields["id"],
            queue=fields["queue"],
            handler=fields["handler"],
            params=params,
            priority=int(fields["priority"]),
            sequence=int(fields["seq"]),
            status=status,
            attempts=int(get("attempts") or 0),
            max_retries=int(fields["max_retries"]),
            backoff=backoff,
            last_delay=_opt(fields, "last_delay"),
            due_at=float(fields["due_at"]),
            lease_owner=get("lease_owner") or None,
            lease_expires_at=_opt(fields, "lease_expires_at"),
            progress=float(get("progress") or 0.0),
            checkpoint=checkpoint,
            result=result,
            last_error=None if error_raw is None else TaskError.from_dict(error_raw),
            history=history,
            timeout=_opt(fields, "timeout"),
            resources=resources,
            created_at=float(fields["created_at"]),
            updated_at=float(fields["updated_at"]),
            started_at=_opt(fields, "started_at"),
            finished_at=_opt(fields, "finished_at"),
            traceparent=get("traceparent") or None,
        )
    except KeyError as exc:
        raise CorruptField(str(exc.args[0]), "missing") from None
    except (TypeError, ValueError) as exc:
        raise CorruptField("?", str(exc)) from None


def has_needs(resources: Mapping[str, float]) -> bool:
    """Whether a task needs something not every worker offers (a need above 0): "gated"."""
    return any(v > 0 for v in resources.values())


def encode_new(spec: TaskSpec, task_id: str, due_at: float, now: float) -> dict[str, Any]:
    """The fields a new task is stored with (its ``seq`` is the store's to give).

    JSON fields as text, numbers as numbers, ``None`` for "not set"; ``status``
    is ``PENDING`` and ``attempts`` 0. A backend adds its own bookkeeping
    (SQLite's ``ready`` and ``has_resources``, Redis' ``rank`` and ``gated``).
    """
    timeout = None if spec.timeout is None else float(spec.timeout)  # type: ignore[arg-type]
    return {
        "id": task_id,
        "queue": spec.queue,
        "handler": spec.handler,
        "params": dumps_params(spec.params, task_id),
        "priority": spec.priority,
        "status": TaskStatus.PENDING.value,
        "attempts": 0,
        "max_retries": spec.max_retries,
        "backoff": dumps_shared(spec.backoff),  # type: ignore[arg-type]
        "due_at": due_at,
        "timeout": timeout,
        "resources": dumps(dict(spec.resources)),
        "created_at": now,
        "updated_at": now,
        "traceparent": spec.traceparent,
    }


def created_task(spec: TaskSpec, task_id: str, sequence: int, due_at: float, now: float) -> Task:
    """The snapshot of a task just created from ``spec`` (what ``create`` returns)."""
    return Task(
        id=task_id,
        queue=spec.queue,
        handler=spec.handler,
        params=dict(spec.params),
        priority=spec.priority,
        sequence=sequence,
        status=TaskStatus.PENDING,
        attempts=0,
        max_retries=spec.max_retries,
        backoff=dict(spec.backoff),  # type: ignore[arg-type]
        due_at=due_at,
        created_at=now,
        updated_at=now,
        timeout=None if spec.timeout is None else float(spec.timeout),  # type: ignore[arg-type]
        resources=dict(spec.resources),
        traceparent=spec.traceparent,
    )


def encode_error(error: TaskError) -> str:
    """``last_error`` (and a history entry's error) as stored: ``TaskError.to_dict()`` JSON."""
    return dumps(error.to_dict())


def history_with(stored: str | None, entry: AttemptRecord) -> str | None:
    """The stored ``history`` JSON with ``entry`` appended, cut to the last ``HISTORY_LIMIT``.

    ``None`` when the stored history is unreadable: the caller keeps it as it is
    (nothing stored is thrown away).
    """
    try:
        items = json.loads(stored or "[]")
    except (TypeError, ValueError):
        return None
    if not isinstance(items, builtins.list):
        return None
    items.append(entry.to_dict())
    return dumps(items[-HISTORY_LIMIT:])
