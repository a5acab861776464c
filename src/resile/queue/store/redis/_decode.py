"""A stored task hash back to a ``Task`` (the reply of ``HGETALL``, flat or a dict)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from resile.queue._names import TaskStatus
from resile.queue.task import AttemptRecord, Task, TaskError

__all__ = ["Corrupt", "decode", "pairs"]


class Corrupt(ValueError):
    """A stored field that cannot be decoded."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"stored task is unreadable: field {field!r}: {detail}")
        self.field = field


# JSON texts that most tasks store, decoded without the parser (a fresh object each time).
_LITERALS: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list, "null": lambda: None}
# Backoff policies repeat (one per task function): decoded once, copied per task.
_policy_cache: dict[str, dict[str, Any]] = {}


def _load(d: Mapping[str, str], field: str, strict: bool, default: Any, kind: type | None) -> Any:
    raw = d.get(field)
    if not raw:
        return default
    make = _LITERALS.get(raw)
    if make is not None:
        value = make()
    elif field == "backoff" and raw in _policy_cache:
        return dict(_policy_cache[raw])
    else:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            if strict:
                raise Corrupt(field, f"not valid JSON ({exc})") from None
            return default
        if (
            field == "backoff"
            and isinstance(value, dict)
            and len(_policy_cache) < 256
            and all(isinstance(v, (str, int, float, bool)) or v is None for v in value.values())
        ):
            _policy_cache[raw] = dict(value)  # flat: a shallow copy is a full copy
    if kind is not None and not isinstance(value, kind):
        if strict:
            raise Corrupt(field, f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return default
    return value


def _opt(d: Mapping[str, str], field: str) -> float | None:
    raw = d.get(field)
    return None if raw is None or raw == "" else float(raw)


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


_STATUSES = {s.value: s for s in TaskStatus}


def decode(flat: Sequence[Any] | Mapping[str, str], strict: bool = True) -> Task:
    """A task hash (``HGETALL``, flat or as a dict) -> Task.

    ``strict`` raises ``Corrupt`` for any bad JSON field; otherwise bad JSON
    fields get defaults. Missing or malformed required fields always raise.
    """
    d = flat if isinstance(flat, Mapping) else pairs(flat)
    get = d.get
    # Fields most tasks leave unset or at "{}" skip the generic loader (the hot path).
    raw = get("params")
    params = {} if raw == "{}" else _load(d, "params", strict, {}, dict)
    backoff = _load(d, "backoff", strict, {}, dict)
    resources_: dict[str, float] = {}
    if get("resources"):
        resources_raw = _load(d, "resources", strict, {}, dict)
        try:
            resources_ = {str(k): float(v) for k, v in resources_raw.items()}
        except (TypeError, ValueError) as exc:
            if strict:
                raise Corrupt("resources", str(exc)) from None
    history: tuple[AttemptRecord, ...] = ()
    if get("history"):
        history_raw = _load(d, "history", strict, [], list)
        try:
            history = tuple(AttemptRecord.from_dict(a) for a in history_raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if strict:
                raise Corrupt("history", f"bad entry ({exc!r})") from None
    error_raw = _load(d, "last_error", strict, None, dict) if get("last_error") else None
    checkpoint = _load(d, "checkpoint", strict, None, None) if get("checkpoint") else None
    result = _load(d, "result", strict, None, None) if get("result") else None
    status = _STATUSES.get(get("status"))  # type: ignore[arg-type]
    if status is None:
        raise Corrupt("status", f"unknown status {get('status')!r}")
    try:
        return Task(
            id=d["id"],
            queue=d["queue"],
            handler=d["handler"],
            params=params,
            priority=int(d["priority"]),
            sequence=int(d["seq"]),
            status=status,
            attempts=int(d.get("attempts") or 0),
            max_retries=int(d["max_retries"]),
            backoff=backoff,
            last_delay=_opt(d, "last_delay"),
            due_at=float(d["due_at"]),
            lease_owner=d.get("lease_owner") or None,
            lease_expires_at=_opt(d, "lease_expires_at"),
            progress=float(d.get("progress") or 0.0),
            checkpoint=checkpoint,
            result=result,
            last_error=None if error_raw is None else TaskError.from_dict(error_raw),
            history=history,
            timeout=_opt(d, "timeout"),
            resources=resources_,
            created_at=float(d["created_at"]),
            updated_at=float(d["updated_at"]),
            started_at=_opt(d, "started_at"),
            finished_at=_opt(d, "finished_at"),
        )
    except KeyError as exc:
        raise Corrupt(str(exc.args[0]), "missing") from None
    except (TypeError, ValueError) as exc:
        raise Corrupt("?", str(exc)) from None
