"""Every name the durable queue stores, in one place: states, tables, defaults.

Backends read their table / key names from here, so a rename is one edit and
two backends never disagree on a state's spelling.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_BACKOFF",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "HISTORY_LIMIT",
    "LEASE_EXPIRED_REASON",
    "MAX_ID_LENGTH",
    "META_TABLE",
    "SCHEMA_VERSION",
    "TASKS_TABLE",
    "TERMINAL_STATUSES",
    "TRACEBACK_LIMIT",
    "Outcome",
    "TaskStatus",
]


class TaskStatus(str, Enum):
    """The state of a stored task; the values are the seed framework's names.

    ``PENDING`` waits for its due time; ``DOING`` is leased by a worker;
    ``DONE``, ``FAILED`` (dead letter) and ``CANCELED`` are terminal.
    A ``str`` Enum: ``TaskStatus.DONE == "DONE"``.
    """

    PENDING = "PENDING"
    DOING = "DOING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        """True for ``DONE``, ``FAILED`` and ``CANCELED``: no transition leaves them but requeue."""
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED}
)
ACTIVE_STATUSES: frozenset[TaskStatus] = frozenset({TaskStatus.PENDING, TaskStatus.DOING})


class Outcome(str, Enum):
    """How one attempt ended, as recorded in ``Task.history``."""

    OK = "ok"  # the handler returned; the task is DONE
    ERROR = "error"  # the handler raised
    TIMEOUT = "timeout"  # the attempt overran the task's exec timeout
    LOST = "lost"  # the lease expired: the worker died or hung
    CANCELED = "canceled"  # the task was canceled while the attempt ran

    def __str__(self) -> str:
        return self.value


# -- storage names (SQLite tables; the Redis store keeps its key prefixes beside these) -----
TASKS_TABLE = "resile_tasks"
META_TABLE = "resile_meta"
SCHEMA_VERSION = 1

# -- defaults ---------------------------------------------------------------------------------
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
# The seed's ``max_retry_count`` default: 3 retries after the first attempt, 4 attempts in all.
DEFAULT_MAX_RETRIES = 3
# ``resile.Exponential(1.0, max_delay=60.0).to_dict()``, spelled out so that importing
# this module does not build a strategy.
DEFAULT_BACKOFF: dict[str, Any] = {
    "type": "exponential",
    "initial": 1.0,
    "multiplier": 2.0,
    "max_delay": 60.0,
    "jitter": "full",
}
# A dead worker's tasks come back within this many seconds; workers renew at a fraction of it.
DEFAULT_LEASE_SECONDS = 20.0
LEASE_EXPIRED_REASON = "lease expired (worker lost)"

# -- limits -----------------------------------------------------------------------------------
MAX_ID_LENGTH = 255
# Only the most recent attempts are kept in ``Task.history``.
HISTORY_LIMIT = 100
# A stored traceback is cut to its last this-many characters.
TRACEBACK_LIMIT = 20_000
