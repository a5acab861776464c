"""Every Redis key, channel and default of the Redis task store, in one place.

A store lives under one *root*, ``resile:{<namespace>}``: the braces are a
Redis Cluster hash tag, so every key of a store hashes to the same slot and
each Lua script touches one slot only (what Cluster requires of a script).
The namespace defaults to ``main``; stores with different namespaces share
nothing and may live on different cluster nodes.

Keys under the root (``<q>`` is a queue name, always the last part, so a
queue name may contain ``:``); each shape is one template below (``SHAPES``),
which Python formats and the Lua scripts get as functions (``_scripts``)::

    <root>:seq              string  the store's sequence counter (INCRBY)
    <root>:queues           hash    queue -> number of stored tasks
    <root>:paused           hash    paused queue -> when it was paused (lease skips it)
    <root>:workers          hash    worker id -> its registry record (JSON)
    <root>:schedules        hash    schedule name -> its record (JSON; changed by
                                    compare-and-set in the schedule_swap script)
    <root>:tl:<hour>:<q>    hash    per-minute outcome counters of one hour (epoch hours):
                                    field "<minute>/<tally>" -> count; expires after
                                    TALLY_WINDOW and an hour
    <root>:tm:<hour>:<q>    hash    run time / lateness buckets of one hour, per minute:
                                    field "<minute>/<tally>:<run>[:<late>]" -> count
    <root>:th:<day>:<q>     hash    the same buckets of one day (epoch days), per hour:
                                    field "<hour>/<tally>:<run>[:<late>]" (a day of
                                    ``timings`` reads whole hours here, not 1,440 minutes)
    <root>:t:<id>           hash    one task (fields: ``TASK_FIELDS``, from TaskField)
    <root>:lop:<worker>     string  the last lease of a worker (a retried lease
                                    returns the same tasks), expires with the lease
    <root>:del:<op>         string  the id a delete call removed (a retried delete
                                    answers yes again), expires after a minute
    <root>:ready:<q>        zset    due tasks without resource needs; score 0,
                                    member rank + id: lexicographic order is
                                    (priority, sequence)
    <root>:gready:<q>       zset    the same for tasks with resource needs ("gated")
    <root>:delayed:<q>      zset    tasks not due yet, score due_at, member id
    <root>:gdelayed:<q>     zset    the same for gated tasks
    <root>:due:<q>          zset    every PENDING task (ready or delayed, gated or not),
                                    score due_at, member id: oldest_due_at's first entry
    <root>:leases:<q>       zset    DOING tasks, score lease_expires_at, member id
    <root>:s:<STATUS>:<q>   zset    PENDING, DONE, FAILED or CANCELED tasks, score
                                    sequence (list, stats); the DOING ones are
                                    the members of leases:<q>
    <root>:f:<STATUS>:<q>   zset    DONE / FAILED / CANCELED tasks, score
                                    finished_at (purge, retention sweep)

Channel::

    <root>:wake:<q>         pub/sub: "work on <q> may be due" (see docs/redis.md)
"""

from __future__ import annotations

from resile.queue._names import TaskField, TaskStatus

__all__ = [
    "DEFAULT_FAILED_RETENTION",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RETENTION",
    "DEFAULT_RETRY_FOR",
    "GATED_SCAN_LIMIT",
    "INDEXES",
    "KEY_PREFIX",
    "LEASES",
    "MIGRATE_LIMIT",
    "PURGE_BATCH",
    "RANK_WIDTH",
    "RECLAIM_BATCH",
    "SHAPES",
    "SWEEP_ON_FINISH",
    "SWEEP_ON_READ",
    "TALLY_FIELD",
    "TASK_FIELDS",
    "channel",
    "paused_key",
    "queue_key",
    "queues_key",
    "root",
    "schedules_key",
    "seq_key",
    "status_key",
    "tally_key",
    "task_key",
    "timing_hours_key",
    "timing_key",
    "workers_key",
]

KEY_PREFIX = "resile"
DEFAULT_NAMESPACE = "main"

# -- retention and reconnects -------------------------------------------------------------------
# DONE and CANCELED tasks are deleted this long after they finished (a week); ``None`` keeps them.
DEFAULT_RETENTION: float | None = 7 * 24 * 3600.0
# Dead letters (FAILED) are kept until purged or requeued: someone should look at them.
DEFAULT_FAILED_RETENTION: float | None = None
# How long a call keeps reconnecting (resile backoff) before it raises the connection error.
DEFAULT_RETRY_FOR = 30.0

# -- bounds of the work one script does (none is O(number of tasks)) ----------------------------
# Delayed tasks moved to ready per queue and lease; the rest move on the next lease.
MIGRATE_LIMIT = 10_000
# Expired leases reclaimed per queue and lease.
RECLAIM_BATCH = 100
# Gated (resource-needing) due tasks a lease looks through for ones the worker can take.
GATED_SCAN_LIMIT = 1_000
# Finished tasks past their retention that a finishing write deletes from the indexes.
SWEEP_ON_FINISH = 4
# ... and that ``stats`` / ``list`` delete per queue and status before they count.
SWEEP_ON_READ = 1_000
# Tasks ``purge`` deletes per script call.
PURGE_BATCH = 1_000
# Hex digits of each half of a ready-set rank: 16 for priority + 2**63, 16 for the sequence.
RANK_WIDTH = 16

# The fields of a task hash: every TaskField but SQLite's bookkeeping. Absent fields are
# "not set" (None, or the default). The scripts name a field only through this list.
TASK_FIELDS = tuple(
    f.value for f in TaskField if f not in (TaskField.READY, TaskField.HAS_RESOURCES)
)

# The per-queue indexes (``SHAPES["index"]``'s ``index``); the status and finished
# indexes are ``SHAPES["status"]`` and ``SHAPES["finished"]``.
LEASES = "leases"  # the DOING tasks, by lease expiry
DUE = "due"  # every PENDING task, by due time (oldest_due_at)
INDEXES = ("ready", "gready", "delayed", "gdelayed", DUE, LEASES)

# Every key shape: name -> template. ``{root}`` is the store's root; the Lua scripts get
# each as a function of the other fields (``task(id)``, ``index(index, queue)`` ...).
SHAPES = {
    "seq": "{root}:seq",
    "queues": "{root}:queues",
    "paused": "{root}:paused",
    "workers": "{root}:workers",
    "schedules": "{root}:schedules",
    "tally": "{root}:tl:{hour}:{queue}",
    "timing": "{root}:tm:{hour}:{queue}",
    "timing_hours": "{root}:th:{day}:{queue}",
    "task": "{root}:t:{id}",
    "last_lease": "{root}:lop:{worker}",
    "deleted": "{root}:del:{op}",
    "index": "{root}:{index}:{queue}",
    "status": "{root}:s:{status}:{queue}",
    "finished": "{root}:f:{status}:{queue}",
    "channel": "{root}:wake:{queue}",
}


def root(namespace: str) -> str:
    """``resile:{<namespace>}``: the prefix (and hash tag) of every key of a store."""
    return f"{KEY_PREFIX}:{{{namespace}}}"


def task_key(root_: str, task_id: str) -> str:
    """The hash of one task."""
    return SHAPES["task"].format(root=root_, id=task_id)


def queue_key(root_: str, name: str, queue: str) -> str:
    """A per-queue index: ``name`` is one of ``INDEXES``."""
    return SHAPES["index"].format(root=root_, index=name, queue=queue)


def status_key(root_: str, status: TaskStatus | str, queue: str) -> str:
    """The zset of a queue's tasks in ``status``, scored by sequence."""
    return SHAPES["status"].format(root=root_, status=TaskStatus(status).value, queue=queue)


def channel(root_: str, queue: str) -> str:
    """The pub/sub channel a queue's wake-ups go to."""
    return SHAPES["channel"].format(root=root_, queue=queue)


def queues_key(root_: str) -> str:
    """The hash of stored task counts per queue."""
    return SHAPES["queues"].format(root=root_)


def paused_key(root_: str) -> str:
    """The hash of paused queues (queue -> epoch seconds it was paused)."""
    return SHAPES["paused"].format(root=root_)


# The field of a counter in a tally hash: minute (epoch seconds // 60), "/", the Tally.
TALLY_FIELD = "{minute}/{tally}"


def tally_key(root_: str, hour: int, queue: str) -> str:
    """The counters of ``queue`` for one hour (``epoch seconds // 3600``)."""
    return SHAPES["tally"].format(root=root_, hour=hour, queue=queue)


def timing_key(root_: str, hour: int, queue: str) -> str:
    """The run time / lateness buckets of ``queue`` for one hour, per minute."""
    return SHAPES["timing"].format(root=root_, hour=hour, queue=queue)


def timing_hours_key(root_: str, day: int, queue: str) -> str:
    """The run time / lateness buckets of ``queue`` for one day (``epoch seconds // 86400``),
    per hour."""
    return SHAPES["timing_hours"].format(root=root_, day=day, queue=queue)


def workers_key(root_: str) -> str:
    """The hash of the worker registry (worker id -> record JSON)."""
    return SHAPES["workers"].format(root=root_)


def schedules_key(root_: str) -> str:
    """The hash of schedule records (name -> record JSON)."""
    return SHAPES["schedules"].format(root=root_)


def seq_key(root_: str) -> str:
    """The store's sequence counter; also every script's one key (its hash tag routes it)."""
    return SHAPES["seq"].format(root=root_)
