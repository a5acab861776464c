"""The durable task queue: tasks, stores, the user API.

``resile.connect(url)`` is the way in; see ``docs/queue.md``.
"""

from __future__ import annotations

import warnings
from typing import Any

from resile.queue._names import Outcome, TaskStatus
from resile.queue.api import Queue, TaskFunction, connect
from resile.queue.context import TaskContext
from resile.queue.store import Store, open_store, register_store
from resile.queue.task import AttemptRecord, Task, TaskError, TaskSpec

__all__ = [
    "AttemptRecord",
    "Outcome",
    "Queue",
    "Store",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskFunction",
    "TaskSpec",
    "TaskStatus",
    "connect",
    "open_store",
    "register_store",
]


def __getattr__(name: str) -> Any:
    """``Attempt``, the old name of ``AttemptRecord``, with a ``DeprecationWarning``."""
    if name == "Attempt":
        warnings.warn(
            f"{__name__}.Attempt is deprecated; use {__name__}.AttemptRecord (the same class)",
            DeprecationWarning,
            stacklevel=2,
        )
        return AttemptRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
