"""Every name the durable queue stores, in one place: states, fields, tables, defaults.

Backends read their state, field and table names from here, so a rename is one
edit and two backends never disagree on a spelling. Queries and scripts get
the states injected (they never spell them); the fields they spell are checked
against ``TaskField`` by the test suite. Redis key shapes live beside the Redis
store (``resile.queue.store.redis._keys``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "ACTIVE_STATUSES",
    "COUNTS_TABLE",
    "DEFAULT_BACKOFF",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "FIELDS",
    "HISTORY_LIMIT",
    "LEASE_EXPIRED_REASON",
    "MAX_ID_LENGTH",
    "MAX_PARAMS_BYTES",
    "META_TABLE",
    "SCHEDULE_PREFIX",
    "SCHEMA_VERSION",
    "TALLIES_TABLE",
    "TALLY_WINDOW",
    "TASKS_TABLE",
    "TERMINAL_STATUSES",
    "TIMING_EDGES",
    "TIMING_SEP",
    "TRACEBACK_LIMIT",
    "Outcome",
    "Tally",
    "TaskField",
    "TaskStatus",
]


class TaskStatus(str, Enum):
    """The state of a stored task.

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


class TaskField(str, Enum):
    """The name of each stored field of a task: a SQLite column, a field of a Redis hash.

    The first group is the ``Task`` record (``seq`` is ``Task.sequence``); the
    second is each backend's own bookkeeping. A ``str`` Enum:
    ``TaskField.STATUS == "status"``.
    """

    ID = "id"
    QUEUE = "queue"
    HANDLER = "handler"
    PARAMS = "params"  # JSON object
    PRIORITY = "priority"
    SEQ = "seq"  # creation order in the store (Task.sequence)
    STATUS = "status"  # a TaskStatus value
    ATTEMPTS = "attempts"
    MAX_RETRIES = "max_retries"
    BACKOFF = "backoff"  # JSON: Backoff.to_dict()
    LAST_DELAY = "last_delay"
    DUE_AT = "due_at"
    LEASE_OWNER = "lease_owner"
    LEASE_EXPIRES_AT = "lease_expires_at"
    PROGRESS = "progress"
    CHECKPOINT = "checkpoint"  # JSON
    RESULT = "result"  # JSON
    LAST_ERROR = "last_error"  # JSON: TaskError.to_dict()
    HISTORY = "history"  # JSON list of AttemptRecord.to_dict()
    TIMEOUT = "timeout"
    RESOURCES = "resources"  # JSON object: name -> number
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    TRACEPARENT = "traceparent"  # W3C trace context of the enqueue (resile.otel)
    # -- SQLite bookkeeping
    READY = "ready"  # 1: PENDING and due (the ready index); 0: delayed or not PENDING
    HAS_RESOURCES = "has_resources"  # 1: needs that not every worker meets
    # -- Redis bookkeeping
    RANK = "rank"  # priority and seq as sortable hex: the member of the ready sets
    GATED = "gated"  # "1": needs that not every worker meets
    HISTORY_LENGTH = "hn"  # entries in ``history`` (the scripts cut it without parsing)
    OP = "op"  # the op id of the last write (a retried call does not write twice)
    CREATE_OP = "cop"  # the op id of the create (a retried create is a replay)

    def __str__(self) -> str:
        return self.value


# Every stored field name (``TaskField`` values).
FIELDS: frozenset[str] = frozenset(f.value for f in TaskField)


class Tally(str, Enum):
    """What the per-minute outcome counters count, per queue (the dashboard's charts)."""

    DONE = "done"  # an attempt succeeded
    RETRIED = "retried"  # an attempt failed (or its lease lapsed) and the task will run again
    DEAD = "dead"  # the task went to FAILED: no retry left, permanent, lost, or corrupt

    def __str__(self) -> str:
        return self.value


# Seconds of per-minute outcome counters a store keeps (older ones are dropped).
TALLY_WINDOW = 48 * 3600.0

# The histograms of run time and retry lateness ride in the same counters: an attempt that
# ends by complete or fail counts under "<tally>:<run bucket>" (a retry attempt, attempts >= 2:
# "<tally>:<run bucket>:<lateness bucket>"), so the counters write no more rows than before.
# Bucket i holds the durations in (TIMING_EDGES[i - 1], TIMING_EDGES[i]] seconds (bucket 0:
# up to 1 ms, negative ones included); bucket len(TIMING_EDGES) the ones above the last edge.
# 1-2-5 in each decade, 1 ms .. 1000 s (the Redis scripts get the same list injected).
TIMING_SEP = ":"
TIMING_EDGES: tuple[float, ...] = (
    0.001, 0.002, 0.005,
    0.01, 0.02, 0.05,
    0.1, 0.2, 0.5,
    1.0, 2.0, 5.0,
    10.0, 20.0, 50.0,
    100.0, 200.0, 500.0,
    1000.0,
)  # fmt: skip

# -- storage names (SQLite tables; the Redis store keeps its key prefixes beside these) -----
TASKS_TABLE = "resile_tasks"
META_TABLE = "resile_meta"
TALLIES_TABLE = "resile_tallies"
# Tasks per (queue, status), kept by triggers in the transaction of every change (SQL stores).
COUNTS_TABLE = "resile_counts"
SCHEMA_VERSION = 1
# Schedule records are rows of the meta table (SQL) / fields of one hash (Redis), keyed
# SCHEDULE_PREFIX + name, beside the paused queues and the worker registry.
SCHEDULE_PREFIX = "schedule:"

# -- defaults ---------------------------------------------------------------------------------
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
# 3 retries after the first attempt, 4 attempts in all.
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
# A task's params, as compact JSON, carry at most this many bytes (every backend; within
# MySQL's default max_allowed_packet). Large data belongs elsewhere, named in the params.
MAX_PARAMS_BYTES = 8 << 20
# Only the most recent attempts are kept in ``Task.history``.
HISTORY_LIMIT = 100
# A stored traceback is cut to its last this-many characters.
TRACEBACK_LIMIT = 20_000
