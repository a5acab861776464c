"""The durable task queue: tasks, stores, the user API.

``resile.connect(url)`` is the way in; see ``docs/queue.md``.
"""

from __future__ import annotations

from resile import _util
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


# ``Attempt``, the old name of ``AttemptRecord``, still works with a ``DeprecationWarning``.
__getattr__ = _util.renamed(__name__, {"Attempt": ("AttemptRecord", AttemptRecord)})
