"""The embedded task store: one SQLite file, WAL mode, no server.

* Every contract method is one ``BEGIN IMMEDIATE`` transaction: it takes the
  database's write lock up front, so two processes never interleave a
  read-modify-write. ``PRAGMA busy_timeout`` makes a writer wait for the lock;
  when SQLite still answers ``database is locked`` the whole transaction is
  retried with resile's own backoff (``Retrying``) for up to ``lock_timeout``
  seconds.
* One connection per store and per process, guarded by a lock: threads share
  it; a forked child opens its own on first use. Several worker processes on
  one file are safe (SQLite's file locks).
* ``synchronous=NORMAL`` by default: in WAL mode a committed transaction
  survives a crash of the process (``kill -9``); pass ``?synchronous=full`` to
  also survive power loss, at some cost in throughput.
* The WAL is bounded: SQLite checkpoints it every ``wal_limit`` bytes
  (``wal_autocheckpoint``) and truncates it back to that size
  (``journal_size_limit``); every ``CHECKPOINT_EVERY`` seconds after a write the
  store also tries a ``wal_checkpoint(TRUNCATE)`` that never waits for a lock,
  so an idle store's WAL shrinks to nothing and a disk that filled up gets its
  space back.
* A write SQLite cannot do now (disk full, I/O error, still locked after
  ``lock_timeout``) raises ``resile.errors.StoreUnavailable`` naming the file
  and what to do; the store goes on by itself once the cause is gone.

Due tasks are found without scanning delayed ones, as a Redis store does with
two sorted sets: a ``ready`` flag splits ``PENDING`` rows into *delayed*
(indexed by ``(queue, due_at)``) and *ready* (indexed by
``(queue, priority, seq)``). ``lease`` first flips the delayed rows that have
come due to ready, then reads ready rows in ``(priority, seq)`` order.

This module is the I/O only: every statement is named in
``resile.queue.store._sqlite_sql``, every transition is decided by
``resile.queue._transitions`` (inside the same transaction as the read it
depends on), and rows become tasks through ``resile.queue.store._codec``.
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from resile import _time
from resile.backoff import Exponential
from resile.errors import DuplicateTask, StoreUnavailable
from resile.queue import _transitions as tr
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    HISTORY_LIMIT,
    SCHEDULE_PREFIX,
    SCHEMA_VERSION,
    TALLY_WINDOW,
    TERMINAL_STATUSES,
    Outcome,
    Tally,
    TaskStatus,
)
from resile.queue.registry import GONE_KEPT, WorkerRecord
from resile.queue.store import _sqlite_sql as sql
from resile.queue.store._codec import (
    CorruptField,
    created_task,
    decode,
    encode_error,
    encode_new,
    has_needs,
    history_with,
)
from resile.queue.store.base import (
    IfExists,
    Reclaimed,
    Store,
    check_create_args,
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
    tally_counts,
    tally_range,
    timed_tally,
    with_trace_context,
)
from resile.queue.task import (
    AttemptRecord,
    JSONValue,
    Task,
    TaskError,
    TaskSpec,
    new_task_id,
)
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = ["SQLiteStore"]

T = TypeVar("T")

# The most ready rows one query of ``lease`` reads per queue.
_MAX_CHUNK = 256
#: The default bound of the WAL file, in bytes (``wal_limit``).
WAL_LIMIT = 1 << 20
#: Seconds between two tries of a truncating checkpoint (each after a write).
CHECKPOINT_EVERY = 10.0
# What SQLite answers when it cannot write now, and what the user can do about it.
_UNAVAILABLE = (
    (("full",), "free space on its file system; the store goes on by itself once there is room"),
    (
        ("locked", "busy"),
        "another connection held the write lock for longer than lock_timeout; "
        "try again, or raise lock_timeout",
    ),
    (
        ("disk i/o", "unable to open", "readonly", "read-only"),
        "check the file system and the file's permissions; the store goes on once it can write",
    ),
)


class _Locked(Exception):
    """``database is locked`` / ``busy``, wrapped so that only it is retried."""

    def __init__(self, error: sqlite3.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _locked_as_retryable(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.OperationalError as exc:
        if _is_locked(exc):
            raise _Locked(exc) from exc
        raise


def _advice(exc: sqlite3.OperationalError) -> str | None:
    """What to do when ``exc`` means "cannot write now"; None for any other error."""
    msg = str(exc).lower()
    for words, advice in _UNAVAILABLE:
        if any(w in msg for w in words):
            return advice
    return None


def _decode(row: sqlite3.Row, strict: bool = True) -> Task:
    """Row -> Task through the one codec (``strict``: see ``resile.queue.store._codec``)."""
    return decode(dict(zip(row.keys(), row, strict=True)), strict)


class SQLiteStore(Store):
    """A ``Store`` in one SQLite database file.

    Args:
        path: the database file (created when missing), or ``":memory:"`` for
            a private in-memory database (one process; for tests).
        clock: epoch-time source for ``now=None``.
        busy_timeout: seconds a transaction waits for another writer's lock
            (``PRAGMA busy_timeout``).
        lock_timeout: seconds during which a transaction that still finds the
            database locked is retried with backoff before the error is raised.
        synchronous: ``"NORMAL"`` (default: durable across process crashes)
            or ``"FULL"`` (also across power loss).
        wal_limit: bytes the WAL file may reach before SQLite checkpoints it
            and truncates it back (``wal_autocheckpoint``,
            ``journal_size_limit``); at least 65536.

    Raises:
        ValueError: a bad option, named with its value.
        sqlite3.DatabaseError: the file is not a SQLite database.
        resile.errors.StoreUnavailable: (any method) the file cannot be
            written now: disk full, I/O error, locked for longer than
            ``lock_timeout``.
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        lock_timeout: float = 30.0,
        synchronous: str = "NORMAL",
        wal_limit: int = WAL_LIMIT,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(path, str) or not path:
            raise ValueError(f"SQLiteStore: path must be a file name or ':memory:', got {path!r}")
        for name, value in (("busy_timeout", busy_timeout), ("lock_timeout", lock_timeout)):
            check_seconds(value, f"SQLiteStore: {name}")
        sync = str(synchronous).upper()
        if sync not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(
                f"SQLiteStore: synchronous must be NORMAL, FULL, EXTRA or OFF, got {synchronous!r}"
            )
        if isinstance(wal_limit, bool) or not isinstance(wal_limit, int) or wal_limit < 65536:
            raise ValueError(
                f"SQLiteStore: wal_limit must be an int of bytes >= 65536, got {wal_limit!r}"
            )
        self.wal_limit = wal_limit
        self._checkpoint_at = -float("inf")  # resile's monotonic clock: last truncating try
        self.path = path
        self._tallies_pruned = -1  # the minute the counters were last pruned
        self.memory = path == ":memory:" or path.startswith("file::memory:")
        self.url = f"sqlite:///{path}"
        self.busy_timeout = float(busy_timeout)
        self.synchronous = sync
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._retrying = Retrying(
            on=_Locked,
            backoff=Exponential(0.002, max_delay=0.25),
            stop=after_elapsed(lock_timeout),
            name=f"sqlite transaction on {path}",
            quiet=True,  # a give-up is raised as StoreUnavailable, which says it all
        )
        # Wrapped once: only ``database is locked`` / ``busy`` is retried.
        self._retry_call: Callable[[Callable[[], Any]], Any] = self._retrying(_locked_as_retryable)
        self._connect()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.

        Query options: ``busy_timeout``, ``lock_timeout`` (seconds),
        ``synchronous`` and ``wal_limit`` (bytes); keyword ``options`` override them.

        Raises:
            ValueError: not a ``sqlite:///`` URL, or an unknown option.
        """
        if not url.lower().startswith("sqlite:///"):
            raise ValueError(
                f"SQLite URL must be sqlite:///path.db (three slashes; four for an absolute "
                f"path) or sqlite:///:memory:, got {url!r}"
            )
        rest = url[len("sqlite:///") :]
        path, _, query = rest.partition("?")
        path = unquote(path)
        if not path:
            raise ValueError(f"SQLite URL {url!r} names no file")
        opts: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in ("busy_timeout", "lock_timeout"):
                try:
                    opts[key] = float(value)
                except ValueError:
                    raise ValueError(
                        f"SQLite URL {url!r}: {key} must be seconds, got {value!r}"
                    ) from None
            elif key == "synchronous":
                opts[key] = value
            elif key == "wal_limit":
                try:
                    opts[key] = int(value)
                except ValueError:
                    raise ValueError(
                        f"SQLite URL {url!r}: wal_limit must be bytes (an integer), got {value!r}"
                    ) from None
            else:
                raise ValueError(
                    f"SQLite URL {url!r}: unknown option {key!r} "
                    "(known: busy_timeout, lock_timeout, synchronous, wal_limit)"
                )
        opts.update(options)
        return cls(path, **opts)

    # -- connection and transactions ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
            uri=self.path.startswith("file:"),
        )
        conn.row_factory = sqlite3.Row
        self._conn = conn
        self._pid = os.getpid()

        def setup(c: sqlite3.Connection) -> None:
            c.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.memory:
                mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"could not switch {self.path} to WAL: {mode}")
                page = int(c.execute("PRAGMA page_size").fetchone()[0]) or 4096
                c.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")
                c.execute(f"PRAGMA wal_autocheckpoint = {max(1, self.wal_limit // page)}")
            c.execute(f"PRAGMA synchronous = {self.synchronous}")

        try:
            self._with_retry(lambda: setup(conn))
            self._tx(self._create_schema)
        except BaseException as exc:  # not a database, a newer schema ...: nothing stays open
            conn.close()
            self._conn = None
            if type(exc) is sqlite3.DatabaseError and "not a database" in str(exc):
                raise sqlite3.DatabaseError(
                    f"{self.path}: file is not a database (not a resile SQLite store); "
                    "check the path"
                ) from exc
            raise
        return conn

    def _create_schema(self, c: sqlite3.Connection) -> None:
        for statement in sql.SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        have = {row[0] for row in c.execute(sql.table_columns())}
        for name, kind in sql.ADDED_COLUMNS:
            if name not in have:  # a file made before the column existed
                c.execute(sql.add_column(name, kind))
        counted = c.execute(sql.counts_exists()).fetchone() is not None
        for statement in sql.COUNTS_SCHEMA:
            c.execute(statement)
        if not counted:  # a file made before the counts: counted once, with the triggers on
            c.execute(sql.COUNTS_INIT)
        row = c.execute(sql.META_GET, {"key": sql.SCHEMA_VERSION_KEY}).fetchone()
        if row is None:
            c.execute(sql.META_SET, {"key": sql.SCHEMA_VERSION_KEY, "value": str(SCHEMA_VERSION)})
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: task schema version {row[0]} is newer than this resile "
                f"({SCHEMA_VERSION}); upgrade resile"
            )

    def _ensure(self) -> None:
        """Refuse a closed store; in a forked child, drop the parent's connection and lock."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._pid != os.getpid():
            # The child must not touch its parent's connection, nor a lock some parent
            # thread may have held at fork time: it opens its own.
            self._lock = threading.RLock()
            self._conn = None
            self._connect()

    def _with_retry(self, fn: Callable[[], T]) -> T:
        try:
            return self._retry_call(fn)  # type: ignore[no-any-return]
        except _Locked as exc:
            raise self._unavailable(exc.error) from exc.error
        except sqlite3.OperationalError as exc:
            if _advice(exc) is None:
                raise
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.OperationalError) -> StoreUnavailable:
        """``exc`` as the one "cannot write now" error; a full disk also gets a try at
        giving the WAL's space back (a truncating checkpoint)."""
        if "full" in str(exc).lower():
            self._checkpoint_at = -float("inf")
            self._checkpoint()
        return StoreUnavailable(self.url, str(exc), _advice(exc) or "try again later")

    def _checkpoint(self) -> None:
        """Try to checkpoint the WAL and truncate it to nothing, without waiting for a lock
        (another connection's reader or writer makes it a no-op); at most once every
        ``CHECKPOINT_EVERY`` seconds."""
        mono = _time.clock.monotonic()
        if self.memory or mono - self._checkpoint_at < CHECKPOINT_EVERY:
            return
        self._checkpoint_at = mono
        with self._lock:
            conn = self._conn
            if conn is None or conn.in_transaction:
                return
            try:
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # best effort: the next try comes after the next write
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def _tx(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction, retried while locked."""
        self._ensure()

        def once() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise RuntimeError(f"{self!r} is closed")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

        result = self._with_retry(once)
        self._checkpoint()
        return result

    # Every write is one transaction; the name says which kind a method does.
    _write = _tx

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``body``: a statement (or a few) outside any write lock."""
        self._ensure()

        def once() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise RuntimeError(f"{self!r} is closed")
                return body(conn)

        return self._with_retry(once)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- producers ------------------------------------------------------------------------------

    def _insert(self, c: sqlite3.Connection, spec: TaskSpec, now: float) -> Task:
        task_id = spec.id if spec.id is not None else new_task_id()
        made = tr.create(spec.due_at, spec.delay, now)
        fields = encode_new(spec, task_id, made.due_at, now)
        fields["ready"] = 1 if made.ready else 0
        fields["has_resources"] = 1 if has_needs(spec.resources) else 0
        cur = c.execute(sql.INSERT, fields)
        return created_task(spec, task_id, int(cur.lastrowid or 0), made.due_at, now)

    def _create_all(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> tuple[builtins.list[Task], builtins.list[Task]]:
        check_create_args(specs, if_exists)
        specs = with_trace_context(specs)

        def body(c: sqlite3.Connection) -> tuple[builtins.list[Task], builtins.list[Task]]:
            out: builtins.list[Task] = []
            created: builtins.list[Task] = []
            made: dict[str, Task] = {}
            for spec in specs:
                if spec.id is not None:
                    existing = made.get(spec.id) or self._get(c, spec.id)
                    if existing is not None:
                        if if_exists == "error":
                            raise DuplicateTask(existing.queue, spec.id)
                        out.append(existing)
                        continue
                task = self._insert(c, spec, now)
                made[task.id] = task
                out.append(task)
                created.append(task)
            return out, created

        return self._write(body)

    def create(
        self, spec: TaskSpec, *, if_exists: IfExists = "error", now: float | None = None
    ) -> Task:
        out, created = self._create_all([spec], if_exists, self.now(now))
        self._after_create(created)
        return out[0]

    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
    ) -> builtins.list[Task]:
        out, created = self._create_all(builtins.list(specs), if_exists, self.now(now))
        self._after_create(created)
        return out

    # -- workers --------------------------------------------------------------------------------

    def _tally(
        self, c: sqlite3.Connection, row: sqlite3.Row, what: Tally, now: float, *, timed: bool
    ) -> None:
        """Count one outcome of the attempt in ``row`` in the per-minute counters, with its run
        time and lateness when ``timed`` (``timed_tally``), in the caller's transaction."""
        minute = int(now // 60)
        key = (
            timed_tally(
                what,
                started_at=row["started_at"],
                due_at=row["due_at"],
                attempts=row["attempts"],
                now=now,
            )
            if timed
            else what.value
        )
        c.execute(sql.TALLY, {"queue": row["queue"], "minute": minute, "outcome": key})
        if minute != self._tallies_pruned:  # once a minute: drop what left the window
            self._tallies_pruned = minute
            c.execute(sql.PRUNE_TALLIES, {"cutoff": minute - int(TALLY_WINDOW // 60)})

    def _mark_corrupt(self, c: sqlite3.Connection, row: sqlite3.Row, why: str, now: float) -> None:
        self._tally(c, row, Tally.DEAD, now, timed=False)
        dead = tr.corrupt(why, now)
        c.execute(
            sql.DEAD_LETTER,
            {
                "status": dead.status.value,
                "history": None,
                "last_error": encode_error(dead.error),
                "now": now,
                "seq": row["seq"],
            },
        )

    def _reclaim(
        self, c: sqlite3.Connection, queues: Sequence[str], now: float
    ) -> builtins.list[Reclaimed]:
        rows = c.execute(
            sql.select_expired(len(queues)), {**sql.queue_params(queues), "now": now}
        ).fetchall()
        out: builtins.list[Reclaimed] = []
        for row in rows:
            decision = tr.lease_expired(
                attempts=row["attempts"],
                max_retries=row["max_retries"],
                backoff=row["backoff"],
                last_delay=row["last_delay"],
                lease_expires_at=row["lease_expires_at"],
                now=now,
            )
            entry = AttemptRecord(
                row["attempts"],
                row["started_at"],
                decision.base,
                Outcome.LOST,
                tr.LEASE_EXPIRED_ERROR,
                row["lease_owner"],
            )
            self._apply_failure(c, row, decision, entry, now, timed=False)
            out.append(
                Reclaimed(
                    row["queue"],
                    row["handler"],
                    row["id"],
                    row["attempts"],
                    row["traceparent"],
                    decision.dead,
                )
            )
        return out

    def _apply_failure(
        self,
        c: sqlite3.Connection,
        row: sqlite3.Row,
        decision: tr.AfterFailure,
        entry: AttemptRecord,
        now: float,
        *,
        timed: bool = True,
    ) -> None:
        """Write ``decision`` for the failed attempt in ``row``, with its history ``entry``
        (its run time counted when ``timed``: not for a lapsed lease)."""
        params = {
            "status": decision.status.value,
            "history": history_with(row["history"], entry),
            "last_error": encode_error(decision.error),
            "now": now,
            "seq": row["seq"],
        }
        self._tally(c, row, Tally.DEAD if decision.dead else Tally.RETRIED, now, timed=timed)
        if decision.dead:
            c.execute(sql.DEAD_LETTER, params)
            return
        params["ready"] = 1 if decision.ready(now) else 0
        params["last_delay"] = decision.delay
        params["due_at"] = decision.due_at
        c.execute(sql.RETRY, params)

    def _ready_rows(
        self, c: sqlite3.Connection, queue: str, now: float, chunk: int
    ) -> Iterator[tuple[int, int, sqlite3.Row]]:
        """Ready, due rows of one queue in ``(priority, seq)`` order, read in chunks."""
        params: dict[str, Any] = {"queue": queue, "now": now, "chunk": chunk}
        query = sql.READY_FIRST
        while True:
            rows = c.execute(query, params).fetchall()
            for row in rows:
                yield (row["priority"], row["seq"], row)
            if len(rows) < chunk:
                return
            params["priority"], params["seq"] = rows[-1]["priority"], rows[-1]["seq"]
            query = sql.READY_NEXT

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
        at = self.now(now)
        reclaimed: builtins.list[Reclaimed] = []
        body = self._lease_body(queues, worker_id, limit, lease_seconds, capacity, at, reclaimed)
        leased = self._write(body)
        self._after_reclaim(reclaimed)
        return leased

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
        """See ``Store.complete_then_lease``: both in one transaction (one commit)."""
        encoded = encode_results(items)
        at = self.now(now)
        reclaimed: builtins.list[Reclaimed] = []
        lease = self._lease_body(queues, worker_id, limit, lease_seconds, capacity, at, reclaimed)

        def body(c: sqlite3.Connection) -> tuple[builtins.list[bool], builtins.list[Task]]:
            flags = [
                self._complete_write(c, tid, worker_id, enc, at) is not None for tid, enc in encoded
            ]
            return flags, lease(c)

        out = self._write(body)
        self._after_reclaim(reclaimed)
        return out

    def _lease_body(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        capacity: Mapping[str, float] | None,
        at: float,
        reclaimed: builtins.list[Reclaimed],
    ) -> Callable[[sqlite3.Connection], builtins.list[Task]]:
        """The lease as a transaction body (arguments checked here, before any write);
        ``reclaimed`` receives the leases it reclaims (refilled if the body runs again)."""
        names = lease_call_args(queues, worker_id, limit, lease_seconds)
        flip = sql.flip_due(len(names))
        flip_params = {**sql.queue_params(names), "now": at}

        def body(c: sqlite3.Connection) -> builtins.list[Task]:
            reclaimed[:] = self._reclaim(c, names, at)
            c.execute(flip, flip_params)
            open_ = self._unpaused(c, names)
            if not open_:
                return []
            chunk = min(limit + 4, _MAX_CHUNK)
            streams = [self._ready_rows(c, q, at, chunk) for q in open_]
            merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda t: t[:2])
            picked: builtins.list[tuple[Task, tr.Leased]] = []
            for _, _, row in merged:
                try:
                    task = _decode(row, strict=True)
                except CorruptField as exc:
                    self._mark_corrupt(c, row, str(exc), at)
                    continue
                if not task.fits(capacity):
                    continue
                picked.append((task, tr.lease(task.attempts, at, lease_seconds)))
                if len(picked) >= limit:
                    break
            if picked:
                c.executemany(
                    sql.LEASE,
                    [
                        {
                            "status": leased.status.value,
                            "attempts": leased.attempts,
                            "worker": worker_id,
                            "lease_expires_at": leased.lease_expires_at,
                            "started_at": leased.started_at,
                            "now": at,
                            "seq": task.sequence,
                        }
                        for task, leased in picked
                    ],
                )
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

        return body

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
        params = {"lease_expires_at": at + float(lease_seconds), "now": at, "worker": worker_id}

        def body(c: sqlite3.Connection) -> set[str]:
            return {tid for tid in ids if c.execute(sql.RENEW, {**params, "id": tid}).rowcount == 1}

        return self._write(body)

    def _held(self, c: sqlite3.Connection, task_id: str, worker_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = c.execute(
            sql.SELECT_HELD, {"id": task_id, "worker": worker_id}
        ).fetchone()
        return row

    def _complete_row(
        self, c: sqlite3.Connection, task_id: str, worker_id: str, encoded: str, at: float
    ) -> Task | None:
        written = self._complete_write(c, task_id, worker_id, encoded, at)
        if written is None:
            return None
        row, done, history = written
        # The snapshot from the row already read: no second SELECT on the hot path.
        before = _decode(row, strict=False)
        return before.replace(
            status=done.status,
            result=json.loads(encoded),
            progress=done.progress,
            history=(*before.history, done.entry)[-HISTORY_LIMIT:]
            if history is not None
            else before.history,
            lease_expires_at=None,
            finished_at=done.finished_at,
            updated_at=at,
        )

    def _complete_write(
        self, c: sqlite3.Connection, task_id: str, worker_id: str, encoded: str, at: float
    ) -> tuple[sqlite3.Row, tr.Completed, str | None] | None:
        """``DOING -> DONE`` when ``worker_id`` holds the task: (the row before, the
        decision, the new history column), else ``None`` and nothing written."""
        row = self._held(c, task_id, worker_id)
        if row is None:
            return None
        done = tr.complete(row["attempts"], row["started_at"], at, worker_id)
        self._tally(c, row, Tally.DONE, at, timed=True)
        history = history_with(row["history"], done.entry)
        c.execute(
            sql.COMPLETE,
            {
                "status": done.status.value,
                "result": encoded,
                "progress": done.progress,
                "history": history,
                "finished_at": done.finished_at,
                "now": at,
                "seq": row["seq"],
            },
        )
        return row, done, history

    def complete(
        self,
        task_id: str,
        worker_id: str,
        result: JSONValue = None,
        *,
        now: float | None = None,
    ) -> Task | None:
        return self.complete_many([(task_id, result)], worker_id, now=now)[0]

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
        return self._write(
            lambda c: [
                self._complete_write(c, tid, worker_id, enc, at) is not None for tid, enc in encoded
            ]
        )

    def complete_many(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[Task | None]:
        """``complete`` for several ``(task_id, result)``, in one transaction (one commit).

        Each answer is what ``complete`` would return; a result that is not
        plain JSON raises ``ValueError`` before anything is written.
        """
        encoded = encode_results(items)
        if not encoded:
            return []
        at = self.now(now)
        return self._write(
            lambda c: [self._complete_row(c, tid, worker_id, enc, at) for tid, enc in encoded]
        )

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

        def body(c: sqlite3.Connection) -> Task | None:
            row = self._held(c, task_id, worker_id)
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
            self._apply_failure(c, row, decision, entry, at)
            return self._get(c, task_id)

        return self._write(body)

    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        at = self.now(now)

        def body(c: sqlite3.Connection) -> Task | None:
            row = self._held(c, task_id, worker_id)
            if row is None:
                return None
            back = tr.release(row["attempts"], at)
            c.execute(
                sql.RELEASE,
                {
                    "status": back.status.value,
                    "due_at": back.due_at,
                    "attempts": back.attempts,
                    "now": at,
                    "seq": row["seq"],
                },
            )
            return self._get(c, task_id)

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    # -- anyone ---------------------------------------------------------------------------------

    def _cancel(self, task_id: str, at: float) -> bool:
        def body(c: sqlite3.Connection) -> bool:
            row = c.execute(sql.SELECT_BY_ID, {"id": task_id}).fetchone()
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
            c.execute(
                sql.CANCEL,
                {
                    "status": done.status.value,
                    "history": None
                    if done.entry is None
                    else history_with(row["history"], done.entry),
                    "finished_at": done.finished_at,
                    "now": at,
                    "seq": row["seq"],
                },
            )
            return True

        return self._write(body)

    def _set_field(
        self, task_id: str, column: str, value: float | str, worker_id: str | None, at: float
    ) -> bool:
        query = sql.set_field(column, holder=worker_id is not None)
        params = {"value": value, "now": at, "id": task_id, "worker": worker_id}
        return self._write(lambda c: c.execute(query, params).rowcount == 1)

    def get_checkpoint(self, task_id: str) -> JSONValue:
        row = self._read(lambda c: c.execute(sql.SELECT_CHECKPOINT, {"id": task_id}).fetchone())
        if row is None or row[0] is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            return None

    def _get(self, c: sqlite3.Connection, task_id: str) -> Task | None:
        row = c.execute(sql.SELECT_BY_ID, {"id": task_id}).fetchone()
        return None if row is None else _decode(row, strict=False)

    def get(self, task_id: str) -> Task | None:
        return self._read(lambda c: self._get(c, task_id))

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
        if order == "created":
            query = sql.list_tasks(
                queue=queue is not None,
                statuses=None if statuses is None else len(statuses),
                after=after is not None,
                descending=descending,
            )
        else:
            query = sql.list_by_time(
                order,
                descending,
                queue=queue is not None,
                statuses=statuses,
                after=after is not None,
            )
        params: dict[str, Any] = {
            "queue": queue,
            "after": None if after is None else int(after),
            "after_key": None if after_key is None else float(after_key),
            "limit": limit,
            "offset": offset,
            "window": limit + offset,
            **sql.queue_params((s.value for s in statuses or ()), "s"),
        }
        rows = self._read(lambda c: c.execute(query, params).fetchall())
        out: builtins.list[Task] = []
        for row in rows:
            try:
                out.append(_decode(row, strict=False))
            except CorruptField:  # an unknown status: not a task this version can show
                continue
        return out

    def stats(self, queue: str | None = None) -> dict[TaskStatus, int]:
        if queue is None:
            rows = self._read(lambda c: c.execute(sql.STATS).fetchall())
        else:
            rows = self._read(lambda c: c.execute(sql.STATS_OF_QUEUE, {"queue": queue}).fetchall())
        counts = dict.fromkeys(TaskStatus, 0)
        for status, n in rows:
            try:
                counts[TaskStatus(status)] = int(n)
            except ValueError:
                continue
        return counts

    def queues(self) -> builtins.list[str]:
        rows = self._read(lambda c: c.execute(sql.QUEUES).fetchall())
        return [r[0] for r in rows]

    def counts(self) -> dict[str, dict[TaskStatus, int]]:
        return counts_by_queue(self._read(lambda c: c.execute(sql.COUNTS).fetchall()))

    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        wait = check_seconds(delay, "requeue: delay")
        at = self.now(now)
        back = tr.requeue(wait, at)
        params = {
            "status": back.status.value,
            "ready": 1 if back.ready else 0,
            "attempts": back.attempts,
            "last_delay": back.last_delay,
            "due_at": back.due_at,
            "now": at,
            "id": task_id,
        }

        def body(c: sqlite3.Connection) -> Task | None:
            n = c.execute(sql.REQUEUE, params).rowcount
            return self._get(c, task_id) if n == 1 else None

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    def make_due(self, task_id: str, *, now: float | None = None) -> Task | None:
        params = {"id": task_id, "now": self.now(now)}

        def body(c: sqlite3.Connection) -> Task | None:
            n = c.execute(sql.MAKE_DUE, params).rowcount
            return self._get(c, task_id) if n == 1 else None

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    def delete(self, task_id: str) -> bool:
        return bool(self._write(lambda c: c.execute(sql.DELETE, {"id": task_id}).rowcount == 1))

    def purge(
        self,
        older_than: float,
        *,
        statuses: Collection[TaskStatus | str] = TERMINAL_STATUSES,
        queue: str | None = None,
        now: float | None = None,
    ) -> int:
        age = check_seconds(older_than, "purge: older_than")
        chosen = purge_statuses(statuses)
        if not chosen:
            return 0
        query = sql.purge(statuses=len(chosen), queue=queue is not None)
        params: dict[str, Any] = {
            "cutoff": self.now(now) - age,
            "queue": queue,
            **sql.queue_params((s.value for s in chosen), "s"),
        }
        return self._write(lambda c: c.execute(query, params).rowcount)

    # -- paused queues ------------------------------------------------------------------------

    @staticmethod
    def _unpaused(c: sqlite3.Connection, names: Sequence[str]) -> builtins.list[str]:
        """``names`` without the paused queues (read in the caller's transaction)."""
        rows = c.execute(sql.paused_of(len(names)), sql.paused_params(names)).fetchall()
        if not rows:
            return list(names)
        shut = {r[0][len(sql.PAUSED_PREFIX) :] for r in rows}
        return [q for q in names if q not in shut]

    def pause(self, queue: str, *, now: float | None = None) -> bool:
        name = check_queue(queue, "pause")
        params = {"key": sql.PAUSED_PREFIX + name, "value": repr(self.now(now))}
        return bool(self._write(lambda c: c.execute(sql.PAUSE, params).rowcount))

    def resume(self, queue: str) -> bool:
        name = check_queue(queue, "resume")
        return bool(
            self._write(lambda c: c.execute(sql.RESUME, {"key": sql.PAUSED_PREFIX + name}).rowcount)
        )

    def paused(self) -> dict[str, float]:
        rows = self._read(lambda c: c.execute(sql.PAUSED, sql.PAUSED_RANGE).fetchall())
        return {r[0][len(sql.PAUSED_PREFIX) :]: float(r[1]) for r in rows}

    # -- per-minute outcome counters -------------------------------------------------------------

    def tallies(
        self, *, since: float, until: float | None = None, queue: str | None = None
    ) -> dict[int, dict[Tally, int]]:
        lo, hi = tally_range(since, until, self.now())
        params: dict[str, Any] = {"lo": lo, "hi": hi, "queue": queue}
        query = sql.tallies(queue=queue is not None)
        return tally_counts(self._read(lambda c: c.execute(query, params).fetchall()))

    def _timing_rows(self, lo: int, hi: int, queue: str | None) -> Iterable[tuple[str, str, int]]:
        params: dict[str, Any] = {"lo": lo, "hi": hi, "queue": queue}
        query = sql.timing_counters(queue=queue is not None)
        return self._read(lambda c: c.execute(query, params).fetchall())

    # -- schedules: meta rows, changed by compare-and-set (Store.fire_tick and friends) ----------

    def _schedule_texts(self) -> builtins.list[str]:
        rows = self._read(lambda c: c.execute(sql.SCHEDULES, sql.SCHEDULE_RANGE).fetchall())
        return [str(r[0]) for r in rows]

    def _schedule_text(self, name: str) -> str | None:
        key = {"key": SCHEDULE_PREFIX + name}
        row = self._read(lambda c: c.execute(sql.META_GET, key).fetchone())
        return None if row is None else str(row[0])

    def _schedule_swap(
        self, name: str, old: str | None, new: str | None, task: TaskSpec | None, now: float
    ) -> Task | bool:
        params = {"key": SCHEDULE_PREFIX + name, "old": old, "new": new}
        if old is None:
            statement = sql.SCHEDULE_ADD
        else:
            statement = sql.SCHEDULE_SWAP if new is not None else sql.SCHEDULE_DROP

        def body(c: sqlite3.Connection) -> Task | bool:
            if c.execute(statement, params).rowcount != 1:
                return False
            if task is None or (task.id is not None and self._get(c, task.id) is not None):
                return True
            return self._insert(c, task, now)

        result: Task | bool = self._write(body)
        return result

    # -- the worker registry ---------------------------------------------------------------------

    def record_worker(self, record: WorkerRecord) -> None:
        row = {"key": sql.WORKER_PREFIX + record.id, "value": record.to_json()}
        prune = {**sql.WORKER_RANGE, "cutoff": record.beat_at - GONE_KEPT}

        def body(c: sqlite3.Connection) -> None:
            c.execute(sql.PRUNE_WORKERS, prune)
            c.execute(sql.RECORD_WORKER, row)

        self._write(body)

    def remove_worker(self, worker_id: str) -> bool:
        key = {"key": sql.WORKER_PREFIX + worker_id}
        return bool(self._write(lambda c: c.execute(sql.REMOVE_WORKER, key).rowcount))

    def workers(self) -> builtins.list[WorkerRecord]:
        rows = self._read(lambda c: c.execute(sql.WORKERS, sql.WORKER_RANGE).fetchall())
        out = []
        for (text,) in rows:
            try:
                out.append(WorkerRecord.from_json(text))
            except ValueError:  # a record this version cannot read: not shown
                continue
        return out

    def oldest_due_at(self, queue: str) -> float | None:
        params = {"queue": check_queue(queue, "oldest_due_at")}

        def body(c: sqlite3.Connection) -> float | None:
            heads = [c.execute(query, params).fetchone()[0] for query in sql.OLDEST_DUE]
            found = [float(h) for h in heads if h is not None]
            return min(found) if found else None

        return self._read(body)

    def next_due_at(
        self,
        queues: str | Sequence[str],
        *,
        capacity: Mapping[str, float] | None = None,
    ) -> float | None:
        asked = normalize_queues(queues)

        def body(c: sqlite3.Connection) -> float | None:
            names = self._unpaused(c, asked)
            if not names:
                return None
            leases, delayed, ready, gated = sql.next_due(len(names), gated=capacity is not None)
            params = sql.queue_params(names)
            found: builtins.list[float] = []
            for query in (leases, delayed):
                first = c.execute(query, params).fetchone()[0]
                if first is not None:
                    found.append(float(first))
            for q in names:
                row = c.execute(ready, {"queue": q}).fetchone()
                if row is not None:
                    found.append(float(row[0]))
            if capacity is not None:
                # Tasks with needs are few (GPU work); check them one by one.
                for row in c.execute(gated, params):
                    try:
                        needs = json.loads(row[1])
                        fits = all(capacity.get(k, 0.0) >= float(v) for k, v in needs.items())
                    except (TypeError, ValueError, AttributeError):
                        fits = True  # lease will dead-letter it: wake for that
                    if fits:
                        found.append(float(row[0]))
            return min(found) if found else None

        return self._read(body)
