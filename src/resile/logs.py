"""Structured logs: one record per task transition on the ``"resile"`` logger.

``install()`` adds a hook (``resile.instrument``) that logs each transition of
a stored task (created, leased, an attempt finished: done, retrying, dead or
canceled; a lease expired or lost) with the same fields everywhere, set as
attributes of the ``logging.LogRecord``:

``transition`` (the ``Kind`` value), ``task_id``, ``queue``, ``task``, ``attempt``,
``worker_id``, ``outcome``, ``delay``, ``error_type``, and ``trace_id`` when
the task carries a trace context.

``JsonFormatter`` writes a record as one JSON object per line (for ELK, Loki
and friends); ``configure(format="json")`` attaches it to the ``"resile"``
logger. structlog users need nothing from here beyond ``install()``: the fields
are plain record attributes, which structlog's stdlib integration
(``ProcessorFormatter`` with ``ExtraAdder`` in its ``foreign_pre_chain``)
turns into keys. Standard library only.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any, Literal

from resile import instrument
from resile.instrument import AttemptOutcome, Kind, TaskEvent

__all__ = ["FIELDS", "JsonFormatter", "LogHook", "configure", "install", "trace_id"]

FIELDS = (
    "transition",
    "task_id",
    "queue",
    "task",
    "attempt",
    "worker_id",
    "outcome",
    "delay",
    "error_type",
    "trace_id",
)

_PHRASES = {
    Kind.TASK_CREATED: "created",
    Kind.TASK_LEASED: "leased",
    Kind.ATTEMPT_FINISHED: "attempt finished",
    Kind.LEASE_EXPIRED: "lease expired, reclaimed",
    Kind.LEASE_LOST: "lease lost by its worker",
    Kind.TASK_CANCELED: "canceled",
}
_WARN_OUTCOMES = frozenset({AttemptOutcome.DEAD, AttemptOutcome.EXPIRED})


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C ``traceparent``, or ``None`` when there is none."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]


class LogHook:
    """The hook ``install()`` adds: logs each transition event on ``logger``.

    Levels: ``WARNING`` for an attempt that ends dead or whose lease expired,
    ``INFO`` otherwise.
    """

    kinds = frozenset(_PHRASES)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("resile")

    def __call__(self, event: TaskEvent) -> None:
        bad = event.outcome in _WARN_OUTCOMES or event.kind is Kind.LEASE_EXPIRED
        level = logging.WARNING if bad else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "transition": event.kind.value,
            "task_id": event.task_id,
            "queue": event.queue,
            "task": event.task,
            "attempt": event.attempt,
            "worker_id": event.worker_id,
            "outcome": None if event.outcome is None else event.outcome.value,
            "delay": event.delay,
            "error_type": event.error_type,
            "trace_id": trace_id(event.traceparent),
        }
        self.logger.log(level, "%s", _message(event), extra=fields)

    def __repr__(self) -> str:
        return f"LogHook(logger={self.logger.name!r})"


def _message(event: TaskEvent) -> str:
    text = f"task {event.task} [{event.task_id}] on {event.queue}: {_PHRASES[event.kind]}"
    if event.attempt:
        text += f" (attempt {event.attempt})"
    if event.outcome is not None:
        text += f": {event.outcome.value}"
    if event.error_type:
        text += f" after {event.error_type}"
    if event.delay is not None and event.outcome in (AttemptOutcome.RETRYING, None):
        text += f", next attempt in {event.delay:.3f} s"
    return text


def install(logger: logging.Logger | None = None) -> LogHook:
    """Log every task transition on ``logger`` (default: ``"resile"``) from now on.

    Returns:
        the hook; ``resile.instrument.uninstall(hook)`` stops it.
    """
    hook = LogHook(logger)
    instrument.install(hook)
    return hook


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    the transition fields present on the record (``trace_id`` only when there is one),
    and ``exception`` (the formatted traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                value = getattr(record, name)
                if name == "trace_id" and value is None:
                    continue
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


LogFormat = Literal["text", "json"]


def configure(
    format: LogFormat = "text",
    *,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Write the ``"resile"`` logger's records to ``stream`` (default: stderr), as text or JSON.

    What the ``resile worker --log-format`` option does. The handler is added
    to the ``"resile"`` logger, whose level becomes ``level``.

    Returns:
        the handler (remove it with ``logging.getLogger("resile").removeHandler``).

    Raises:
        ValueError: ``format`` is neither ``"text"`` nor ``"json"``.
    """
    if format not in ("text", "json"):
        raise ValueError(f"logs.configure: format must be 'text' or 'json', got {format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("resile")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
