"""``TaskContext``: what a running handler may ask of its task.

A handler receives one when it declares a parameter annotated ``TaskContext``
or named ``ctx``::

    @queue.task(max_retries=5)
    def copy_file(src: str, dst: str, ctx: TaskContext) -> dict:
        offset = (ctx.checkpoint or {}).get("offset", 0)   # resume where the last attempt stopped
        ...
        ctx.save_checkpoint({"offset": offset, "sha256": digest})
        ctx.progress(100 * offset / size)
        if ctx.canceled:
            return {"stopped_at": offset}

The worker builds the context (``TaskContext(store, task, worker_id)``); it is
a thin object over the store, so ``progress`` and ``save_checkpoint`` are
durable as soon as they return.
"""

from __future__ import annotations

import inspect
import threading
import time
import typing
from collections.abc import Callable
from typing import Any

from resile import _util
from resile.queue._names import TaskStatus
from resile.queue.schedules import parse_tick_id
from resile.queue.store.base import Store
from resile.queue.task import JSONValue, Task, check_json

__all__ = ["CONTEXT_PARAMETER_NAME", "TaskContext", "context_parameter"]

CONTEXT_PARAMETER_NAME = "ctx"
# ``canceled`` asks the store at most this often (seconds); handlers may poll it in a loop.
_CANCEL_CHECK_INTERVAL = 0.1


class TaskContext:
    """The running attempt's view of its task.

    Args:
        store: the store holding the task.
        task: the task as leased (its ``attempts`` is this attempt's number).
        worker_id: the worker holding the lease; writes are made under it, so
            a worker that lost its lease cannot overwrite the task.
        cancel_event: set by the worker to flag cancellation (or a lost lease)
            without a store round trip; optional.

    Attributes:
        task: the leased task snapshot.
        worker_id: the lease holder.
    """

    __slots__ = (
        "_cancel_event",
        "_checked_at",
        "_checkpoint",
        "_lost",
        "store",
        "task",
        "worker_id",
    )

    def __init__(
        self,
        store: Store,
        task: Task,
        worker_id: str,
        *,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.task = task
        self.worker_id = worker_id
        self._cancel_event = cancel_event if cancel_event is not None else threading.Event()
        self._checkpoint: JSONValue = task.checkpoint
        self._checked_at = -1e18
        self._lost = False

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.task.id

    @property
    def attempt(self) -> int:
        """This attempt's number, counted from 1 (``2`` is the first retry)."""
        return self.task.attempts

    @property
    def max_attempts(self) -> int:
        """The most attempts the task may get (``max_retries + 1``)."""
        return self.task.max_attempts

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now dead-letters the task."""
        return self.task.attempts >= self.task.max_attempts

    @property
    def params(self) -> dict[str, JSONValue]:
        """The task's params."""
        return self.task.params

    @property
    def scheduled_for(self) -> float | None:
        """A schedule's tick (``@queue.periodic``): its fire time, epoch seconds (the task's
        first ``due_at``; a run by ``resile schedules trigger``: when it was triggered).
        ``None`` for a task that is not a tick."""
        tick = parse_tick_id(self.task.id)
        return None if tick is None else tick[1]

    @property
    def checkpoint(self) -> JSONValue:
        """The last checkpoint saved, by this attempt or an earlier one; ``None`` at first."""
        return self._checkpoint

    def save_checkpoint(self, value: JSONValue) -> bool:
        """Store ``value`` (plain JSON) durably for the next attempt to resume from.

        Returns:
            ``True`` when stored; ``False`` when this worker no longer holds
            the task (canceled or lease lost): stop working.

        Raises:
            ValueError: ``value`` is not plain JSON, naming the path.
        """
        check_json(value, "checkpoint")
        ok = self.store.save_checkpoint(self.task.id, value, worker_id=self.worker_id)
        if ok:
            self._checkpoint = value
        else:
            self._lost = True
        return ok

    def progress(self, pct: float) -> bool:
        """Report progress, 0..100.

        Returns:
            ``True`` when stored; ``False`` when this worker no longer holds the task.

        Raises:
            ValueError: ``pct`` outside ``[0, 100]``.
        """
        ok = self.store.progress(self.task.id, pct, worker_id=self.worker_id)
        if not ok:
            self._lost = True
        return ok

    @property
    def canceled(self) -> bool:
        """True once the task was canceled or this worker lost its lease: wind down and return.

        Reads the worker's flag; at most every 0.1 s it also asks the store.
        """
        if self._lost or self._cancel_event.is_set():
            return True
        # Real time, not resile's clock: this limits store reads per second of a polling
        # handler, and a fake clock (which stands still while a handler runs) would stop them.
        t = time.monotonic()
        if t - self._checked_at >= _CANCEL_CHECK_INTERVAL:
            self._checked_at = t
            current = self.store.get(self.task.id)
            if (
                current is None
                or current.status is not TaskStatus.DOING
                or current.lease_owner != self.worker_id
            ):
                self._lost = True
        return self._lost

    def mark_canceled(self) -> None:
        """For the worker: flag the attempt as canceled (``canceled`` becomes True)."""
        self._cancel_event.set()

    @property
    def cancelled(self) -> bool:
        """Deprecated spelling of ``canceled``; emits ``DeprecationWarning``."""
        _deprecated("cancelled", "canceled")
        return self.canceled

    def mark_cancelled(self) -> None:
        """Deprecated spelling of ``mark_canceled``; emits ``DeprecationWarning``."""
        _deprecated("mark_cancelled", "mark_canceled")
        self.mark_canceled()

    def __repr__(self) -> str:
        return (
            f"TaskContext(task_id={self.task.id!r}, attempt={self.attempt}/{self.max_attempts}, "
            f"worker_id={self.worker_id!r})"
        )


def _deprecated(old: str, new: str) -> None:
    _util.deprecated(
        f"TaskContext.{old} is deprecated; use TaskContext.{new} (one spelling, as the "
        "status CANCELED)"
    )


def context_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s parameter that receives the ``TaskContext``, or ``None``.

    A parameter annotated ``TaskContext`` (also as a string, or
    ``TaskContext | None``) wins; otherwise a parameter named ``ctx``.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = {}
    for name, param in sig.parameters.items():
        ann = hints.get(name, param.annotation)
        if _is_context_annotation(ann):
            return name
    if CONTEXT_PARAMETER_NAME in sig.parameters:
        return CONTEXT_PARAMETER_NAME
    return None


def _is_context_annotation(ann: object) -> bool:
    if ann is TaskContext:
        return True
    if isinstance(ann, str):
        return ann.replace(" ", "") in {
            "TaskContext",
            "resile.TaskContext",
            "TaskContext|None",
            "Optional[TaskContext]",
        }
    return any(a is TaskContext for a in typing.get_args(ann))
