"""The PostgreSQL store's contract methods (see the package docstring for the design).

Each method is one transaction of ``Database.tx``: it reads and locks the
rows it changes, asks ``resile.queue._transitions`` what the change is, and
writes that; the statements are named in ``_sql``. Finishing moves a task
from the hot table to the finished table (``_finish``: one statement for a
batch), ``requeue`` moves it back.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg

from resile.queue import _transitions as tr
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    TERMINAL_STATUSES,
    Outcome,
    Tally,
    TaskStatus,
)
from resile.queue.store._codec import CorruptField, decode, encode_error, history_with
from resile.queue.store._sql_options import (
    DEFAULT_FAILED_RETENTION,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETENTION,
    SERVER_OPTIONS,
    PruneTimer,
    read_options,
    redact,
    retention_classes,
)
from resile.queue.store.base import (
    IfExists,
    Reclaimed,
    Store,
    check_lease_args,
    check_list_args,
    check_list_order,
    check_queue,
    check_seconds,
    counts_by_queue,
    encode_results,
    fail_args,
    lease_call_args,
    normalize_queues,
    purge_statuses,
    timed_tally,
)
from resile.queue.store.postgres._dashboard import Dashboard
from resile.queue.store.postgres._db import (
    Connection,
    Cursor,
    Database,
    Rows,
    Step,
    bool_option,
    seconds_option,
)
from resile.queue.store.postgres._enqueue import (
    Created,
    create_steps,
    in_transaction,
    in_transaction_async,
    prepare,
)
from resile.queue.store.postgres._maintenance import IndexKeeper
from resile.queue.store.postgres._schedules import Schedules
from resile.queue.store.postgres._sql import FINISH_FIELDS, Queries
from resile.queue.store.postgres._watch import Watcher, payload
from resile.queue.task import AttemptRecord, JSONValue, Task, TaskError, TaskSpec

__all__ = ["DEFAULT_FAILED_RETENTION", "DEFAULT_RETENTION", "PostgresStore"]

logger = logging.getLogger("resile.queue")

# What finishing a task in a status counts (a cancel counts nothing).
_FINISH_TALLY = {TaskStatus.DONE.value: Tally.DONE, TaskStatus.FAILED.value: Tally.DEAD}


def _counter(row: Mapping[str, Any], what: Tally, now: float, timed: bool) -> str:
    """The counter the attempt in ``row`` adds to: with its run time and lateness when ``timed``."""
    if not timed:
        return what.value
    return timed_tally(
        what, started_at=row["started_at"], due_at=row["due_at"], attempts=row["attempts"], now=now
    )


# The most due rows one query of ``lease`` reads.
_MAX_CHUNK = 256
# Finished tasks one prune statement deletes (short transactions, little WAL at a time).
_PRUNE_BATCH = 1000
# A vacuum of the hot table is due after a tenth of its live rows have finished (at least
# 200): each finished task leaves two dead row versions (its insert and its lease), so
# the heap stays within about 1.2x its live size plus what churns while the vacuum runs
# (benchmarks/postgres_bloat.py; docs/postgres.md).
_VACUUM_CHURN = 0.1
_VACUUM_MIN_ROWS = 200
# The most leased rows kept for ``fail`` (the oldest are dropped: that fail reads the row).
_LEASED_KEPT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class _Leased:
    """What a lease read of a task it leased: enough for ``fail`` to decide a retry."""

    seq: int
    queue: str
    worker: str
    attempts: int
    max_retries: Any
    backoff: Any
    last_delay: Any
    history: Any
    started_at: float
    due_at: float

    def counter(self, what: Tally, now: float) -> str:
        """The counter this lease's attempt adds to when it ends at ``now`` by complete or fail."""
        return timed_tally(
            what, started_at=self.started_at, due_at=self.due_at, attempts=self.attempts, now=now
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _LeaseAsk:
    """What one ``complete_then_lease`` asks to lease, checked, at ``at``."""

    names: Sequence[str]
    worker: str
    limit: int
    lease_seconds: float
    capacity: Mapping[str, float] | None
    at: float


# resile's own URL query options (the others go to libpq).
_OPTIONS = ("schema", "listen", "vacuum_every", "reindex", *SERVER_OPTIONS)


class PostgresStore(Schedules, Dashboard, Store):
    """A ``Store`` in a PostgreSQL database (psycopg 3).

    Args:
        conninfo: a libpq connection string or URL (``postgresql://user:pw@host/db``).
        schema: the schema holding the tables (created when missing); several
            independent stores may share a database in different schemas.
        listen: ``watch`` wakes workers through LISTEN/NOTIFY; ``False`` for
            PgBouncer's transaction pooling (workers then poll, and no statement
            is prepared server-side).
        retention: seconds ``DONE`` and ``CANCELED`` tasks are kept after they
            finished (``None``: until purged).
        failed_retention: the same for dead letters (``FAILED``).
        pool_size: the most connections the store opens.
        connect_timeout: seconds to wait for a connection before giving up.
        retry_for: seconds during which a transaction that met a lost
            connection, a deadlock or a serialization failure is run again.
        migrate: create or migrate the schema on open (``False``: refuse a
            missing or older schema with ``SchemaError``).
        vacuum_every: while workers complete tasks, ``VACUUM`` the hot table
            (in a helper thread, skipped when another vacuum holds it) after
            every tenth of its live rows (at least 200) finished through this
            store, and at least this often (seconds), so that its dead rows are
            reused long before autovacuum's next round; ``None``: leave it to
            autovacuum.
        reindex: after the store's vacuums, at most every second (and a tenth
            of the time), rebuild (``REINDEX INDEX CONCURRENTLY``, one at a time)
            the hot table's index past 1.7x its estimated live size and 128 kB
            whose rebuild frees the most (``_maintenance``); ``False``: never.
            Needs ``vacuum_every``.
        read_timeout: seconds one transaction may wait on a silent server
            before the store drops its connection and runs it again on a fresh
            one (``None``: wait for ever); TCP keepalives and
            ``tcp_user_timeout`` follow it.
        idle_timeout: seconds the server lets a session sit idle inside a
            transaction (``idle_in_transaction_session_timeout``) before it ends
            it: a worker frozen mid-transaction holds its row locks no longer;
            keep it shorter than the lease (``None``: the server's setting).
        clock: epoch-time source for ``now=None``.

    Raises:
        ValueError: a bad option, named with its value.
        ConnectionError: the server cannot be reached within ``connect_timeout``.
        SchemaError: the schema is newer than this code (or missing with ``migrate=False``).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "resile",
        listen: bool = True,
        retention: float | None = DEFAULT_RETENTION,
        failed_retention: float | None = DEFAULT_FAILED_RETENTION,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        retry_for: float = 30.0,
        migrate: bool = True,
        vacuum_every: float | None = 1.0,
        reindex: bool = True,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.q = Queries(schema)
        self.schema = schema
        self.listen = bool_option("listen", listen)
        self.retention = seconds_option("retention", retention, none_ok=True)
        self.failed_retention = seconds_option("failed_retention", failed_retention, none_ok=True)
        self._db = Database(
            conninfo,
            self.q,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            retry_for=retry_for,
            migrate=migrate,
            prepare=self.listen,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
        self.url = self._db.url
        self._watchers: builtins.list[Watcher] = []
        self._pruner = PruneTimer(lambda at: self.prune(now=at))
        self.vacuum_every = seconds_option("vacuum_every", vacuum_every, none_ok=True) or None
        # Monotonic time of the next vacuum: the first one once the store has worked a while.
        self._next_vacuum = time.monotonic() + (self.vacuum_every or 0.0)
        self._vacuuming = threading.Lock()
        # Tasks this store finished since its last vacuum, and how many make the next one due.
        self._finished_since_vacuum = 0
        self._vacuum_rows = _VACUUM_MIN_ROWS
        self.reindex = bool_option("reindex", reindex)
        self._indexes = IndexKeeper(self._db.connect, self.q) if self.reindex else None
        # What this store's leases read of the tasks they leased, by id (``_retry_held``).
        self._leased: dict[str, _Leased] = {}
        self._write = self._read = self._db.tx

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """Open ``postgresql://user:pw@host:5432/db?schema=...&listen=false`` (``postgres://`` too).

        resile's query options: ``schema``, ``listen``, ``retention`` and
        ``failed_retention`` (seconds or ``none``), ``pool_size``,
        ``connect_timeout``, ``retry_for``, ``migrate``, ``vacuum_every``,
        ``reindex``, ``read_timeout``, ``idle_timeout`` (seconds or ``none``); every other query
        option goes to libpq (``sslmode``, ``application_name`` ...).
        Keyword ``options`` override them.

        Raises:
            ValueError: not a PostgreSQL URL, or a bad option value.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ValueError(
                f"PostgreSQL URL must look like postgresql://user:password@host:5432/db, got "
                f"{redact(url)!r}"
            )
        opts, rest = read_options(url, _OPTIONS, what="PostgreSQL")
        opts.update(options)
        if not parts.netloc and parts.path in ("", "/"):
            raise ValueError(
                f"PostgreSQL URL {redact(url)!r} names no server and no database "
                "(postgresql://user:password@host:5432/db)"
            )
        conninfo = urlunsplit(
            ("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")
        )
        store = cls(conninfo, **opts)
        store.url = redact(url)
        return store

    def close(self) -> None:
        with self._db.lock:
            if self._db.closed:
                return
            self._db.closed = True
            watchers, self._watchers = self._watchers, []
        for w in watchers:
            w.stop()
        self._db.close()

    def schema_version(self) -> int:
        """The task schema version stored in the database (0: none)."""
        return self._db.run(lambda first: self._db.version_steps())

    # -- producers ------------------------------------------------------------------------------

    def create(
        self,
        spec: TaskSpec,
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> Task:
        """See ``Store.create``. With ``connection`` (your psycopg connection) the
        task is written in your transaction and exists only once you commit.

        Raises:
            TypeError: ``connection`` is not a ``psycopg.Connection``.
        """
        return self.create_many([spec], if_exists=if_exists, now=now, connection=connection)[0]

    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> builtins.list[Task]:
        """See ``Store.create_many``; ``connection`` as in ``create``."""
        named, generated = prepare(specs, if_exists)
        at = self.now(now)

        fast = len(generated) == len(named)

        def steps(first: bool) -> Generator[Step, Rows, Created]:
            return create_steps(self.q, named, if_exists, at, generated, fast=fast and first)

        if connection is None:
            out, created = self._db.run(steps, single_first=fast)
        else:
            self._db.check_open()
            out, created = in_transaction(connection, steps(True))
        self._after_create(created)
        return out

    async def create_async(
        self,
        spec: TaskSpec,
        *,
        if_exists: IfExists = "error",
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> Task:
        """``create`` for async code; with ``connection`` (your psycopg
        ``AsyncConnection``) the task is written in your transaction."""
        out = await self.create_many_async([spec], if_exists=if_exists, connection=connection)
        return out[0]

    async def create_many_async(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        connection: psycopg.AsyncConnection[Any] | None = None,
    ) -> builtins.list[Task]:
        """``create_many`` for async code; ``connection`` as in ``create_async``."""
        if connection is None:
            return await super().create_many_async(specs, if_exists=if_exists)
        named, generated = prepare(specs, if_exists)
        self._db.check_open()
        fast = len(generated) == len(named)
        steps = create_steps(self.q, named, if_exists, self.now(), generated, fast=fast)
        out, created = await in_transaction_async(connection, steps)
        self._after_create(created)
        return out

    # -- workers --------------------------------------------------------------------------------

    def _finish(
        self,
        cur: Cursor,
        items: Sequence[Mapping[str, Any]],
        now: float,
        worker: str | None = None,
    ) -> dict[int, dict[str, Any]]:
        """Move live tasks to the finished table (one statement); their rows by seq.

        Each item: ``seq``, ``queue``, ``status`` and the new ``result``, ``progress``,
        ``history``, ``last_error`` (``None``: keep the stored one); with ``worker``
        also ``attempts``, and only the tasks still held by ``worker`` at those
        attempts move (``FINISH``). An item's ``counter`` (from ``timed_tally``: an
        attempt ended by complete or fail, with its run time and lateness) is what it
        counts; without one, its status's plain tally.
        """
        if not items:
            return {}
        cur.execute(self.q.FINISH, self._finish_params(items, now, worker))
        return {int(r["seq"]): r for r in cur.fetchall()}

    def _finish_params(
        self, items: Sequence[Mapping[str, Any]], now: float, worker: str | None
    ) -> dict[str, Any]:
        """``FINISH``'s parameters for ``items`` (see ``_finish``), with their tally rows."""
        rows = [[i.get(key) for key in FINISH_FIELDS] for i in items]
        params: dict[str, Any] = {"now": now, "worker": worker, "items": json.dumps(rows)}
        params.update(
            self.tally_rows(
                (
                    (i["seq"], i["queue"], i.get("counter") or _FINISH_TALLY[i["status"]])
                    for i in items
                    if i["status"] in _FINISH_TALLY
                ),
                now,
            )
        )
        return params

    def _failure_write(
        self,
        cur: Cursor,
        row: Mapping[str, Any],
        decision: tr.AfterFailure,
        entry: AttemptRecord,
        now: float,
        wake: builtins.list[tuple[str, float]],
        *,
        timed: bool,
    ) -> dict[str, Any] | None:
        """Write ``decision`` for the failed attempt in ``row``; the row after, if it stayed live
        (``timed``: the attempt ended by fail, not by a lapsed lease)."""
        history = history_with(row["history"], entry)
        error = encode_error(decision.error)
        if decision.dead:
            self._finish(
                cur,
                [
                    {
                        "seq": row["seq"],
                        "queue": row["queue"],
                        "status": decision.status.value,
                        "history": history,
                        "last_error": error,
                        "counter": _counter(row, Tally.DEAD, now, timed),
                    }
                ],
                now,
            )
            return None
        cur.execute(
            self.q.RETRY,
            {
                "status": decision.status.value,
                "history": history,
                "last_error": error,
                "last_delay": decision.delay,
                "due_at": decision.due_at,
                "now": now,
                "seq": row["seq"],
            },
        )
        after = cur.fetchone()
        self.tally(cur, [(row["queue"], _counter(row, Tally.RETRIED, now, timed))], now)
        wake.append((row["queue"], decision.due_at))
        return after

    def _reclaim(
        self,
        cur: Cursor,
        queues: Sequence[str],
        now: float,
        wake: builtins.list[tuple[str, float]],
        reclaimed: builtins.list[Reclaimed],
    ) -> None:
        cur.execute(self.q.SELECT_EXPIRED, {"queues": builtins.list(queues), "now": now})
        for row in cur.fetchall():
            decision = tr.lease_expired(
                attempts=row["attempts"],
                max_retries=row["max_retries"],
                backoff=row["backoff"],
                last_delay=row["last_delay"],
                lease_expires_at=row["lease_expires_at"],
                now=now,
            )
            entry = AttemptRecord(
                row["attempts"], row["started_at"], decision.base, Outcome.LOST,
                tr.LEASE_EXPIRED_ERROR, row["lease_owner"],
            )  # fmt: skip
            self._failure_write(cur, row, decision, entry, now, wake, timed=False)
            reclaimed.append(
                Reclaimed(
                    row["queue"], row["handler"], row["id"], row["attempts"],
                    row["traceparent"], decision.dead,
                )
            )  # fmt: skip

    def _lease_in(
        self,
        cur: Cursor,
        names: Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        capacity: Mapping[str, float] | None,
        at: float,
        wake: builtins.list[tuple[str, float]],
        reclaimed: builtins.list[Reclaimed],
        held: dict[str, _Leased] | None = None,
    ) -> builtins.list[Task]:
        """The lease's statements in the transaction of ``cur``; the leases it reclaims go
        to ``reclaimed``, what was leased into ``held``."""
        q = self.q
        self._reclaim(cur, names, at, wake, reclaimed)
        open_ = self.unpaused(cur, names)
        if not open_:
            return []
        chunk = min(limit + 4, _MAX_CHUNK)
        params: dict[str, Any] = {
            "queues": open_,
            "now": at,
            "chunk": chunk,
            "priority": -(2**63),
            "seq": -1,
        }
        picked: builtins.list[tuple[Task, tr.Leased]] = []
        raw: dict[int, Mapping[str, Any]] = {}
        corrupt: builtins.list[dict[str, Any]] = []
        while len(picked) < limit:
            cur.execute(q.SELECT_DUE, params)
            rows = cur.fetchall()
            for row in rows:
                try:
                    task = decode(row, strict=True)
                except CorruptField as exc:
                    corrupt.append(
                        {
                            "seq": row["seq"],
                            "queue": row["queue"],
                            "status": TaskStatus.FAILED.value,
                            "last_error": encode_error(tr.corrupt_error(str(exc))),
                        }
                    )
                    continue
                if not task.fits(capacity):
                    continue
                picked.append((task, tr.lease(task.attempts, at, lease_seconds)))
                raw[task.sequence] = row
                if len(picked) >= limit:
                    break
            if len(rows) < chunk:
                break
            params["priority"], params["seq"] = rows[-1]["priority"], rows[-1]["seq"]
        self._finish(cur, corrupt, at)
        if not picked:
            return []
        first = picked[0][1]
        cur.execute(
            q.LEASE,
            {
                "status": first.status.value,
                "worker": worker_id,
                "lease_expires_at": first.lease_expires_at,
                "started_at": first.started_at,
                "now": at,
                "seqs": [t.sequence for t, _ in picked],
                "attempts": [leased.attempts for _, leased in picked],
            },
        )
        if held is not None:
            for task, leased in picked:
                read = raw[task.sequence]
                held[task.id] = _Leased(
                    task.sequence, task.queue, worker_id, leased.attempts, read["max_retries"],
                    read["backoff"], read["last_delay"], read["history"], leased.started_at,
                    read["due_at"],
                )  # fmt: skip
        return [
            task.replace(
                status=leased.status,
                attempts=leased.attempts,
                lease_owner=worker_id,
                lease_expires_at=leased.lease_expires_at,
                started_at=leased.started_at,
                updated_at=at,
            )
            for task, leased in picked
        ]

    def _wake_others(self, cur: Cursor, wake: Sequence[tuple[str, float]]) -> None:
        if wake:
            cur.execute(self.q.NOTIFY, {"channel": self.q.channel, "payload": payload(wake)})

    def lease(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> builtins.list[Task]:
        return self.complete_then_lease(
            [], queues, worker_id, limit=limit, lease_seconds=lease_seconds,
            capacity=capacity, now=now,
        )[1]  # fmt: skip

    def complete_then_lease(
        self,
        items: Sequence[tuple[str, JSONValue]],
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[Task]]:
        """See ``Store.complete_then_lease``: both in one transaction (one commit).

        When this store leased every task of ``items`` (the worker's case), one round
        trip: the completions, decided from what the lease read of those tasks, the
        lease's checks and the lease itself go in one pipeline (``_pipelined``). The
        locked path (``_locked``: the rows read and locked first) takes the rest, and
        what the checks find: lapsed leases to reclaim, due tasks whose needs must be
        checked against ``capacity``, a leased task that cannot be decoded.
        """
        encoded = encode_results(items)
        names = lease_call_args(queues, worker_id, limit, lease_seconds)
        at = self.now(now)
        finishing = self._held_items(encoded, worker_id, at)
        ask = _LeaseAsk(names, worker_id, limit, lease_seconds, capacity, at)
        if finishing is None:
            out = self._locked(encoded, ask)
        else:
            out = self._pipelined(encoded, finishing, ask)
        self._pruner.tick(at)
        if encoded and self.vacuum_every is not None:
            self._maybe_vacuum(sum(out[0]))
        return out

    def _held_items(
        self, encoded: Sequence[tuple[str, str]], worker_id: str, at: float
    ) -> builtins.list[dict[str, Any]] | None:
        """``FINISH`` items completing ``encoded`` (each task once), decided by
        ``_transitions.complete`` from what this store's lease read of them; ``None``
        when it did not lease one of them for ``worker_id`` (then the rows are read)."""
        out: builtins.list[dict[str, Any]] = []
        seen: set[str] = set()
        for tid, enc in encoded:
            known = self._leased.get(tid)
            if known is None or known.worker != worker_id:
                return None
            if tid in seen:
                continue
            seen.add(tid)
            done = tr.complete(known.attempts, known.started_at, at, worker_id)
            out.append(
                {
                    "seq": known.seq,
                    "queue": known.queue,
                    "attempts": known.attempts,
                    "status": done.status.value,
                    "result": enc,
                    "progress": done.progress,
                    "history": history_with(known.history, done.entry),
                    "counter": known.counter(Tally.DONE, at),
                }
            )
        return out

    def _pipelined(
        self,
        encoded: Sequence[tuple[str, str]],
        finishing: Sequence[Mapping[str, Any]],
        ask: _LeaseAsk,
    ) -> tuple[builtins.list[bool], builtins.list[Task]]:
        """``complete_then_lease`` in one round trip: ``FINISH`` (held by the worker
        at the attempts leased), ``LEASE_CHECKS`` and ``LEASE_DUE`` in one pipeline;
        then the locked path for what the checks found (``_after_checks``)."""
        q, at, worker_id = self.q, ask.at, ask.worker
        # The status and times of every lease of this call.
        how = tr.lease(0, at, ask.lease_seconds)
        lease = {
            "queues": builtins.list(ask.names),
            "now": at,
            "gated": ask.capacity is not None,
            "paused_prefix": q.PAUSED_PREFIX,
            "limit": ask.limit,
            "status": how.status.value,
            "worker": worker_id,
            "lease_expires_at": how.lease_expires_at,
            "started_at": how.started_at,
        }
        finish = self._finish_params(finishing, at, worker_id) if finishing else None
        prune = finish is not None and self.tallies_prune_due(at)

        def body(conn: Connection) -> Callable[[], tuple[Rows, dict[str, Any], Rows]]:
            done = conn.cursor()
            if finish is not None:
                done.execute(q.FINISH, finish)
            if prune:
                conn.cursor().execute(q.PRUNE_TALLIES, self.tallies_cutoff(at))
            checks, due = conn.cursor(), conn.cursor()
            checks.execute(q.LEASE_CHECKS, lease)
            due.execute(q.LEASE_DUE, lease)

            def read() -> tuple[Rows, dict[str, Any], Rows]:
                return (
                    done.fetchall() if finish is not None else [],
                    checks.fetchone() or {},
                    due.fetchall(),
                )

            return read

        finished, found, rows = self._db.pipeline(body)
        moved = {r["id"] for r in finished}
        flags: builtins.list[bool] = []
        answered: set[str] = set()
        for tid, _ in encoded:
            flags.append(tid in moved and tid not in answered)
            answered.add(tid)
        leased: builtins.list[Task] = []
        held: dict[str, _Leased] = {}
        corrupt: builtins.list[tuple[Mapping[str, Any], str]] = []
        for row in rows:
            try:
                task = decode(row, strict=True)
            except CorruptField as exc:
                corrupt.append((row, str(exc)))
                continue
            leased.append(task)
            held[task.id] = _Leased(
                task.sequence, task.queue, worker_id, task.attempts, row["max_retries"],
                row["backoff"], row["last_delay"], row["history"], how.started_at,
                row["due_at"],
            )  # fmt: skip
        more = bool(found.get("expired") or found.get("gated"))
        if corrupt or more:
            rest = dataclasses.replace(ask, limit=ask.limit - len(leased))
            leased += self._after_checks(corrupt, more, rest, held)
        self._remember(held, [tid for tid, _ in encoded])
        return flags, leased

    def _after_checks(
        self,
        corrupt: Sequence[tuple[Mapping[str, Any], str]],
        more: bool,
        ask: _LeaseAsk,
        held: dict[str, _Leased],
    ) -> builtins.list[Task]:
        """The locked path after a pipelined lease: dead-letter the ``corrupt`` tasks it
        took (as the locked lease does, from what they held before it), and when
        ``more``, reclaim lapsed leases and lease up to ``ask.limit`` more (capacities
        checked). The tasks leased here are added to ``held``."""
        at, worker_id = ask.at, ask.worker
        reclaimed: builtins.list[Reclaimed] = []
        extra: dict[str, _Leased] = {}

        def body(cur: Cursor) -> builtins.list[Task]:
            reclaimed.clear()
            extra.clear()
            for row, _ in corrupt:
                cur.execute(
                    self.q.UNLEASE,
                    {
                        "seq": row["seq"],
                        "worker": worker_id,
                        "attempts": row["was_attempts"],
                        "lease_owner": row["was_lease_owner"],
                        "started_at": row["was_started_at"],
                        "updated_at": row["was_updated_at"],
                    },
                )
            self._finish(
                cur,
                [
                    {
                        "seq": row["seq"],
                        "queue": row["queue"],
                        "status": TaskStatus.FAILED.value,
                        "last_error": encode_error(tr.corrupt_error(detail)),
                    }
                    for row, detail in corrupt
                ],
                at,
            )
            if not more:
                return []
            wake: builtins.list[tuple[str, float]] = []
            got = self._lease_in(
                cur, ask.names, worker_id, max(0, ask.limit), ask.lease_seconds, ask.capacity,
                at, wake, reclaimed, extra,
            )  # fmt: skip
            self._wake_others(cur, wake)
            return got

        got = self._write(body)
        self._after_reclaim(reclaimed)
        held.update(extra)
        return got

    def _locked(
        self,
        encoded: Sequence[tuple[str, str]],
        ask: _LeaseAsk,
    ) -> tuple[builtins.list[bool], builtins.list[Task]]:
        """``complete_then_lease`` in one transaction that reads and locks the rows first."""
        worker_id, at = ask.worker, ask.at
        reclaimed: builtins.list[Reclaimed] = []
        held: dict[str, _Leased] = {}

        def body(cur: Cursor) -> tuple[builtins.list[bool], builtins.list[Task]]:
            wake: builtins.list[tuple[str, float]] = []
            reclaimed.clear()  # a transaction run again reclaims afresh
            held.clear()  # and starts afresh what it leased
            done = self._complete_in(cur, encoded, worker_id, at) if encoded else {}
            flags = [tid in done for tid, _ in encoded]
            leased = self._lease_in(
                cur, ask.names, worker_id, ask.limit, ask.lease_seconds, ask.capacity, at, wake,
                reclaimed, held,
            )  # fmt: skip
            self._wake_others(cur, wake)
            return flags, leased

        out = self._write(body)
        self._after_reclaim(reclaimed)
        self._remember(held, [tid for tid, _ in encoded])
        return out

    def _maybe_vacuum(self, finished: int) -> None:
        """Count ``finished`` tasks; start a vacuum of the hot table when one is due.

        Due once this store has finished ``_vacuum_rows`` tasks since its last
        vacuum (a tenth of the hot table's live rows, at least ``_VACUUM_MIN_ROWS``),
        or ``vacuum_every`` seconds after it: the dead row versions between two
        vacuums stay a bounded fraction of the live ones at any throughput.
        """
        self._finished_since_vacuum += finished
        if self._finished_since_vacuum < self._vacuum_rows and time.monotonic() < self._next_vacuum:
            return
        if not self._vacuuming.acquire(blocking=False):
            return
        self._finished_since_vacuum = 0
        self._next_vacuum = time.monotonic() + (self.vacuum_every or 0.0)

        def run() -> None:
            try:
                self._db.autocommit(self.q.VACUUM_HOT)
                rows = self._read(lambda cur: cur.execute(self.q.LIVE_ROWS).fetchall())
                live = float(rows[0]["n"]) if rows else 0.0
                self._vacuum_rows = max(_VACUUM_MIN_ROWS, int(live * _VACUUM_CHURN))
                if self._indexes is not None:
                    self._indexes.after_vacuum()  # logs, never raises
            except Exception as exc:  # housekeeping: a worker never fails for it
                logger.warning("resile: VACUUM of %s failed: %s", self.q.hot, exc)
            finally:
                self._vacuuming.release()

        threading.Thread(target=run, name="resile-pg-vacuum", daemon=True).start()

    def renew(
        self,
        task_id: str,
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> bool:
        return task_id in self.renew_many(
            [task_id], worker_id, lease_seconds=lease_seconds, now=now
        )

    def renew_many(
        self,
        task_ids: Iterable[str],
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> set[str]:
        check_lease_args(1, lease_seconds)
        ids = builtins.list(dict.fromkeys(task_ids))
        if not ids:
            return set()
        at = self.now(now)
        params = {
            "lease_expires_at": at + float(lease_seconds),
            "now": at,
            "worker": worker_id,
            "ids": ids,
        }

        def body(cur: Cursor) -> set[str]:
            cur.execute(self.q.RENEW, params)
            return {r["id"] for r in cur.fetchall()}

        return self._write(body)

    def _held(self, cur: Cursor, ids: Sequence[str], worker_id: str) -> dict[str, dict[str, Any]]:
        """The rows of ``ids`` that ``worker_id`` holds, locked."""
        cur.execute(self.q.SELECT_HELD, {"ids": builtins.list(ids), "worker": worker_id})
        return {r["id"]: r for r in cur.fetchall()}

    def _complete_in(
        self,
        cur: Cursor,
        encoded: Sequence[tuple[str, str]],
        worker_id: str,
        at: float,
    ) -> dict[str, dict[str, Any]]:
        """``DOING -> DONE`` for the held ones of ``encoded``; the finished rows by id."""
        held = self._held(cur, [tid for tid, _ in encoded], worker_id)
        items: builtins.list[dict[str, Any]] = []
        seen: set[str] = set()
        for tid, enc in encoded:
            row = held.get(tid)
            if row is None or tid in seen:
                continue
            seen.add(tid)
            done = tr.complete(row["attempts"], row["started_at"], at, worker_id)
            items.append(
                {
                    "seq": row["seq"],
                    "queue": row["queue"],
                    "status": done.status.value,
                    "result": enc,
                    "progress": done.progress,
                    "history": history_with(row["history"], done.entry),
                    "counter": _counter(row, Tally.DONE, at, True),
                }
            )
        rows = self._finish(cur, items, at)
        return {r["id"]: r for r in rows.values()}

    def complete(
        self,
        task_id: str,
        worker_id: str,
        result: JSONValue = None,
        *,
        now: float | None = None,
    ) -> Task | None:
        return self.complete_many([(task_id, result)], worker_id, now=now)[0]

    def complete_many(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[Task | None]:
        """``complete`` for several ``(task_id, result)``, in one transaction."""
        encoded = encode_results(items)
        if not encoded:
            return []
        at = self.now(now)
        done = self._write(lambda cur: self._complete_in(cur, encoded, worker_id, at))
        self._remember({}, [tid for tid, _ in encoded])
        if self.vacuum_every is not None:
            self._maybe_vacuum(len(done))
        answered: set[str] = set()
        out: builtins.list[Task | None] = []
        for tid, _ in encoded:
            row = done.get(tid)
            out.append(None if row is None or tid in answered else decode(row, strict=False))
            answered.add(tid)
        return out

    def complete_many_flags(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[bool]:
        """See ``Store.complete_many_flags``: one transaction, no task decoded."""
        encoded = encode_results(items)
        if not encoded:
            return []
        at = self.now(now)
        done = self._write(lambda cur: self._complete_in(cur, encoded, worker_id, at))
        self._remember({}, [tid for tid, _ in encoded])
        if self.vacuum_every is not None:
            self._maybe_vacuum(len(done))
        answered: set[str] = set()
        flags: builtins.list[bool] = []
        for tid, _ in encoded:
            flags.append(tid in done and tid not in answered)
            answered.add(tid)
        return flags

    def fail(
        self,
        task_id: str,
        worker_id: str,
        error: TaskError | BaseException,
        *,
        permanent: bool = False,
        outcome: Outcome = Outcome.ERROR,
        delay: float | None = None,
        now: float | None = None,
    ) -> Task | None:
        err, delay, kind = fail_args(error, delay, outcome)
        at = self.now(now)
        known = self._leased.pop(task_id, None)
        if known is not None and known.worker == worker_id:
            fast = self._retry_held(known, task_id, err, kind, at, bool(permanent), delay)
            if fast is not None:
                return fast

        def body(cur: Cursor) -> Task | None:
            row = self._held(cur, [task_id], worker_id).get(task_id)
            if row is None:
                return None
            decision = tr.after_failure(
                attempts=row["attempts"],
                max_retries=row["max_retries"],
                backoff=row["backoff"],
                last_delay=row["last_delay"],
                error=err,
                base=at,
                permanent=bool(permanent),
                delay=delay,
            )
            entry = AttemptRecord(row["attempts"], row["started_at"], at, kind, err, worker_id)
            wake: builtins.list[tuple[str, float]] = []
            after = self._failure_write(cur, row, decision, entry, at, wake, timed=True)
            self._wake_others(cur, wake)
            return self._get(cur, task_id) if after is None else decode(after, strict=False)

        return self._write(body)

    def _retry_held(
        self,
        known: _Leased,
        task_id: str,
        err: TaskError,
        kind: Outcome,
        at: float,
        permanent: bool,
        delay: float | None,
    ) -> Task | None:
        """``fail`` of a task this store leased, when it is retried: one statement, one round
        trip (no ``BEGIN``, no row read, no ``COMMIT``). ``None``: not decided here (a dead
        letter, or the task no longer held as leased): the caller takes the locked path."""
        decision = tr.after_failure(
            attempts=known.attempts,
            max_retries=known.max_retries,
            backoff=known.backoff,
            last_delay=known.last_delay,
            error=err,
            base=at,
            permanent=permanent,
            delay=delay,
        )
        if decision.dead:
            return None
        history = history_with(
            known.history,
            AttemptRecord(known.attempts, known.started_at, at, kind, err, known.worker),
        )
        params = {
            "status": decision.status.value,
            "history": history,
            "last_error": encode_error(decision.error),
            "last_delay": decision.delay,
            "due_at": decision.due_at,
            "now": at,
            "seq": known.seq,
            "worker": known.worker,
            "attempts": known.attempts,
            **self.tally_rows([(known.seq, known.queue, known.counter(Tally.RETRIED, at))], at),
            "channel": self.q.channel,
            "payload": payload([(known.queue, decision.due_at)]),
        }
        if history is None:  # the stored history is unreadable: keep it as it is
            return None

        def body(cur: Cursor) -> builtins.list[dict[str, Any]]:
            cur.execute(self.q.RETRY_HELD, params)
            return cur.fetchall()

        rows = self._db.bare(body)
        return decode(rows[0], strict=False) if rows else None

    def _remember(self, held: Mapping[str, _Leased], finished: Iterable[str]) -> None:
        """Keep what a lease read of the tasks it leased (for ``fail``); forget ``finished``."""
        cache = self._leased
        for tid in finished:
            cache.pop(tid, None)
        cache.update(held)
        while len(cache) > _LEASED_KEPT:  # leases that lapsed or were completed elsewhere
            cache.pop(next(iter(cache)), None)

    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        self._leased.pop(task_id, None)
        at = self.now(now)

        def body(cur: Cursor) -> Task | None:
            row = self._held(cur, [task_id], worker_id).get(task_id)
            if row is None:
                return None
            back = tr.release(row["attempts"], at)
            cur.execute(
                self.q.RELEASE,
                {
                    "status": back.status.value,
                    "due_at": back.due_at,
                    "attempts": back.attempts,
                    "now": at,
                    "seq": row["seq"],
                },
            )
            after = cur.fetchone()
            self._wake_others(cur, [(row["queue"], back.due_at)])
            return None if after is None else decode(after, strict=False)

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    # -- anyone ---------------------------------------------------------------------------------

    def _cancel(self, task_id: str, at: float) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute(self.q.SELECT_LIVE_FOR_UPDATE, {"id": task_id})
            row = cur.fetchone()
            if row is None:
                return False
            done = tr.cancel(
                row["status"],
                attempts=row["attempts"],
                started_at=row["started_at"],
                now=at,
                worker=row["lease_owner"],
            )
            if done is None:
                return False
            history = None if done.entry is None else history_with(row["history"], done.entry)
            self._finish(
                cur,
                [
                    {
                        "seq": row["seq"],
                        "queue": row["queue"],
                        "status": done.status.value,
                        "history": history,
                    }
                ],
                at,
            )
            return True

        return self._write(body)

    def _set_field(
        self, task_id: str, column: str, value: float | str, worker_id: str | None, at: float
    ) -> bool:
        query = self.q.SET_FIELD[(column, worker_id is not None)]
        params = {"value": value, "now": at, "id": task_id, "worker": worker_id}

        def body(cur: Cursor) -> bool:
            cur.execute(query, params)
            return cur.rowcount == 1

        return self._write(body)

    def get_checkpoint(self, task_id: str) -> JSONValue:
        def body(cur: Cursor) -> Any:
            cur.execute(self.q.SELECT_CHECKPOINT, {"id": task_id})
            return cur.fetchone()

        row = self._read(body)
        if row is None or row["checkpoint"] is None:
            return None
        try:
            return json.loads(row["checkpoint"])
        except (TypeError, ValueError):
            return None

    def _get(self, cur: Cursor, task_id: str) -> Task | None:
        cur.execute(self.q.SELECT_BY_ID, {"id": task_id})
        row = cur.fetchone()
        return None if row is None else decode(row, strict=False)

    def get(self, task_id: str) -> Task | None:
        return self._read(lambda cur: self._get(cur, task_id))

    def list(
        self,
        *,
        queue: str | None = None,
        status: TaskStatus | str | Collection[TaskStatus | str] | None = None,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
        order: str = "created",
        descending: bool = False,
        after_key: float | None = None,
    ) -> builtins.list[Task]:
        statuses = check_list_args(status, limit, offset)
        check_list_order(order, descending, after, after_key)
        statement = self.q.list_statement(
            order, descending, queue=queue is not None, statuses=statuses, after=after is not None
        )
        params: dict[str, Any] = {
            "queue": queue,
            "after": None if after is None else int(after),
            "after_key": None if after_key is None else float(after_key),
            "limit": limit,
            "offset": offset,
        }

        def body(cur: Cursor) -> Rows:
            cur.execute(statement, params)
            return cur.fetchall()

        out: builtins.list[Task] = []
        for row in self._read(body):
            try:
                out.append(decode(row, strict=False))
            except CorruptField:  # an unknown status: not a task this version can show
                continue
        return out

    def stats(self, queue: str | None = None) -> dict[TaskStatus, int]:
        def body(cur: Cursor) -> Rows:
            cur.execute(self.q.STATS, {"queue": queue})
            return cur.fetchall()

        counts = dict.fromkeys(TaskStatus, 0)
        for row in self._read(body):
            try:
                counts[TaskStatus(row["status"])] += int(row["n"])
            except ValueError:
                continue
        return counts

    def queues(self) -> builtins.list[str]:
        def body(cur: Cursor) -> Rows:
            cur.execute(self.q.QUEUES)
            return cur.fetchall()

        return [r["queue"] for r in self._read(body)]

    def counts(self) -> dict[str, dict[TaskStatus, int]]:
        def body(cur: Cursor) -> Rows:
            cur.execute(self.q.COUNTS)
            return cur.fetchall()

        return counts_by_queue((r["queue"], r["status"], r["n"]) for r in self._read(body))

    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        wait = check_seconds(delay, "requeue: delay")
        at = self.now(now)
        back = tr.requeue(wait, at)
        params = {
            "status": back.status.value,
            "attempts": back.attempts,
            "last_delay": back.last_delay,
            "due_at": back.due_at,
            "now": at,
            "id": task_id,
        }

        def body(cur: Cursor) -> Task | None:
            cur.execute(self.q.REQUEUE, params)
            row = cur.fetchone()
            if row is None:
                return None
            self._wake_others(cur, [(row["queue"], back.due_at)])
            return decode(row, strict=False)

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    def make_due(self, task_id: str, *, now: float | None = None) -> Task | None:
        at = self.now(now)

        def body(cur: Cursor) -> Task | None:
            cur.execute(self.q.MAKE_DUE, {"id": task_id, "now": at})
            row = cur.fetchone()
            if row is None:
                return None
            self._wake_others(cur, [(row["queue"], at)])
            return decode(row, strict=False)

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    def delete(self, task_id: str) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute(self.q.DELETE, {"id": task_id})
            return len(cur.fetchall()) == 1

        return bool(self._write(body))

    def _purge_batches(
        self, statuses: Sequence[TaskStatus], cutoff: float, queue: str | None
    ) -> int:
        """Delete finished tasks in batches of ``_PRUNE_BATCH``, each its own transaction."""
        params = {
            "statuses": [s.value for s in statuses],
            "cutoff": cutoff,
            "queue": queue,
            "batch": _PRUNE_BATCH,
        }

        def body(cur: Cursor) -> int:
            cur.execute(self.q.PURGE_BATCH, params)
            row = cur.fetchone()
            return int(row["n"]) if row else 0

        total = 0
        while True:
            n = self._write(body)
            total += n
            if n < _PRUNE_BATCH:
                return total

    def purge(
        self,
        older_than: float,
        *,
        statuses: Collection[TaskStatus | str] = TERMINAL_STATUSES,
        queue: str | None = None,
        now: float | None = None,
    ) -> int:
        """See ``Store.purge``; deleted in batches (short transactions), not in one step."""
        age = check_seconds(older_than, "purge: older_than")
        chosen = purge_statuses(statuses)
        if not chosen:
            return 0
        return self._purge_batches(chosen, self.now(now) - age, queue)

    def prune(self, *, now: float | None = None) -> int:
        """Apply retention now: delete finished tasks past ``retention`` / ``failed_retention``.

        ``lease`` calls it every 30 seconds of the store's clock. Returns how many
        were deleted.
        """
        at = self.now(now)
        return sum(
            self._purge_batches(statuses, at - kept, None)
            for statuses, kept in retention_classes(self.retention, self.failed_retention)
        )

    def oldest_due_at(self, queue: str) -> float | None:
        name = check_queue(queue, "oldest_due_at")

        def body(cur: Cursor) -> float | None:
            cur.execute(self.q.OLDEST_DUE, {"queue": name})
            row = cur.fetchone()
            return None if row is None or row["due_at"] is None else float(row["due_at"])

        return self._read(body)

    def next_due_at(
        self,
        queues: str | Sequence[str],
        *,
        capacity: Mapping[str, float] | None = None,
    ) -> float | None:
        asked = builtins.list(normalize_queues(queues))
        gated = capacity is not None

        def body(cur: Cursor) -> float | None:
            names = self.unpaused(cur, asked)
            if not names:
                return None
            cur.execute(self.q.NEXT_DUE, {"queues": names, "gated": gated})
            row = cur.fetchone()
            found = [float(v) for v in (row or {}).values() if v is not None]
            if capacity is not None:
                # Tasks with needs are few (GPU work); check them one by one.
                cur.execute(self.q.GATED_DUE, {"queues": names})
                for r in cur.fetchall():
                    try:
                        needs = json.loads(r["resources"])
                        fits = all(capacity.get(k, 0.0) >= float(v) for k, v in needs.items())
                    except (TypeError, ValueError, AttributeError):
                        fits = True  # lease will dead-letter it: wake for that
                    if fits:
                        found.append(float(r["due_at"]))
            return min(found) if found else None

        # A hint for a timer: its reads need no common snapshot (no BEGIN / COMMIT).
        return self._db.bare(body)

    # -- wake-ups -------------------------------------------------------------------------------

    def watch(self, queues: Sequence[str], wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` when a NOTIFY says work on ``queues`` may be due (``listen=True``).

        A helper thread holds a ``LISTEN`` connection; it is listening when this
        returns (or, when the server is unreachable, the thread keeps trying and
        wakes the worker every ``FALLBACK_POLL`` seconds meanwhile). Returns
        ``None`` with ``listen=False``: workers poll.
        """
        if not self.listen:
            return None
        self._db.check_open()

        def forget(w: Watcher) -> None:
            with self._db.lock, contextlib.suppress(ValueError):
                self._watchers.remove(w)

        watcher = Watcher(self._db, set(normalize_queues(queues)), wake, forget)
        with self._db.lock:
            self._watchers.append(watcher)
        watcher.start()
        return watcher.stop
