"""Every SQL statement of the SQLite store, named, in one place, with named parameters.

States are never spelled here: they are injected from ``TaskStatus`` and from
the transition sets of ``resile.queue._transitions`` (which status each
transition may leave), as SQL literals, so the partial indexes (whose
``WHERE status = ...`` the planner matches literally) serve the queries.
Column names are ``TaskField`` values; the test suite checks that every one
spelled here is defined there, and that no state is spelled literally.

Parameters are named (``:name``). A statement over a list of queues or
statuses is a function of the list's length (``queues_in(n)`` names its
parameters ``:q0 ... :q<n-1>``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from resile.queue import _transitions as tr
from resile.queue._names import (
    COUNTS_TABLE,
    META_TABLE,
    SCHEDULE_PREFIX,
    TALLIES_TABLE,
    TASKS_TABLE,
    TIMING_SEP,
    TaskStatus,
)

__all__ = [
    "ADDED_COLUMNS",
    "CANCEL",
    "COMPLETE",
    "COUNTS",
    "COUNTS_INIT",
    "COUNTS_SCHEMA",
    "DEAD_LETTER",
    "DELETE",
    "INSERT",
    "LEASE",
    "MAKE_DUE",
    "META_GET",
    "META_SET",
    "QUEUES",
    "READY_FIRST",
    "READY_NEXT",
    "RELEASE",
    "RENEW",
    "REQUEUE",
    "RETRY",
    "SCHEDULES",
    "SCHEDULE_ADD",
    "SCHEDULE_DROP",
    "SCHEDULE_RANGE",
    "SCHEDULE_SWAP",
    "SCHEMA",
    "SCHEMA_VERSION_KEY",
    "SELECT_BY_ID",
    "SELECT_CHECKPOINT",
    "SELECT_HELD",
    "STATS",
    "STATS_OF_QUEUE",
    "add_column",
    "counts_exists",
    "flip_due",
    "in_list",
    "list_by_time",
    "list_tasks",
    "next_due",
    "purge",
    "queue_params",
    "select_expired",
    "set_field",
    "table_columns",
]

_T = TASKS_TABLE


def _lit(status: TaskStatus) -> str:
    return f"'{status.value}'"


def _set(statuses: Collection[TaskStatus]) -> str:
    return "(" + ", ".join(_lit(s) for s in sorted(statuses, key=lambda s: s.value)) + ")"


_PENDING = _lit(TaskStatus.PENDING)
_DOING = _lit(TaskStatus.DOING)
# The status a holder's call (complete, fail, release, renew) and a reclaim start from.
(_HELD,) = (_lit(s) for s in tr.HELD_FROM)
(_LEASABLE,) = (_lit(s) for s in tr.LEASE_FROM)
_REQUEUEABLE = _set(tr.REQUEUE_FROM)
_EDITABLE = _set(tr.EDIT_FROM)

# -- schema -------------------------------------------------------------------------------------

SCHEMA_VERSION_KEY = "schema_version"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {META_TABLE} (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {_T} (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    queue            TEXT NOT NULL,
    handler          TEXT NOT NULL,
    params           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    status           TEXT NOT NULL,
    ready            INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    backoff          TEXT NOT NULL,
    last_delay       REAL,
    due_at           REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    progress         REAL NOT NULL DEFAULT 0,
    checkpoint       TEXT,
    result           TEXT,
    last_error       TEXT,
    history          TEXT NOT NULL DEFAULT '[]',
    timeout          REAL,
    resources        TEXT NOT NULL DEFAULT '{{}}',
    has_resources    INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    traceparent      TEXT
);
CREATE INDEX IF NOT EXISTS {_T}_ready ON {_T} (queue, priority, seq)
    WHERE status = {_PENDING} AND ready = 1;
CREATE INDEX IF NOT EXISTS {_T}_delayed ON {_T} (queue, due_at)
    WHERE status = {_PENDING} AND ready = 0;
CREATE INDEX IF NOT EXISTS {_T}_ready_due ON {_T} (queue, due_at)
    WHERE status = {_PENDING} AND ready = 1;
CREATE INDEX IF NOT EXISTS {_T}_leased ON {_T} (queue, lease_expires_at)
    WHERE status = {_DOING};
CREATE INDEX IF NOT EXISTS {_T}_gated ON {_T} (queue, due_at)
    WHERE status = {_PENDING} AND has_resources = 1;
CREATE INDEX IF NOT EXISTS {_T}_status ON {_T} (queue, status, seq);
CREATE INDEX IF NOT EXISTS {_T}_finished ON {_T} (status, finished_at);
CREATE TABLE IF NOT EXISTS {TALLIES_TABLE} (
    queue   TEXT NOT NULL,
    minute  INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (queue, minute, outcome)
) WITHOUT ROWID;
"""
META_GET = f"SELECT value FROM {META_TABLE} WHERE key = :key"
# Columns added after schema version 1 shipped: (name, type); a file without one gets it.
ADDED_COLUMNS = (("traceparent", "TEXT"),)


def table_columns() -> str:
    """The statement that lists the task table's column names (``pragma_table_info``)."""
    return f"SELECT name FROM pragma_table_info('{_T}')"


def add_column(name: str, kind: str) -> str:
    """The statement that adds one of ``ADDED_COLUMNS`` to a file made before it."""
    return f"ALTER TABLE {_T} ADD COLUMN {name} {kind}"


META_SET = f"INSERT INTO {META_TABLE} (key, value) VALUES (:key, :value)"

# -- paused queues: rows of the meta table, key PAUSED_PREFIX + queue, value when paused -------

PAUSED_PREFIX = "paused:"
PAUSE = f"INSERT OR IGNORE INTO {META_TABLE} (key, value) VALUES (:key, :value)"
RESUME = f"DELETE FROM {META_TABLE} WHERE key = :key"
# The prefix's range: every key that starts with "paused:" sorts below "paused;".
PAUSED = f"SELECT key, value FROM {META_TABLE} WHERE key >= :lo AND key < :hi ORDER BY key"
PAUSED_RANGE = {"lo": PAUSED_PREFIX, "hi": PAUSED_PREFIX[:-1] + chr(ord(PAUSED_PREFIX[-1]) + 1)}


def paused_of(n: int) -> str:
    """The paused keys among ``n`` (``in_list("k", n)``, bound by ``paused_params``)."""
    return f"SELECT key FROM {META_TABLE} WHERE key IN {in_list('k', n)}"


def paused_params(queues: Iterable[str]) -> dict[str, Any]:
    """The parameters of ``paused_of``: each queue's meta key."""
    return {f"k{i}": PAUSED_PREFIX + q for i, q in enumerate(queues)}


# -- per-minute outcome counters (minute = epoch seconds // 60) --------------------------------

TALLY = (
    f"INSERT INTO {TALLIES_TABLE} (queue, minute, outcome, n) VALUES (:queue, :minute, :outcome, 1)"
    " ON CONFLICT (queue, minute, outcome) DO UPDATE SET n = n + 1"
)
PRUNE_TALLIES = f"DELETE FROM {TALLIES_TABLE} WHERE minute < :cutoff"


# A counter's tally: its name up to the first TIMING_SEP (the buckets summed away in SQL, so
# a day of counters reaches Python as at most three rows a minute). SQLite and MySQL alike.
_SEP = f"'{TIMING_SEP}'"
_TALLY_OF = (
    f"CASE WHEN INSTR(outcome, {_SEP}) > 0"
    f" THEN SUBSTR(outcome, 1, INSTR(outcome, {_SEP}) - 1) ELSE outcome END"
)


# The queues that have counters, found by a skip scan of the primary key (queue, minute,
# outcome): one index probe per queue, so a range of minutes over every queue reads that
# range of each queue instead of the whole table (a day of busy counters: 74 ms -> a few).
_COUNTED = f"{TALLIES_TABLE}_queues"
_COUNTED_QUEUES = (
    f"WITH RECURSIVE {_COUNTED}(queue) AS (SELECT MIN(queue) FROM {TALLIES_TABLE}"
    f" UNION ALL SELECT (SELECT MIN(queue) FROM {TALLIES_TABLE} WHERE queue > {_COUNTED}.queue)"
    f" FROM {_COUNTED} WHERE queue IS NOT NULL) "
)


def _in_range(queue: bool) -> tuple[str, str]:
    """The ``WITH`` prefix and the ``WHERE`` of a range of minutes of one queue or all."""
    if queue:
        return "", "queue = :queue AND minute >= :lo AND minute <= :hi"
    return _COUNTED_QUEUES, (
        f"queue IN (SELECT queue FROM {_COUNTED} WHERE queue IS NOT NULL)"
        " AND minute >= :lo AND minute <= :hi"
    )


def tallies(*, queue: bool) -> str:
    """The counts per minute and tally in ``[:lo, :hi]``, of one queue (``:queue``) or all."""
    with_, where = _in_range(queue)
    return (
        f"{with_}SELECT minute, {_TALLY_OF} AS tally, SUM(n) FROM {TALLIES_TABLE} WHERE {where}"
        " GROUP BY minute, tally ORDER BY minute"
    )


def timing_counters(*, queue: bool) -> str:
    """The counters per queue and name in ``[:lo, :hi]`` (``Store.timings``' histograms)."""
    with_, where = _in_range(queue)
    return (
        f"{with_}SELECT queue, outcome, SUM(n) FROM {TALLIES_TABLE} WHERE {where}"
        " GROUP BY queue, outcome"
    )


# -- schedules: rows of the meta table, key SCHEDULE_PREFIX + name, value the record's JSON ------
# Every change is a compare-and-set on the whole stored text (``:old``).

SCHEDULE_RANGE = {
    "lo": SCHEDULE_PREFIX,
    "hi": SCHEDULE_PREFIX[:-1] + chr(ord(SCHEDULE_PREFIX[-1]) + 1),
}
SCHEDULES = f"SELECT value FROM {META_TABLE} WHERE key >= :lo AND key < :hi ORDER BY key"
SCHEDULE_ADD = f"INSERT OR IGNORE INTO {META_TABLE} (key, value) VALUES (:key, :new)"
SCHEDULE_SWAP = f"UPDATE {META_TABLE} SET value = :new WHERE key = :key AND value = :old"
SCHEDULE_DROP = f"DELETE FROM {META_TABLE} WHERE key = :key AND value = :old"

# -- the worker registry: rows of the meta table, key WORKER_PREFIX + id, value its JSON ---------

WORKER_PREFIX = "worker:"
WORKER_RANGE = {"lo": WORKER_PREFIX, "hi": WORKER_PREFIX[:-1] + chr(ord(WORKER_PREFIX[-1]) + 1)}
RECORD_WORKER = f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (:key, :value)"
REMOVE_WORKER = f"DELETE FROM {META_TABLE} WHERE key = :key"
WORKERS = f"SELECT value FROM {META_TABLE} WHERE key >= :lo AND key < :hi ORDER BY key"
PRUNE_WORKERS = (
    f"DELETE FROM {META_TABLE} WHERE key >= :lo AND key < :hi"
    " AND JSON_EXTRACT(value, '$.expires_at') < :cutoff"
)


# -- lists of queues and statuses ---------------------------------------------------------------


def in_list(prefix: str, n: int) -> str:
    """``(:<prefix>0, ..., :<prefix><n-1>)``, the parameters of an ``IN`` list."""
    return "(" + ", ".join(f":{prefix}{i}" for i in range(n)) + ")"


def queue_params(queues: Iterable[str], prefix: str = "q") -> dict[str, Any]:
    """The parameters ``in_list(prefix, n)`` names, bound to ``queues``."""
    return {f"{prefix}{i}": q for i, q in enumerate(queues)}


# -- producers ----------------------------------------------------------------------------------

INSERT = (
    f"INSERT INTO {_T} (id, queue, handler, params, priority, status, ready, attempts,"
    " max_retries, backoff, due_at, resources, has_resources, timeout, created_at, updated_at,"
    " traceparent)"
    " VALUES (:id, :queue, :handler, :params, :priority, :status, :ready, :attempts,"
    " :max_retries, :backoff, :due_at, :resources, :has_resources, :timeout, :created_at,"
    " :updated_at, :traceparent)"
)

# -- reads --------------------------------------------------------------------------------------

SELECT_BY_ID = f"SELECT * FROM {_T} WHERE id = :id"
SELECT_CHECKPOINT = f"SELECT checkpoint FROM {_T} WHERE id = :id"
# The task when ``:worker`` holds its lease.
SELECT_HELD = f"SELECT * FROM {_T} WHERE id = :id AND status = {_HELD} AND lease_owner = :worker"
# An operator's actions on one task: delete it (not while it runs), make a waiting one due now.
DELETE = f"DELETE FROM {_T} WHERE id = :id AND status != {_DOING}"
MAKE_DUE = (
    f"UPDATE {_T} SET due_at = :now, ready = 1, updated_at = :now"
    f" WHERE id = :id AND status = {_PENDING} AND due_at > :now"
)

# -- counts per (queue, status), kept by triggers --------------------------------------------
# Every insert, delete and change of status of a task adjusts its (queue, status) row in the
# same transaction, whatever statement did it: no transition can forget to count. Reads sum
# the rows (the MySQL table has a shard column per connection; SQLite has one row each).


def counts_exists() -> str:
    """The statement that finds the counts table (no row: a file made before it)."""
    return f"SELECT 1 FROM pragma_table_info('{COUNTS_TABLE}')"


_ADD = (
    f"INSERT INTO {COUNTS_TABLE} (queue, status, n) VALUES (NEW.queue, NEW.status, 1)"
    " ON CONFLICT (queue, status) DO UPDATE SET n = n + 1;"
)
_SUB = f"UPDATE {COUNTS_TABLE} SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status;"
COUNTS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (queue TEXT NOT NULL, status TEXT NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (queue, status)) WITHOUT ROWID",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_insert AFTER INSERT ON {_T} BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_delete AFTER DELETE ON {_T} BEGIN {_SUB} END",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_update AFTER UPDATE OF status, queue ON {_T}"
    " WHEN OLD.status IS NOT NEW.status OR OLD.queue IS NOT NEW.queue"
    f" BEGIN {_SUB} {_ADD} END",
)
# A database made before the counts existed: counted once, in the transaction that adds them.
COUNTS_INIT = (
    f"INSERT INTO {COUNTS_TABLE} (queue, status, n)"
    f" SELECT queue, status, COUNT(*) FROM {_T} GROUP BY queue, status"
)
COUNTS = (
    f"SELECT queue, status, SUM(n) AS n FROM {COUNTS_TABLE}"
    " GROUP BY queue, status HAVING SUM(n) > 0 ORDER BY queue"
)
STATS = f"SELECT status, SUM(n) FROM {COUNTS_TABLE} GROUP BY status"
STATS_OF_QUEUE = f"SELECT status, SUM(n) FROM {COUNTS_TABLE} WHERE queue = :queue GROUP BY status"
QUEUES = f"SELECT queue FROM {COUNTS_TABLE} GROUP BY queue HAVING SUM(n) > 0 ORDER BY queue"


# ``Store.list``'s orders -> the column each sorts by (ties by ``seq``).
LIST_COLUMNS = {"created": "seq", "due": "due_at", "updated": "updated_at"}


def list_tasks(
    *,
    queue: bool,
    statuses: int | None,
    after: bool,
    order: str = "created",
    descending: bool = False,
) -> str:
    """``list``: by queue, by ``statuses`` of them (``:s0`` ...; ``None``: any), sorted by
    ``order``'s column then ``seq``, after a cursor (``:after``, and ``:after_key`` for a
    keyed order); paged (``:limit``, ``:offset``)."""
    column = LIST_COLUMNS[order]
    cmp, direction = ("<", " DESC") if descending else (">", "")
    where: list[str] = []
    if queue:
        where.append("queue = :queue")
    if statuses is not None:
        where.append(f"status IN {in_list('s', statuses)}")
    if after and column == "seq":
        where.append(f"seq {cmp} :after")
    elif after:
        where.append(f"({column} {cmp} :after_key OR ({column} = :after_key AND seq {cmp} :after))")
    sql = f"SELECT * FROM {_T}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    by = f"seq{direction}" if column == "seq" else f"{column}{direction}, seq{direction}"
    return sql + f" ORDER BY {by} LIMIT :limit OFFSET :offset"


def list_by_time(
    order: str,
    descending: bool,
    *,
    queue: bool,
    statuses: Collection[TaskStatus] | None,
    after: bool,
) -> str:
    """``list`` sorted by due or updated time: a ``UNION ALL`` branch per status, each with its
    own ``ORDER BY`` and ``LIMIT`` (a page), then the outer sort of at most a page a branch.

    A branch an index serves in its order reads a page's worth of rows instead of every
    match: PENDING by due time, with a queue, the two partial due-time indexes (delayed and
    ready); finished ones by updated time the ``(status, finished_at)`` index, whose
    implicit last column is ``seq`` (a finished row's ``updated_at`` is its
    ``finished_at``: the finishing step writes both from one clock reading, and nothing
    writes a finished row but requeue, which makes it PENDING). Other branches sort their
    matches. Parameters as ``list_tasks``: ``:queue``, ``:after``, ``:after_key``,
    ``:limit``, ``:offset``, and ``:window`` (``limit + offset``).
    """
    cmp, direction = ("<", " DESC") if descending else (">", "")
    chosen = TaskStatus if statuses is None else sorted(set(statuses), key=lambda s: s.value)
    branches: list[str] = []
    shapes: list[tuple[str | None, str | None]]  # (index, extra condition) per branch
    for status in chosen:
        if order == "due" and status is TaskStatus.PENDING:
            shapes = [(f"{_T}_delayed", "ready = 0"), (f"{_T}_ready_due", "ready = 1")]
            column = "due_at"
        elif order == "updated" and status.terminal:
            shapes, column = [(f"{_T}_finished", None)], "finished_at"
        else:
            shapes, column = [(None, None)], LIST_COLUMNS[order]
        for index, extra in shapes:
            where = [f"status = {_lit(status)}"]
            if extra:
                where.append(extra)
            if queue:
                where.append("queue = :queue")
            elif index is not None and index != f"{_T}_finished":
                index = None  # the due-time indexes lead with the queue
            if after:
                where.append(
                    f"{column} {cmp}= :after_key AND ({column} {cmp} :after_key OR seq {cmp} :after)"
                )
            hint = f" INDEXED BY {index}" if index else ""
            branches.append(
                f"SELECT * FROM (SELECT *, {column} AS list_key FROM {_T}{hint}"
                f" WHERE {' AND '.join(where)}"
                f" ORDER BY {column}{direction}, seq{direction} LIMIT :window) AS b{len(branches)}"
            )
    return (
        " UNION ALL ".join(branches)
        + f" ORDER BY list_key{direction}, seq{direction} LIMIT :limit OFFSET :offset"
    )


# -- lease --------------------------------------------------------------------------------------


def select_expired(n_queues: int) -> str:
    """Leases of the queues (``:q0`` ...) that expired before ``:now``."""
    return (
        f"SELECT * FROM {_T} WHERE status = {_HELD} AND queue IN {in_list('q', n_queues)}"
        " AND lease_expires_at < :now"
    )


def flip_due(n_queues: int) -> str:
    """Delayed tasks of the queues (``:q0`` ...) that are due at ``:now`` become ready."""
    return (
        f"UPDATE {_T} SET ready = 1 WHERE status = {_LEASABLE} AND ready = 0"
        f" AND queue IN {in_list('q', n_queues)} AND due_at <= :now"
    )


# Ready, due tasks of one queue in (priority, seq) order: the first chunk, then the next ones.
READY_FIRST = (
    f"SELECT * FROM {_T} WHERE status = {_LEASABLE} AND ready = 1 AND queue = :queue"
    " AND due_at <= :now ORDER BY priority, seq LIMIT :chunk"
)
READY_NEXT = (
    f"SELECT * FROM {_T} WHERE status = {_LEASABLE} AND ready = 1 AND queue = :queue"
    " AND (priority, seq) > (:priority, :seq) AND due_at <= :now ORDER BY priority, seq"
    " LIMIT :chunk"
)
LEASE = (
    f"UPDATE {_T} SET status = :status, ready = 0, attempts = :attempts, lease_owner = :worker,"
    " lease_expires_at = :lease_expires_at, started_at = :started_at, updated_at = :now"
    " WHERE seq = :seq"
)
RENEW = (
    f"UPDATE {_T} SET lease_expires_at = :lease_expires_at, updated_at = :now"
    f" WHERE id = :id AND status = {_HELD} AND lease_owner = :worker"
)

# -- transitions of a task read in the same transaction (by ``seq``) ----------------------------

COMPLETE = (
    f"UPDATE {_T} SET status = :status, ready = 0, result = :result, progress = :progress,"
    " history = COALESCE(:history, history), lease_expires_at = NULL,"
    " finished_at = :finished_at, updated_at = :now WHERE seq = :seq"
)
# A failed attempt, retried: PENDING again, due at :due_at (ready when already due).
RETRY = (
    f"UPDATE {_T} SET status = :status, ready = :ready, history = COALESCE(:history, history),"
    " last_error = :last_error, last_delay = :last_delay, due_at = :due_at,"
    " lease_expires_at = NULL, updated_at = :now WHERE seq = :seq"
)
# A failed attempt, or a task that cannot be used, dead-lettered (history kept when unreadable).
DEAD_LETTER = (
    f"UPDATE {_T} SET status = :status, ready = 0, history = COALESCE(:history, history),"
    " last_error = :last_error, lease_expires_at = NULL, finished_at = :now, updated_at = :now"
    " WHERE seq = :seq"
)
RELEASE = (
    f"UPDATE {_T} SET status = :status, ready = 1, due_at = :due_at, attempts = :attempts,"
    " lease_expires_at = NULL, updated_at = :now WHERE seq = :seq"
)
CANCEL = (
    f"UPDATE {_T} SET status = :status, ready = 0, history = COALESCE(:history, history),"
    " lease_expires_at = NULL, finished_at = :finished_at, updated_at = :now WHERE seq = :seq"
)

# -- anyone -------------------------------------------------------------------------------------

REQUEUE = (
    f"UPDATE {_T} SET status = :status, ready = :ready, attempts = :attempts,"
    " last_delay = :last_delay, due_at = :due_at, lease_expires_at = NULL, finished_at = NULL,"
    f" updated_at = :now WHERE id = :id AND status IN {_REQUEUEABLE}"
)

# The columns a producer or the holder may set on a live task.
_SETTABLE = ("progress", "checkpoint")


def set_field(column: str, *, holder: bool) -> str:
    """Set ``column`` (``progress`` or ``checkpoint``) to ``:value``: of a live task
    (``EDIT_FROM``), or with ``holder`` only while ``:worker`` holds it."""
    if column not in _SETTABLE:
        raise ValueError(f"set_field: column must be one of {_SETTABLE}, got {column!r}")
    if holder:
        return (
            f"UPDATE {_T} SET {column} = :value, updated_at = :now"
            f" WHERE id = :id AND status = {_HELD} AND lease_owner = :worker"
        )
    return (
        f"UPDATE {_T} SET {column} = :value, updated_at = :now"
        f" WHERE id = :id AND status IN {_EDITABLE}"
    )


def purge(*, statuses: int, queue: bool) -> str:
    """Delete tasks in ``statuses`` of them (``:s0`` ...) finished at or before ``:cutoff``."""
    sql = f"DELETE FROM {_T} WHERE status IN {in_list('s', statuses)} AND finished_at <= :cutoff"
    return sql + " AND queue = :queue" if queue else sql


# The earliest due time of a queue's PENDING tasks: the earlier of the first entries of the
# ready rows' and of the delayed rows' due-time indexes (two index lookups; on MySQL its
# delayed key serves both).
OLDEST_DUE = tuple(
    f"SELECT MIN(due_at) FROM {_T} INDEXED BY {_T}_{index}"
    f" WHERE status = {_PENDING} AND ready = {ready} AND queue = :queue"
    for index, ready in (("ready_due", 1), ("delayed", 0))
)


def next_due(n_queues: int, *, gated: bool) -> tuple[str, str, str, str]:
    """``next_due_at``'s four reads over the queues ``:q0`` ...

    The earliest lease expiry; the earliest delayed due time; the due time of any
    ready task of ``:queue`` (ready rows were due when flipped, so the ready
    index's first entry is enough, O(1)); and, with ``gated`` (a capacity to
    check), the due times and needs of the tasks with needs. With ``gated``,
    the first three leave out tasks with needs.
    """
    marks = in_list("q", n_queues)
    skip_gated = " AND has_resources = 0" if gated else ""
    return (
        f"SELECT MIN(lease_expires_at) FROM {_T} WHERE status = {_HELD} AND queue IN {marks}",
        f"SELECT MIN(due_at) FROM {_T} WHERE status = {_LEASABLE} AND ready = 0"
        f" AND queue IN {marks}{skip_gated}",
        f"SELECT due_at FROM {_T} INDEXED BY {_T}_ready WHERE status = {_LEASABLE}"
        f" AND ready = 1 AND queue = :queue{skip_gated} LIMIT 1",
        # INDEXED BY: left alone, the planner scans every pending row of the queue through
        # the status index (7 ms at 30,000 pending, every loop).
        f"SELECT due_at, resources FROM {_T} INDEXED BY {_T}_gated"
        f" WHERE status = {_LEASABLE} AND has_resources = 1 AND queue IN {marks}",
    )
