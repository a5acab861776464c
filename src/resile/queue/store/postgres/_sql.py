"""Every SQL statement of the PostgreSQL store, named, in one place, with named parameters.

States are never spelled here: they are injected from ``TaskStatus`` and from
the transition sets of ``resile.queue._transitions`` as SQL literals (the
partial indexes' ``WHERE status = ...`` must match the queries literally for
the planner to use them). Column names are ``TaskField`` values.

Two tables hold tasks: the *hot* table (``resile_tasks``) holds only live ones
(``PENDING`` and ``DOING``), so its indexes stay small under churn; a task
that finishes moves, in the transaction that finishes it, to the *finished*
table (``resile_finished``), from which ``requeue`` moves it back and prunes
delete it in bounded batches. Both share one sequence, so ``seq`` (creation
order) is unique over both.

Every name is qualified with the store's schema: ``Queries(schema)`` holds the
statements of one schema, formatted once. Parameters are named
(``%(name)s``); lists travel as arrays (``= ANY(%(queues)s)``) so a statement
does not depend on a list's length, and batched writes ``unnest`` arrays.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from resile.queue import _transitions as tr
from resile.queue._names import (
    COUNTS_TABLE,
    META_TABLE,
    TALLIES_TABLE,
    TASKS_TABLE,
    TERMINAL_STATUSES,
    TIMING_SEP,
    TaskStatus,
)

__all__ = [
    "COLUMNS",
    "FINISHED_TABLE",
    "FINISH_FIELDS",
    "SCHEMA_VERSION",
    "SEQUENCE",
    "TALLY_FIELDS",
    "Queries",
    "check_schema_name",
]

#: The version of the PostgreSQL schema this code writes (``resile_meta.schema_version``).
SCHEMA_VERSION = 4
FINISHED_TABLE = "resile_finished"
SEQUENCE = "resile_seq"
#: Rows per (queue, status) in the counts table: each backend adds to ``pid % COUNT_SHARDS``.
COUNT_SHARDS = 64

# Every stored column, in table order (``TaskField`` values): the task record, then bookkeeping.
COLUMNS: tuple[str, ...] = (
    "seq",
    "id",
    "queue",
    "handler",
    "params",
    "priority",
    "status",
    "attempts",
    "max_retries",
    "backoff",
    "last_delay",
    "due_at",
    "lease_owner",
    "lease_expires_at",
    "progress",
    "checkpoint",
    "result",
    "last_error",
    "history",
    "timeout",
    "resources",
    "has_resources",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "traceparent",
)
_COLS = ", ".join(COLUMNS)
# The columns a new task's row brings (``encode_new``'s fields but status, attempts and
# the times, which are the same for a whole batch), with the cast from JSON text.
_INSERT_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", ""),
    ("queue", ""),
    ("handler", ""),
    ("params", ""),
    ("priority", "BIGINT"),
    ("max_retries", "BIGINT"),
    ("backoff", ""),
    ("due_at", "FLOAT8"),
    ("resources", ""),
    ("has_resources", "BOOL"),
    ("timeout", "FLOAT8"),
    ("traceparent", ""),
)

#: A finishing task's fields in ``FINISH``'s rows (``%(items)s``), in that order.
FINISH_FIELDS = ("seq", "attempts", "status", "result", "progress", "history", "last_error")
_FINISH_FIELDS: tuple[tuple[str, str], ...] = tuple(
    zip(FINISH_FIELDS, ("BIGINT", "BIGINT", "", "", "FLOAT8", "", ""), strict=True)
)
#: A counter row's fields in the tally rows (``%(tallies)s``), in that order.
TALLY_FIELDS: tuple[tuple[str, str], ...] = (
    ("seq", "BIGINT"),
    ("queue", ""),
    ("outcome", ""),
    ("n", "BIGINT"),
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def check_schema_name(schema: object) -> str:
    """``schema`` when it is a plain lower-case identifier (it is spelled into SQL).

    Raises:
        ValueError: anything else (named with its value).
    """
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            "PostgreSQL store: schema must be a lower-case identifier "
            f"([a-z_][a-z0-9_]*, at most 41 characters), got {schema!r}"
        )
    return schema


def _lit(status: TaskStatus) -> str:
    return f"'{status.value}'"


def _arr(statuses: Collection[TaskStatus]) -> str:
    return "ARRAY[" + ", ".join(_lit(s) for s in sorted(statuses, key=lambda s: s.value)) + "]"


_PENDING = _lit(TaskStatus.PENDING)
_FINISHED = sorted(TERMINAL_STATUSES, key=lambda s: s.value)
_DOING = _lit(TaskStatus.DOING)
(_HELD,) = (_lit(s) for s in tr.HELD_FROM)
(_LEASABLE,) = (_lit(s) for s in tr.LEASE_FROM)
_REQUEUEABLE = _arr(tr.REQUEUE_FROM)
_EDITABLE = _arr(tr.EDIT_FROM)

# Columns ``decode`` reads from a row (every column; the finishing moves copy them all).
_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {meta} (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS {seq};
CREATE TABLE IF NOT EXISTS {hot} (
    seq              bigint PRIMARY KEY DEFAULT nextval('{seq}'),
    id               text NOT NULL UNIQUE,
    queue            text NOT NULL,
    handler          text NOT NULL,
    params           text NOT NULL,
    priority         bigint NOT NULL,
    status           text NOT NULL,
    attempts         bigint NOT NULL DEFAULT 0,
    max_retries      bigint NOT NULL,
    backoff          text NOT NULL,
    last_delay       double precision,
    due_at           double precision NOT NULL,
    lease_owner      text,
    lease_expires_at double precision,
    progress         double precision NOT NULL DEFAULT 0,
    checkpoint       text,
    result           text,
    last_error       text,
    history          text NOT NULL DEFAULT '[]',
    timeout          double precision,
    resources        text NOT NULL DEFAULT '{{}}',
    has_resources    boolean NOT NULL DEFAULT false,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    traceparent      text
) WITH (
    -- Room on each page for the lease/renew/retry updates to stay HOT (no index write).
    fillfactor = 70,
    -- Vacuum the small, churning hot table early and without throttling.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX IF NOT EXISTS {hot_name}_ready ON {hot} (queue, priority, seq)
    WHERE status = {pending};
CREATE INDEX IF NOT EXISTS {hot_name}_due ON {hot} (queue, due_at) WHERE status = {pending};
CREATE INDEX IF NOT EXISTS {hot_name}_leased ON {hot} (queue, lease_expires_at)
    WHERE status = {doing};
CREATE INDEX IF NOT EXISTS {hot_name}_gated ON {hot} (queue, due_at)
    WHERE status = {pending} AND has_resources;
CREATE TABLE IF NOT EXISTS {fin} (LIKE {hot} INCLUDING DEFAULTS) WITH (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.1
);
CREATE UNIQUE INDEX IF NOT EXISTS {fin_name}_seq ON {fin} (seq);
CREATE UNIQUE INDEX IF NOT EXISTS {fin_name}_id ON {fin} (id);
CREATE INDEX IF NOT EXISTS {fin_name}_finished ON {fin} (status, finished_at);
CREATE INDEX IF NOT EXISTS {fin_name}_queue ON {fin} (queue, status, seq);
-- Version 2: the trace context of a task (both tables, last column), the outcome counters.
ALTER TABLE {hot} ADD COLUMN IF NOT EXISTS traceparent text;
ALTER TABLE {fin} ADD COLUMN IF NOT EXISTS traceparent text;
CREATE TABLE IF NOT EXISTS {tallies} (
    queue   text NOT NULL,
    minute  bigint NOT NULL,
    outcome text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (queue, minute, outcome)
);
-- Version 3: tasks per (queue, status). Each backend adds to its own shard of rows (its
-- pid modulo {shards}), so concurrent transitions of one queue seldom wait on one row;
-- reads sum the shards.
CREATE TABLE IF NOT EXISTS {counts} (
    queue  text NOT NULL,
    status text NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (queue, status, shard)
);
-- Version 4: the statements that change tasks keep the counts themselves (a ``cnt`` step
-- of each); version 3's triggers, which cost more than the rest of a lease, are dropped.
DROP TRIGGER IF EXISTS {hot_name}_count_insert ON {hot};
DROP TRIGGER IF EXISTS {hot_name}_count_delete ON {hot};
DROP TRIGGER IF EXISTS {hot_name}_count_update ON {hot};
DROP TRIGGER IF EXISTS {fin_name}_count_insert ON {fin};
DROP TRIGGER IF EXISTS {fin_name}_count_delete ON {fin};
DROP TRIGGER IF EXISTS {fin_name}_count_update ON {fin};
DROP FUNCTION IF EXISTS {s}.{counts_name}_rows();
DROP FUNCTION IF EXISTS {s}.{counts_name}_moved();
"""


def _counted(counts: str, deltas: str) -> str:
    """The counts' upsert of a statement (its one ``cnt`` step: two upserts of one row in one
    statement would fail): ``deltas`` selects ``(queue, status, n)`` rows, summed here into
    this backend's shard, in one lock order (no deadlock)."""
    return (
        f"INSERT INTO {counts} AS c (queue, status, shard, n)"
        f" SELECT d.queue, d.status, MOD(PG_BACKEND_PID(), {COUNT_SHARDS}), SUM(d.n)"
        f" FROM ({deltas}) AS d(queue, status, n) GROUP BY d.queue, d.status"
        " HAVING SUM(d.n) <> 0 ORDER BY d.queue, d.status"
        " ON CONFLICT (queue, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n"
    )


def _moved(source: str, old: str, target: str, new: str) -> str:
    """Deltas of rows leaving ``(queue, old)`` of ``source`` for ``(queue, new)`` of
    ``target`` (CTE names; ``old`` / ``new``: a column or a status literal)."""
    return f"SELECT queue, {old}, -1 FROM {source} UNION ALL SELECT queue, {new}, 1 FROM {target}"


def _json_rows(param: str, fields: tuple[tuple[str, str], ...]) -> str:
    """The rows of parameter ``param``, a JSON array of arrays of ``fields`` (name, cast) in
    that order: one text parameter (psycopg dumps a list of values slowly, array by array)."""
    picks = ", ".join(
        f"(r->>{i})" + (f"::{cast}" if cast else "") + f" AS {name}"
        for i, (name, cast) in enumerate(fields)
    )
    return f"SELECT {picks} FROM JSONB_ARRAY_ELEMENTS(%({param})s::JSONB) AS r"


def _tally_of(changed: str, tallies: str) -> str:
    """The counters' upsert of a statement's CTE: the tally rows (``%(tallies)s``, rows of
    ``TALLY_FIELDS``, at ``%(minute)s``) of the tasks whose rows the CTE ``changed``
    returned, summed, in one lock order."""
    return (
        f"INSERT INTO {tallies} AS c (queue, minute, outcome, n)"
        " SELECT k.queue, %(minute)s, k.outcome, SUM(k.n)"
        f" FROM ({_json_rows('tallies', TALLY_FIELDS)}) AS k"
        f" JOIN {changed} ON {changed}.seq = k.seq"
        " GROUP BY k.queue, k.outcome ORDER BY k.queue, k.outcome"
        " ON CONFLICT (queue, minute, outcome) DO UPDATE SET n = c.n + EXCLUDED.n"
    )


class Queries:
    """The statements of the store in ``schema``, formatted once.

    Args:
        schema: a lower-case identifier (``check_schema_name``).
    """

    def __init__(self, schema: str) -> None:
        s = check_schema_name(schema)
        hot, fin = f"{s}.{TASKS_TABLE}", f"{s}.{FINISHED_TABLE}"
        tallies = f"{s}.{TALLIES_TABLE}"
        self.schema = s
        self.hot, self.fin = hot, fin
        self.hot_table = TASKS_TABLE
        #: The NOTIFY channel of this schema's wake-ups (payload: JSON ``{"q": queue, "due": t}``).
        self.channel = f"resile_wake_{s}"
        self.LOCK_KEY = f"resile:{s}"
        self.SCHEMA = _SCHEMA.format(
            s=s,
            meta=f"{s}.{META_TABLE}",
            seq=f"{s}.{SEQUENCE}",
            hot=hot,
            fin=fin,
            hot_name=TASKS_TABLE,
            fin_name=FINISHED_TABLE,
            pending=_PENDING,
            doing=_DOING,
            tallies=f"{s}.{TALLIES_TABLE}",
            counts=f"{s}.{COUNTS_TABLE}",
            counts_name=COUNTS_TABLE,
            shards=COUNT_SHARDS,
        )
        counts = f"{s}.{COUNTS_TABLE}"
        # The count of a schema made before version 4, in the migration's transaction (the
        # advisory lock keeps other stores of this version from writing until it commits;
        # stop the workers of older versions first: they counted through triggers).
        self.COUNTS_INIT = (
            f"DELETE FROM {counts}; INSERT INTO {counts} (queue, status, shard, n)"
            f" SELECT queue, status, 0, COUNT(*) FROM (SELECT queue, status FROM {hot}"
            f" UNION ALL SELECT queue, status FROM {fin}) AS t GROUP BY queue, status"
        )
        # Whether the schema's tables exist, and its version (no table: NULL).
        self.SCHEMA_EXISTS = "SELECT TO_REGCLASS(%(meta)s) IS NOT NULL AS found"
        self.VERSION_KEY = "schema_version"
        self.META_TABLE = f"{s}.{META_TABLE}"
        self.META_GET = f"SELECT value FROM {s}.{META_TABLE} WHERE key = %(key)s"
        self.META_SET = (
            f"INSERT INTO {s}.{META_TABLE} (key, value) VALUES (%(key)s, %(value)s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )
        # One migration at a time per schema, across processes (released at commit).
        self.MIGRATION_LOCK = "SELECT PG_ADVISORY_XACT_LOCK(HASHTEXT(%(key)s))"

        # -- producers ------------------------------------------------------------------------
        # Ids (of a batch) that exist already, live or finished.
        self.EXISTING = (
            f"SELECT * FROM {hot} WHERE id = ANY(%(ids)s)"
            f" UNION ALL SELECT * FROM {fin} WHERE id = ANY(%(ids)s)"
        )
        # A batch of new tasks, in the batch's order; seq is taken in that order. The rows
        # come as one JSON array of arrays (``INSERT_FIELDS``, in that order), cast here.
        self.INSERT_FIELDS = tuple(name for name, _ in _INSERT_FIELDS)
        picks = ", ".join(
            f"(v.r->>{i})" + (f"::{cast}" if cast else "")
            for i, (_, cast) in enumerate(_INSERT_FIELDS)
        )
        insert = (
            f"WITH ins AS (INSERT INTO {hot} (seq, {', '.join(self.INSERT_FIELDS)}, status,"
            " attempts, created_at, updated_at)"
            f" SELECT NEXTVAL('{s}.{SEQUENCE}'), {picks}, %(status)s, 0, %(now)s, %(now)s"
            " FROM JSONB_ARRAY_ELEMENTS(%(rows)s::JSONB) WITH ORDINALITY AS v(r, ord)"
            " ORDER BY v.ord"
            " ON CONFLICT (id) DO NOTHING RETURNING id, seq, queue, status),"
            f" cnt AS ({_counted(counts, 'SELECT queue, status, 1 FROM ins')})"
        )
        self.INSERT = f"{insert} SELECT id, seq FROM ins"
        # New tasks whose ids cannot exist (generated), and the NOTIFY, in one statement.
        self.INSERT_NOTIFY = (
            f"{insert} SELECT ins.id, ins.seq FROM ins,"
            " (SELECT PG_NOTIFY(%(channel)s, %(payload)s)) AS n"
        )
        # Ids just inserted live that a concurrent finish had moved to the finished table.
        self.FINISHED_IDS = f"SELECT id FROM {fin} WHERE id = ANY(%(ids)s)"
        self.NOTIFY = "SELECT PG_NOTIFY(%(channel)s, %(payload)s)"

        # -- reads ----------------------------------------------------------------------------
        self.SELECT_BY_ID = (
            f"SELECT * FROM {hot} WHERE id = %(id)s UNION ALL SELECT * FROM {fin} WHERE id = %(id)s"
        )
        self.SELECT_CHECKPOINT = (
            f"SELECT checkpoint FROM {hot} WHERE id = %(id)s"
            f" UNION ALL SELECT checkpoint FROM {fin} WHERE id = %(id)s"
        )
        self.SELECT_LIVE_FOR_UPDATE = f"SELECT * FROM {hot} WHERE id = %(id)s FOR UPDATE"
        # The tasks of ``:ids`` that ``:worker`` holds, locked, in seq order (no deadlock).
        self.SELECT_HELD = (
            f"SELECT * FROM {hot} WHERE id = ANY(%(ids)s) AND status = {_HELD}"
            " AND lease_owner = %(worker)s ORDER BY seq FOR UPDATE"
        )
        # Counts: sums of the shards the triggers keep (never a scan of the tasks).
        self.STATS = (
            f"SELECT status, SUM(n) AS n FROM {counts}"
            " WHERE %(queue)s::TEXT IS NULL OR queue = %(queue)s GROUP BY status"
        )
        self.QUEUES = f"SELECT queue FROM {counts} GROUP BY queue HAVING SUM(n) > 0 ORDER BY queue"
        self.COUNTS = (
            f"SELECT queue, status, SUM(n) AS n FROM {counts}"
            " GROUP BY queue, status HAVING SUM(n) > 0 ORDER BY queue"
        )

        # -- lease ----------------------------------------------------------------------------
        # Lapsed leases, locked; one whose holder is renewing it right now is waited for
        # (not skipped: the reclaim must not miss it), in seq order (no deadlock).
        self.SELECT_EXPIRED = (
            f"SELECT * FROM {hot} WHERE status = {_HELD} AND queue = ANY(%(queues)s)"
            " AND lease_expires_at < %(now)s ORDER BY seq FOR UPDATE"
        )
        # Due tasks in (priority, seq) order after a key, locked; others' locked rows skipped.
        # One index scan per queue (LATERAL), merged: ``queue = ANY(...)`` would read and
        # sort every pending row instead (3 ms at 2,000 pending, measured).
        self.SELECT_DUE = (
            f"SELECT t.* FROM UNNEST(%(queues)s::TEXT[]) AS q(name), LATERAL ("
            f"SELECT * FROM {hot} WHERE status = {_LEASABLE} AND queue = q.name"
            " AND due_at <= %(now)s AND (priority, seq) > (%(priority)s, %(seq)s)"
            " ORDER BY priority, seq LIMIT %(chunk)s FOR UPDATE SKIP LOCKED) AS t"
            " ORDER BY t.priority, t.seq LIMIT %(chunk)s"
        )
        # The due tasks ``SELECT_DUE`` locked (so still leasable), leased.
        self.LEASE = (
            f"WITH upd AS (UPDATE {hot} AS t SET status = %(status)s, attempts = v.attempts,"
            " lease_owner = %(worker)s, lease_expires_at = %(lease_expires_at)s,"
            " started_at = %(started_at)s, updated_at = %(now)s"
            " FROM UNNEST(%(seqs)s::BIGINT[], %(attempts)s::BIGINT[]) AS v(seq, attempts)"
            " WHERE t.seq = v.seq RETURNING t.queue, t.status),"
            f" cnt AS ({_counted(counts, _moved('upd', _LEASABLE, 'upd', 'status'))})"
            " SELECT COUNT(*) AS n FROM upd"
        )
        # What sends a lease to the locked path (``SELECT_EXPIRED`` ... in a transaction):
        # lapsed leases to reclaim, or (``:gated``: a capacity to check) due tasks with needs.
        self.LEASE_CHECKS = (
            f"SELECT EXISTS (SELECT 1 FROM {hot} WHERE status = {_HELD}"
            " AND queue = ANY(%(queues)s) AND lease_expires_at < %(now)s) AS expired,"
            f" %(gated)s AND EXISTS (SELECT 1 FROM {hot} WHERE status = {_LEASABLE}"
            " AND has_resources AND queue = ANY(%(queues)s) AND due_at <= %(now)s) AS gated"
        )
        # The lease as one statement: up to :limit due tasks of the queues that are not
        # paused, in (priority, seq) order, others' locked rows skipped, set to the values
        # ``_transitions.lease`` gave (its count rule, ``attempts + 1``, spelled here as in
        # the Redis script); none when a ``LEASE_CHECKS`` check holds (the locked path
        # reclaims first, or checks the needs, and leases in order). Returns the leased
        # rows, and what they held before the lease.
        self.LEASE_DUE = (
            f"WITH open AS (SELECT q.name FROM UNNEST(%(queues)s::TEXT[]) AS q(name)"
            f" WHERE NOT EXISTS (SELECT 1 FROM {s}.{META_TABLE}"
            " WHERE key = %(paused_prefix)s || q.name)"
            f" AND NOT (%(gated)s AND EXISTS (SELECT 1 FROM {hot} WHERE status = {_LEASABLE}"
            " AND has_resources AND queue = ANY(%(queues)s) AND due_at <= %(now)s))"
            f" AND NOT EXISTS (SELECT 1 FROM {hot} WHERE status = {_HELD}"
            " AND queue = ANY(%(queues)s) AND lease_expires_at < %(now)s)),"
            " pick AS (SELECT t.seq, t.attempts, t.lease_owner, t.started_at, t.updated_at"
            f" FROM open, LATERAL (SELECT seq, priority, attempts, lease_owner, started_at,"
            f" updated_at FROM {hot} WHERE status = {_LEASABLE} AND queue = open.name"
            " AND due_at <= %(now)s ORDER BY priority, seq LIMIT %(limit)s"
            " FOR UPDATE SKIP LOCKED) AS t ORDER BY t.priority, t.seq LIMIT %(limit)s),"
            f" leased AS (UPDATE {hot} AS t SET status = %(status)s, attempts = t.attempts + 1,"
            " lease_owner = %(worker)s, lease_expires_at = %(lease_expires_at)s,"
            " started_at = %(started_at)s, updated_at = %(now)s FROM pick"
            " WHERE t.seq = pick.seq RETURNING t.*, pick.attempts AS was_attempts,"
            " pick.lease_owner AS was_lease_owner, pick.started_at AS was_started_at,"
            " pick.updated_at AS was_updated_at),"
            f" cnt AS ({_counted(counts, _moved('leased', _LEASABLE, 'leased', 'status'))})"
            " SELECT * FROM leased ORDER BY priority, seq"
        )
        # A task ``LEASE_DUE`` took that turned out unusable, back to what it held before
        # (then dead-lettered in the same transaction, as the locked path does unleased).
        self.UNLEASE = (
            f"UPDATE {hot} SET attempts = %(attempts)s, lease_owner = %(lease_owner)s,"
            " started_at = %(started_at)s, updated_at = %(updated_at)s, lease_expires_at = NULL"
            f" WHERE seq = %(seq)s AND status = {_HELD} AND lease_owner = %(worker)s"
        )
        self.RENEW = (
            f"UPDATE {hot} SET lease_expires_at = %(lease_expires_at)s, updated_at = %(now)s"
            f" WHERE id = ANY(%(ids)s) AND status = {_HELD} AND lease_owner = %(worker)s"
            " RETURNING id"
        )

        # -- transitions of tasks read (and locked) in the same transaction ------------------
        # Live tasks (by seq) that finish: moved to the finished table with the new values;
        # a NULL keeps the stored value (result, progress, history, last_error). With
        # ``:worker``, only those still held by it at ``:attempts`` move (the values were
        # decided from what this store's lease read of them: nobody else writes a held
        # task's history); without, every one (their rows were read, locked, in this
        # transaction). The per-minute counters (``TALLY_ROWS``: seq, queue, outcome, n)
        # count only the tasks that moved.
        self.FINISH = (
            f"WITH v AS ({_json_rows('items', _FINISH_FIELDS)}),"
            f" moved AS (DELETE FROM {hot} AS t USING v WHERE t.seq = v.seq"
            f" AND (%(worker)s::TEXT IS NULL OR (t.status = {_HELD}"
            " AND t.lease_owner = %(worker)s AND t.attempts = v.attempts))"
            " RETURNING t.*, v.status AS new_status, v.result AS new_result,"
            " v.progress AS new_progress, v.history AS new_history,"
            " v.last_error AS new_last_error),"
            f" ins AS (INSERT INTO {fin} ({_COLS})"
            " SELECT seq, id, queue, handler, params, priority, new_status, attempts,"
            " max_retries, backoff, last_delay, due_at, lease_owner, NULL,"
            " COALESCE(new_progress, progress), checkpoint, COALESCE(new_result, result),"
            " COALESCE(new_last_error, last_error), COALESCE(new_history, history), timeout,"
            " resources, has_resources, created_at, %(now)s, started_at, %(now)s, traceparent"
            f" FROM moved RETURNING {_COLS}),"
            f" tal AS ({_tally_of('ins', tallies)}),"
            f" cnt AS ({_counted(counts, _moved('moved', 'status', 'ins', 'status'))})"
            " SELECT * FROM ins"
        )
        # A failed attempt, retried: PENDING again, due at :due_at.
        # (The task's row was read and locked held, in this transaction.)
        self.RETRY = (
            f"WITH upd AS (UPDATE {hot} SET status = %(status)s,"
            " history = COALESCE(%(history)s, history),"
            " last_error = %(last_error)s, last_delay = %(last_delay)s, due_at = %(due_at)s,"
            " lease_expires_at = NULL, updated_at = %(now)s WHERE seq = %(seq)s RETURNING *),"
            f" cnt AS ({_counted(counts, _moved('upd', _HELD, 'upd', 'status'))})"
            " SELECT * FROM upd"
        )
        # The same retry as one statement, for a task whose row this store read at its lease:
        # only while it is still held by :worker at :attempts (else nothing, and the caller
        # takes the locked path); with its tally and its NOTIFY.
        self.RETRY_HELD = (
            f"WITH upd AS (UPDATE {hot} SET status = %(status)s, history = %(history)s,"
            " last_error = %(last_error)s, last_delay = %(last_delay)s, due_at = %(due_at)s,"
            " lease_expires_at = NULL, updated_at = %(now)s"
            f" WHERE seq = %(seq)s AND status = {_HELD} AND lease_owner = %(worker)s"
            " AND attempts = %(attempts)s RETURNING *),"
            f" tal AS ({_tally_of('upd', tallies)}),"
            f" cnt AS ({_counted(counts, _moved('upd', _HELD, 'upd', 'status'))}),"
            " note AS (SELECT PG_NOTIFY(%(channel)s, %(payload)s) FROM upd)"
            " SELECT upd.* FROM upd, note"
        )
        # (The task's row was read and locked held, in this transaction.)
        self.RELEASE = (
            f"WITH upd AS (UPDATE {hot} SET status = %(status)s, due_at = %(due_at)s,"
            " attempts = %(attempts)s, lease_expires_at = NULL, updated_at = %(now)s"
            " WHERE seq = %(seq)s RETURNING *),"
            f" cnt AS ({_counted(counts, _moved('upd', _HELD, 'upd', 'status'))})"
            " SELECT * FROM upd"
        )
        # A dead letter or canceled task back to the hot table, PENDING.
        self.REQUEUE = (
            f"WITH moved AS (DELETE FROM {fin} WHERE id = %(id)s"
            f" AND status = ANY({_REQUEUEABLE}) RETURNING *),"
            f" ins AS (INSERT INTO {hot} ({_COLS})"
            " SELECT seq, id, queue, handler, params, priority, %(status)s, %(attempts)s,"
            " max_retries, backoff, %(last_delay)s, %(due_at)s, lease_owner, NULL, progress,"
            " checkpoint, result, last_error, history, timeout, resources, has_resources,"
            " created_at, %(now)s, started_at, NULL, traceparent FROM moved"
            f" RETURNING {_COLS}),"
            f" cnt AS ({_counted(counts, _moved('moved', 'status', 'ins', 'status'))})"
            " SELECT * FROM ins"
        )
        # An operator's actions on one task: delete it (a PENDING or a finished one, never
        # while it runs), make a waiting PENDING one due now.
        self.DELETE = (
            f"WITH ins AS (DELETE FROM {hot} WHERE id = %(id)s AND status = {_PENDING}"
            f" RETURNING seq, queue, status), moved AS (DELETE FROM {fin} WHERE id = %(id)s"
            " RETURNING seq, queue, status), gone AS (SELECT * FROM ins UNION ALL"
            " SELECT * FROM moved),"
            f" cnt AS ({_counted(counts, 'SELECT queue, status, -1 FROM gone')})"
            " SELECT seq FROM gone"
        )
        self.MAKE_DUE = (
            f"UPDATE {hot} SET due_at = %(now)s, updated_at = %(now)s WHERE id = %(id)s"
            f" AND status = {_PENDING} AND due_at > %(now)s RETURNING {_COLS}"
        )
        # progress / checkpoint of a live task (EDIT_FROM), or of one the worker holds.
        self.SET_FIELD = {
            (column, holder): (
                f"UPDATE {hot} SET {column} = %(value)s, updated_at = %(now)s WHERE id = %(id)s"
                + (
                    f" AND status = {_HELD} AND lease_owner = %(worker)s"
                    if holder
                    else f" AND status = ANY({_EDITABLE})"
                )
            )
            for column in ("progress", "checkpoint")
            for holder in (False, True)
        }

        # The hot table's dead rows made reusable (not in a transaction; skipped when locked),
        # its indexes cleaned always (PostgreSQL 14+ may skip them when few pages have dead rows).
        self.VACUUM_HOT = f"VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) {hot}"
        # The hot table's live rows as the last vacuum counted them (no scan).
        self.LIVE_ROWS = f"SELECT reltuples AS n FROM pg_class WHERE oid = '{hot}'::REGCLASS"
        # Each index of the hot table: its file's size, its entries as the last vacuum
        # counted them, and the bytes of one entry's key (fixed widths from the catalog,
        # variable ones from ``pg_stats``, 32 where ANALYZE has not run yet).
        self.HOT_INDEXES = (
            "SELECT c.relname AS name, pg_relation_size(c.oid) AS size, c.reltuples AS entries,"
            " i.indisvalid AS valid, (SELECT SUM(CASE WHEN a.attlen > 0 THEN a.attlen"
            " ELSE COALESCE(st.avg_width, 32) END) FROM UNNEST(i.indkey::INT2[]) AS k(n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
            " LEFT JOIN pg_stats st ON st.schemaname = %(schema)s"
            " AND st.tablename = %(table)s AND st.attname = a.attname) AS key_bytes"
            f" FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            f" WHERE i.indrelid = '{hot}'::REGCLASS ORDER BY c.relname"
        )
        # One index rebuilder per schema at a time (a session advisory lock).
        self.REINDEX_LOCK = "SELECT pg_try_advisory_lock(hashtext(%(key)s)) AS got"
        self.REINDEX_UNLOCK = "SELECT pg_advisory_unlock(hashtext(%(key)s))"
        self.REINDEX_LOCK_KEY = f"resile:reindex:{s}"

        # -- lists, prunes, wake-up times -----------------------------------------------------
        # ``Store.list``'s statements, one per shape (``list_statement``), made on first use.
        self._lists: dict[tuple[str, bool, bool, tuple[TaskStatus, ...] | None, bool], str] = {}
        # Finished tasks of ``:statuses`` finished at or before ``:cutoff``, at most ``:batch``.
        self.PURGE_BATCH = (
            f"WITH gone AS (DELETE FROM {fin} WHERE seq IN (SELECT seq FROM {fin}"
            " WHERE status = ANY(%(statuses)s) AND finished_at <= %(cutoff)s"
            " AND (%(queue)s::TEXT IS NULL OR queue = %(queue)s) LIMIT %(batch)s)"
            " RETURNING queue, status),"
            f" cnt AS ({_counted(counts, 'SELECT queue, status, -1 FROM gone')})"
            " SELECT COUNT(*) AS n FROM gone"
        )
        # The earliest lease expiry and the earliest due time (of tasks without needs when
        # ``:gated``); then, with a capacity, the due times and needs of tasks with needs.
        self.NEXT_DUE = (
            f"SELECT (SELECT MIN(lease_expires_at) FROM {hot} WHERE status = {_HELD}"
            " AND queue = ANY(%(queues)s)) AS lease_expires_at,"
            # The first entry of each queue's due-time index (LATERAL), not a scan.
            f" (SELECT MIN(t.due_at) FROM UNNEST(%(queues)s::TEXT[]) AS q(name), LATERAL ("
            f"SELECT due_at FROM {hot} WHERE status = {_LEASABLE} AND queue = q.name"
            " AND NOT (%(gated)s AND has_resources) ORDER BY due_at LIMIT 1) AS t) AS due_at"
        )
        # The earliest due time of one queue's PENDING tasks: the due-time index's first entry.
        self.OLDEST_DUE = (
            f"SELECT MIN(due_at) AS due_at FROM {hot} WHERE status = {_PENDING}"
            " AND queue = %(queue)s"
        )
        self.GATED_DUE = (
            f"SELECT due_at, resources FROM {hot} WHERE status = {_LEASABLE} AND has_resources"
            " AND queue = ANY(%(queues)s)"
        )

        # -- paused queues and the worker registry: rows of the meta table ---------------------
        # Keys PAUSED_PREFIX + queue (value: when paused) and WORKER_PREFIX + id (its JSON).
        meta = f"{s}.{META_TABLE}"
        self.PAUSED_PREFIX, self.WORKER_PREFIX = "paused:", "worker:"
        self.PAUSE = (
            f"INSERT INTO {meta} (key, value) VALUES (%(key)s, %(value)s)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self.META_DELETE = f"DELETE FROM {meta} WHERE key = %(key)s"
        # The rows whose key starts with ``:prefix`` (a plain string compare, no pattern).
        self.META_PREFIXED = (
            f"SELECT key, value FROM {meta} WHERE LEFT(key, LENGTH(%(prefix)s)) = %(prefix)s"
            " ORDER BY key"
        )
        self.PAUSED_OF = f"SELECT key FROM {meta} WHERE key = ANY(%(keys)s)"
        self.RECORD_WORKER = (
            f"INSERT INTO {meta} (key, value) VALUES (%(key)s, %(value)s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )
        self.PRUNE_WORKERS = (
            f"DELETE FROM {meta} WHERE LEFT(key, LENGTH(%(prefix)s)) = %(prefix)s"
            " AND (value::JSONB ->> 'expires_at')::FLOAT8 < %(cutoff)s"
        )

        # -- schedules: meta rows SCHEDULE_PREFIX + name, changed by compare-and-set ----------
        self.SCHEDULE_ADD = (
            f"INSERT INTO {meta} (key, value) VALUES (%(key)s, %(new)s)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self.SCHEDULE_SWAP = (
            f"UPDATE {meta} SET value = %(new)s WHERE key = %(key)s AND value = %(old)s"
        )
        self.SCHEDULE_DROP = f"DELETE FROM {meta} WHERE key = %(key)s AND value = %(old)s"

        # -- per-minute outcome counters (minute = epoch seconds // 60) -----------------------
        # Counts added (``Dashboard.tally_rows``), summed per (queue, outcome), sorted: no deadlock.
        self.TALLY = (
            f"INSERT INTO {tallies} AS c (queue, minute, outcome, n)"
            " SELECT k.queue, %(minute)s, k.outcome, SUM(k.n)"
            f" FROM ({_json_rows('tallies', TALLY_FIELDS)}) AS k GROUP BY k.queue, k.outcome ORDER BY k.queue, k.outcome"
            " ON CONFLICT (queue, minute, outcome) DO UPDATE SET n = c.n + EXCLUDED.n"
        )
        self.PRUNE_TALLIES = f"DELETE FROM {tallies} WHERE minute < %(cutoff)s"
        self.TALLIES = (
            f"SELECT minute, SPLIT_PART(outcome, '{TIMING_SEP}', 1) AS outcome, SUM(n) AS n"
            f" FROM {tallies} WHERE minute >= %(lo)s AND minute <= %(hi)s"
            " AND (%(queue)s::TEXT IS NULL OR queue = %(queue)s)"
            " GROUP BY minute, 2 ORDER BY minute"
        )
        self.TIMING_COUNTERS = (
            f"SELECT queue, outcome, SUM(n) AS n FROM {tallies}"
            " WHERE minute >= %(lo)s AND minute <= %(hi)s"
            " AND (%(queue)s::TEXT IS NULL OR queue = %(queue)s)"
            " GROUP BY queue, outcome"
        )

    def list_statement(
        self,
        order: str,
        descending: bool,
        *,
        queue: bool,
        statuses: Collection[TaskStatus] | None,
        after: bool,
    ) -> str:
        """``Store.list``'s statement for one shape of its arguments (made once, then kept).

        Parameters: ``%(queue)s`` (with ``queue``), ``%(after)s`` and, for a keyed order,
        ``%(after_key)s`` (with ``after``), ``%(limit)s``, ``%(offset)s``.

        Each table holds its own statuses (PENDING and DOING the hot one, the finished
        ones the finished table), so a status filter reads only the table that holds it,
        one ``UNION ALL`` branch per status. Each branch has its own ``ORDER BY`` (the
        order's column, then ``seq``) and ``LIMIT`` (a page), so a branch an index serves
        in that order reads a page's worth of rows, not every match, and the outer sort
        gets at most a page per branch (PostgreSQL merges the branches of a ``UNION ALL``
        in order only when they have no ``WHERE``). In the finished table ``updated_at``
        is ``finished_at`` (the finishing move writes both from one clock reading, and a
        finished row is never updated), so there the updated order reads the
        ``(status, finished_at)`` index. A predicate written for every shape
        (``%(queue)s IS NULL OR ...``) would keep the planner from using any of them.
        """
        shape = (
            order,
            descending,
            queue,
            None if statuses is None else tuple(sorted(set(statuses), key=lambda s: s.value)),
            after,
        )
        found = self._lists.get(shape)
        if found is None:
            found = self._lists[shape] = self._list_statement(*shape)
        return found

    def _list_statement(
        self,
        order: str,
        descending: bool,
        queue: bool,
        statuses: tuple[TaskStatus, ...] | None,
        after: bool,
    ) -> str:
        cmp, direction = ("<", " DESC") if descending else (">", "")
        branches: list[str] = []
        for table, finished in ((self.hot, False), (self.fin, True)):
            if statuses is not None:
                mine: list[TaskStatus | None] = [s for s in statuses if s.terminal == finished]
                if not mine:
                    continue
            elif finished and order == "updated":
                mine = [*_FINISHED]  # one index range each
            else:
                mine = [None]
            column = {"created": "seq", "due": "due_at"}.get(
                order, "finished_at" if finished else "updated_at"
            )
            for status in mine:
                where = []
                if queue:
                    where.append("queue = %(queue)s")
                if status is not None:
                    where.append(f"status = {_lit(status)}")
                if after and column == "seq":
                    where.append(f"seq {cmp} %(after)s")
                elif after:
                    key = "%(after_key)s::DOUBLE PRECISION"
                    where.append(
                        f"{column} {cmp}= {key} AND ({column} {cmp} {key} OR seq {cmp} %(after)s)"
                    )
                key_column = "" if column == "seq" else f", {column} AS list_key"
                by = (
                    f"seq{direction}" if column == "seq" else f"{column}{direction}, seq{direction}"
                )
                branches.append(
                    f"(SELECT *{key_column} FROM {table}"
                    + (" WHERE " + " AND ".join(where) if where else "")
                    + f" ORDER BY {by} LIMIT %(limit)s::BIGINT + %(offset)s::BIGINT)"
                )
        if not branches:  # no status of either table (cannot happen with TaskStatus)
            return f"SELECT * FROM {self.hot} WHERE FALSE"
        by = f"seq{direction}" if order == "created" else f"list_key{direction}, seq{direction}"
        return (
            f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS page"
            f" ORDER BY {by} LIMIT %(limit)s OFFSET %(offset)s"
        )
