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

Due tasks are found without scanning delayed ones, as a Redis store does with
two sorted sets: a ``ready`` flag splits ``PENDING`` rows into *delayed*
(indexed by ``(queue, due_at)``) and *ready* (indexed by
``(queue, priority, seq)``). ``lease`` first flips the delayed rows that have
come due to ready, then reads ready rows in ``(priority, seq)`` order.
"""

from __future__ import annotations

import builtins
import heapq
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from resile.backoff import Backoff, Exponential
from resile.errors import DuplicateTask
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    HISTORY_LIMIT,
    LEASE_EXPIRED_REASON,
    META_TABLE,
    SCHEMA_VERSION,
    TASKS_TABLE,
    TERMINAL_STATUSES,
    Outcome,
    TaskStatus,
)
from resile.queue.store.base import (
    IfExists,
    Store,
    check_create_args,
    check_lease_args,
    check_list_args,
    check_pct,
    check_seconds,
    dumps,
    dumps_shared,
    encode_results,
    fail_args,
    lease_call_args,
    normalize_queues,
    purge_statuses,
)
from resile.queue.task import (
    AttemptRecord,
    JSONValue,
    Task,
    TaskError,
    TaskSpec,
    check_json,
    new_task_id,
)
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_T = TASKS_TABLE
_SCHEMA = f"""
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
    finished_at      REAL
);
CREATE INDEX IF NOT EXISTS {_T}_ready ON {_T} (queue, priority, seq)
    WHERE status = 'PENDING' AND ready = 1;
CREATE INDEX IF NOT EXISTS {_T}_delayed ON {_T} (queue, due_at)
    WHERE status = 'PENDING' AND ready = 0;
CREATE INDEX IF NOT EXISTS {_T}_leased ON {_T} (queue, lease_expires_at)
    WHERE status = 'DOING';
CREATE INDEX IF NOT EXISTS {_T}_gated ON {_T} (queue, due_at)
    WHERE status = 'PENDING' AND has_resources = 1;
CREATE INDEX IF NOT EXISTS {_T}_status ON {_T} (queue, status, seq);
CREATE INDEX IF NOT EXISTS {_T}_finished ON {_T} (status, finished_at);
"""

# The most ready rows one query of ``lease`` reads per queue.
_MAX_CHUNK = 256


class _Corrupt(Exception):
    """A stored column that cannot be decoded."""

    def __init__(self, column: str, detail: str) -> None:
        super().__init__(f"stored task is unreadable: column {column!r}: {detail}")
        self.column = column


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


def _load(row: sqlite3.Row, column: str, strict: bool, default: Any, kind: type | None) -> Any:
    raw = row[column]
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        if strict:
            raise _Corrupt(column, f"not valid JSON ({exc})") from None
        return default
    if kind is not None and not isinstance(value, kind):
        if strict:
            raise _Corrupt(column, f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return default
    return value


def _decode(row: sqlite3.Row, strict: bool = True) -> Task:
    """Row -> Task. ``strict`` raises ``_Corrupt``; otherwise bad columns get defaults."""
    params = _load(row, "params", strict, {}, dict)
    backoff = _load(row, "backoff", strict, {}, dict)
    resources_raw = _load(row, "resources", strict, {}, dict)
    history_raw = _load(row, "history", strict, [], list)
    error_raw = _load(row, "last_error", strict, None, dict)
    checkpoint = _load(row, "checkpoint", strict, None, None)
    result = _load(row, "result", strict, None, None)
    try:
        resources = {str(k): float(v) for k, v in resources_raw.items()}
    except (TypeError, ValueError) as exc:
        if strict:
            raise _Corrupt("resources", str(exc)) from None
        resources = {}
    try:
        history = tuple(AttemptRecord.from_dict(a) for a in history_raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if strict:
            raise _Corrupt("history", f"bad entry ({exc!r})") from None
        history = ()
    try:
        status = TaskStatus(row["status"])
    except ValueError:
        raise _Corrupt("status", f"unknown status {row['status']!r}") from None
    return Task(
        id=row["id"],
        queue=row["queue"],
        handler=row["handler"],
        params=params,
        priority=row["priority"],
        sequence=row["seq"],
        status=status,
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        backoff=backoff,
        last_delay=row["last_delay"],
        due_at=row["due_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        progress=row["progress"],
        checkpoint=checkpoint,
        result=result,
        last_error=None if error_raw is None else TaskError.from_dict(error_raw),
        history=history,
        timeout=row["timeout"],
        resources=resources,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _history_with(row: sqlite3.Row, entry: AttemptRecord) -> str | None:
    """The history column with ``entry`` appended; ``None`` when the stored one is unreadable."""
    try:
        items = json.loads(row["history"] or "[]")
    except (TypeError, ValueError):
        return None
    if not isinstance(items, builtins.list):
        return None
    items.append(entry.to_dict())
    return dumps(items[-HISTORY_LIMIT:])


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


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

    Raises:
        ValueError: a bad option, named with its value.
        sqlite3.DatabaseError: the file is not a SQLite database.
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        lock_timeout: float = 30.0,
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(path, str) or not path:
            raise ValueError(f"SQLiteStore: path must be a file name or ':memory:', got {path!r}")
        for name, value in (("busy_timeout", busy_timeout), ("lock_timeout", lock_timeout)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 <= value < math.inf)
            ):
                raise ValueError(f"SQLiteStore: {name} must be seconds >= 0, got {value!r}")
        sync = str(synchronous).upper()
        if sync not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(
                f"SQLiteStore: synchronous must be NORMAL, FULL, EXTRA or OFF, got {synchronous!r}"
            )
        self.path = path
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
        )
        # Wrapped once: only ``database is locked`` / ``busy`` is retried.
        self._retry_call: Callable[[Callable[[], Any]], Any] = self._retrying(_locked_as_retryable)
        self._connect()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.

        Query options: ``busy_timeout``, ``lock_timeout`` (seconds) and
        ``synchronous``; keyword ``options`` override them.

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
            else:
                raise ValueError(
                    f"SQLite URL {url!r}: unknown option {key!r} "
                    "(known: busy_timeout, lock_timeout, synchronous)"
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
            c.execute(f"PRAGMA synchronous = {self.synchronous}")

        try:
            self._with_retry(lambda: setup(conn))
            self._tx(self._create_schema)
        except BaseException:  # not a database, a newer schema ...: nothing stays open
            conn.close()
            self._conn = None
            raise
        return conn

    def _create_schema(self, c: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        row = c.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
        if row is None:
            c.execute(
                f"INSERT INTO {META_TABLE} (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
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
            raise exc.error from None

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

        return self._with_retry(once)

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
        due = spec.due_time(now)
        backoff: dict[str, Any] = dict(spec.backoff)  # type: ignore[arg-type]
        resources: dict[str, float] = dict(spec.resources)
        timeout = None if spec.timeout is None else float(spec.timeout)  # type: ignore[arg-type]
        cur = c.execute(
            f"INSERT INTO {_T} (id, queue, handler, params, priority, status, ready, attempts,"
            " max_retries, backoff, due_at, resources, has_resources, timeout, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, 'PENDING', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                spec.queue,
                spec.handler,
                dumps(spec.params),
                spec.priority,
                1 if due <= now else 0,
                spec.max_retries,
                dumps_shared(spec.backoff),  # type: ignore[arg-type]
                due,
                dumps(resources),
                1 if any(v > 0 for v in resources.values()) else 0,
                timeout,
                now,
                now,
            ),
        )
        return Task(
            id=task_id,
            queue=spec.queue,
            handler=spec.handler,
            params=dict(spec.params),
            priority=spec.priority,
            sequence=int(cur.lastrowid or 0),
            status=TaskStatus.PENDING,
            attempts=0,
            max_retries=spec.max_retries,
            backoff=backoff,
            due_at=due,
            created_at=now,
            updated_at=now,
            timeout=timeout,
            resources=resources,
        )

    def _create_all(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> tuple[builtins.list[Task], builtins.list[Task]]:
        check_create_args(specs, if_exists)

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
        self._notify(created)
        return out[0]

    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
    ) -> builtins.list[Task]:
        out, created = self._create_all(builtins.list(specs), if_exists, self.now(now))
        self._notify(created)
        return out

    # -- workers --------------------------------------------------------------------------------

    def _mark_corrupt(self, c: sqlite3.Connection, row: sqlite3.Row, why: str, now: float) -> None:
        error = TaskError("CorruptTask", why)
        c.execute(
            f"UPDATE {_T} SET status = 'FAILED', ready = 0, last_error = ?, lease_expires_at = NULL,"
            " finished_at = ?, updated_at = ? WHERE seq = ?",
            (dumps(error.to_dict()), now, now, row["seq"]),
        )

    def _reclaim(self, c: sqlite3.Connection, queues: Sequence[str], now: float) -> None:
        rows = c.execute(
            f"SELECT * FROM {_T} WHERE status = 'DOING' AND queue IN ({_placeholders(len(queues))})"
            " AND lease_expires_at < ?",
            (*queues, now),
        ).fetchall()
        for row in rows:
            expired_at = float(row["lease_expires_at"])
            error = TaskError("LeaseExpired", LEASE_EXPIRED_REASON)
            entry = AttemptRecord(
                row["attempts"], row["started_at"], expired_at, Outcome.LOST, error
            )
            self._after_failure(
                c, row, error, entry, permanent=False, delay=None, base=expired_at, now=now
            )

    def _after_failure(
        self,
        c: sqlite3.Connection,
        row: sqlite3.Row,
        error: TaskError,
        entry: AttemptRecord,
        *,
        permanent: bool,
        delay: float | None,
        base: float,
        now: float,
    ) -> None:
        """Dead-letter or schedule the retry of the failed attempt in ``row``."""
        history = _history_with(row, entry)
        history_sql = "history = ?," if history is not None else ""
        history_arg: tuple[Any, ...] = (history,) if history is not None else ()
        attempts = int(row["attempts"])
        dead = permanent or attempts > int(row["max_retries"])
        wait = 0.0
        if not dead:
            if delay is not None:
                wait = delay
            else:
                try:
                    policy = Backoff.from_dict(json.loads(row["backoff"]))
                    wait = policy.delay(max(1, attempts), row["last_delay"])
                except (TypeError, ValueError) as exc:
                    error = TaskError(
                        "CorruptTask",
                        f"stored backoff policy is unusable ({exc}); last error: "
                        f"{error.type}: {error.message}",
                        error.traceback,
                    )
                    dead = True
        if dead:
            c.execute(
                f"UPDATE {_T} SET status = 'FAILED', ready = 0, {history_sql} last_error = ?,"
                " lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE seq = ?",
                (*history_arg, dumps(error.to_dict()), now, now, row["seq"]),
            )
            return
        due = base + wait
        c.execute(
            f"UPDATE {_T} SET status = 'PENDING', ready = ?, {history_sql} last_error = ?,"
            " last_delay = ?, due_at = ?, lease_expires_at = NULL, updated_at = ? WHERE seq = ?",
            (
                1 if due <= now else 0,
                *history_arg,
                dumps(error.to_dict()),
                wait,
                due,
                now,
                row["seq"],
            ),
        )

    def _ready_rows(
        self, c: sqlite3.Connection, queue: str, now: float, chunk: int
    ) -> Iterator[tuple[int, int, sqlite3.Row]]:
        """Ready, due rows of one queue in ``(priority, seq)`` order, read in chunks."""
        last: tuple[int, int] | None = None
        while True:
            if last is None:
                rows = c.execute(
                    f"SELECT * FROM {_T} WHERE status = 'PENDING' AND ready = 1 AND queue = ?"
                    " AND due_at <= ? ORDER BY priority, seq LIMIT ?",
                    (queue, now, chunk),
                ).fetchall()
            else:
                rows = c.execute(
                    f"SELECT * FROM {_T} WHERE status = 'PENDING' AND ready = 1 AND queue = ?"
                    " AND (priority, seq) > (?, ?) AND due_at <= ? ORDER BY priority, seq LIMIT ?",
                    (queue, last[0], last[1], now, chunk),
                ).fetchall()
            for row in rows:
                yield (row["priority"], row["seq"], row)
            if len(rows) < chunk:
                return
            last = (rows[-1]["priority"], rows[-1]["seq"])

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
        return self._write(self._lease_body(queues, worker_id, limit, lease_seconds, capacity, at))

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
        lease = self._lease_body(queues, worker_id, limit, lease_seconds, capacity, at)

        def body(c: sqlite3.Connection) -> tuple[builtins.list[bool], builtins.list[Task]]:
            flags = [
                self._complete_write(c, tid, worker_id, enc, at) is not None for tid, enc in encoded
            ]
            return flags, lease(c)

        return self._write(body)

    def _lease_body(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        capacity: Mapping[str, float] | None,
        at: float,
    ) -> Callable[[sqlite3.Connection], builtins.list[Task]]:
        """The lease as a transaction body (arguments checked here, before any write)."""
        names = lease_call_args(queues, worker_id, limit, lease_seconds)
        expires = at + float(lease_seconds)
        marks = _placeholders(len(names))

        def body(c: sqlite3.Connection) -> builtins.list[Task]:
            self._reclaim(c, names, at)
            c.execute(
                f"UPDATE {_T} SET ready = 1 WHERE status = 'PENDING' AND ready = 0"
                f" AND queue IN ({marks}) AND due_at <= ?",
                (*names, at),
            )
            chunk = min(limit + 4, _MAX_CHUNK)
            streams = [self._ready_rows(c, q, at, chunk) for q in names]
            merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda t: t[:2])
            picked: builtins.list[Task] = []
            for _, _, row in merged:
                try:
                    task = _decode(row, strict=True)
                except _Corrupt as exc:
                    self._mark_corrupt(c, row, str(exc), at)
                    continue
                if not task.fits(capacity):
                    continue
                picked.append(task)
                if len(picked) >= limit:
                    break
            if picked:
                c.executemany(
                    f"UPDATE {_T} SET status = 'DOING', ready = 0, attempts = attempts + 1,"
                    " lease_owner = ?, lease_expires_at = ?, started_at = ?, updated_at = ?"
                    " WHERE seq = ?",
                    [(worker_id, expires, at, at, t.sequence) for t in picked],
                )
            return [
                t.replace(
                    status=TaskStatus.DOING,
                    attempts=t.attempts + 1,
                    lease_owner=worker_id,
                    lease_expires_at=expires,
                    started_at=at,
                    updated_at=at,
                )
                for t in picked
            ]

        return body

    def renew(
        self,
        task_id: str,
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> bool:
        check_lease_args(1, lease_seconds)
        at = self.now(now)
        return self._write(
            lambda c: (
                c.execute(
                    f"UPDATE {_T} SET lease_expires_at = ?, updated_at = ?"
                    " WHERE id = ? AND status = 'DOING' AND lease_owner = ?",
                    (at + float(lease_seconds), at, task_id, worker_id),
                ).rowcount
                == 1
            )
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

        def body(c: sqlite3.Connection) -> set[str]:
            held: set[str] = set()
            for tid in ids:
                n = c.execute(
                    f"UPDATE {_T} SET lease_expires_at = ?, updated_at = ?"
                    " WHERE id = ? AND status = 'DOING' AND lease_owner = ?",
                    (at + float(lease_seconds), at, tid, worker_id),
                ).rowcount
                if n == 1:
                    held.add(tid)
            return held

        return self._write(body)

    def _held(self, c: sqlite3.Connection, task_id: str, worker_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = c.execute(
            f"SELECT * FROM {_T} WHERE id = ? AND status = 'DOING' AND lease_owner = ?",
            (task_id, worker_id),
        ).fetchone()
        return row

    def _complete_row(
        self, c: sqlite3.Connection, task_id: str, worker_id: str, encoded: str, at: float
    ) -> Task | None:
        done = self._complete_write(c, task_id, worker_id, encoded, at)
        if done is None:
            return None
        row, entry, history = done
        # The snapshot from the row already read: no second SELECT on the hot path.
        before = _decode(row, strict=False)
        return before.replace(
            status=TaskStatus.DONE,
            result=json.loads(encoded),
            progress=100.0,
            history=(*before.history, entry)[-HISTORY_LIMIT:]
            if history is not None
            else before.history,
            lease_expires_at=None,
            finished_at=at,
            updated_at=at,
        )

    def _complete_write(
        self, c: sqlite3.Connection, task_id: str, worker_id: str, encoded: str, at: float
    ) -> tuple[sqlite3.Row, AttemptRecord, str | None] | None:
        """``DOING -> DONE`` when ``worker_id`` holds the task: (the row before, its
        history entry, the new history column), else ``None`` and nothing written."""
        row = self._held(c, task_id, worker_id)
        if row is None:
            return None
        entry = AttemptRecord(row["attempts"], row["started_at"], at, Outcome.OK)
        history = _history_with(row, entry)
        c.execute(
            f"UPDATE {_T} SET status = 'DONE', ready = 0, result = ?, progress = 100,"
            " history = COALESCE(?, history), lease_expires_at = NULL, finished_at = ?,"
            " updated_at = ? WHERE seq = ?",
            (encoded, history, at, at, row["seq"]),
        )
        return row, entry, history

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
            entry = AttemptRecord(row["attempts"], row["started_at"], at, kind, err)
            self._after_failure(
                c,
                row,
                err,
                entry,
                permanent=bool(permanent),
                delay=delay,
                base=at,
                now=at,
            )
            return self._get(c, task_id)

        return self._write(body)

    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        at = self.now(now)

        def body(c: sqlite3.Connection) -> Task | None:
            n = c.execute(
                f"UPDATE {_T} SET status = 'PENDING', ready = 1, due_at = ?,"
                " attempts = MAX(attempts - 1, 0), lease_expires_at = NULL, updated_at = ?"
                " WHERE id = ? AND status = 'DOING' AND lease_owner = ?",
                (at, at, task_id, worker_id),
            ).rowcount
            return self._get(c, task_id) if n == 1 else None

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

    # -- anyone ---------------------------------------------------------------------------------

    def cancel(self, task_id: str, *, now: float | None = None) -> bool:
        at = self.now(now)

        def body(c: sqlite3.Connection) -> bool:
            row = c.execute(f"SELECT * FROM {_T} WHERE id = ?", (task_id,)).fetchone()
            if row is None or row["status"] not in ("PENDING", "DOING"):
                return False
            history: str | None = None
            if row["status"] == "DOING":
                entry = AttemptRecord(
                    row["attempts"],
                    row["started_at"],
                    at,
                    Outcome.CANCELED,
                    TaskError("Canceled", "the task was canceled while this attempt ran"),
                )
                history = _history_with(row, entry)
            c.execute(
                f"UPDATE {_T} SET status = 'CANCELED', ready = 0, history = COALESCE(?, history),"
                " lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE seq = ?",
                (history, at, at, row["seq"]),
            )
            return True

        return self._write(body)

    def _guarded_update(
        self, task_id: str, column: str, value: Any, worker_id: str | None, at: float
    ) -> bool:
        if worker_id is None:
            sql = (
                f"UPDATE {_T} SET {column} = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('PENDING', 'DOING')"
            )
            args: tuple[Any, ...] = (value, at, task_id)
        else:
            sql = (
                f"UPDATE {_T} SET {column} = ?, updated_at = ?"
                " WHERE id = ? AND status = 'DOING' AND lease_owner = ?"
            )
            args = (value, at, task_id, worker_id)
        return self._write(lambda c: c.execute(sql, args).rowcount == 1)

    def progress(
        self,
        task_id: str,
        pct: float,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        return self._guarded_update(task_id, "progress", check_pct(pct), worker_id, self.now(now))

    def save_checkpoint(
        self,
        task_id: str,
        value: JSONValue,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        check_json(value, "checkpoint")
        return self._guarded_update(task_id, "checkpoint", dumps(value), worker_id, self.now(now))

    def get_checkpoint(self, task_id: str) -> JSONValue:
        row = self._read(
            lambda c: c.execute(f"SELECT checkpoint FROM {_T} WHERE id = ?", (task_id,)).fetchone()
        )
        if row is None or row[0] is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            return None

    def _get(self, c: sqlite3.Connection, task_id: str) -> Task | None:
        row = c.execute(f"SELECT * FROM {_T} WHERE id = ?", (task_id,)).fetchone()
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
    ) -> builtins.list[Task]:
        statuses = check_list_args(status, limit, offset)
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if statuses is not None:
            where.append(f"status IN ({_placeholders(len(statuses))})")
            args.extend(s.value for s in statuses)
        if after is not None:
            where.append("seq > ?")
            args.append(int(after))
        sql = f"SELECT * FROM {_T}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        args.extend((limit, offset))
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        out: builtins.list[Task] = []
        for row in rows:
            try:
                out.append(_decode(row, strict=False))
            except _Corrupt:  # an unknown status: not a task this version can show
                continue
        return out

    def stats(self, queue: str | None = None) -> dict[TaskStatus, int]:
        if queue is None:
            sql, args = f"SELECT status, COUNT(*) FROM {_T} GROUP BY status", ()
        else:
            sql = f"SELECT status, COUNT(*) FROM {_T} WHERE queue = ? GROUP BY status"
            args = (queue,)  # type: ignore[assignment]
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        counts = dict.fromkeys(TaskStatus, 0)
        for status, n in rows:
            try:
                counts[TaskStatus(status)] = int(n)
            except ValueError:
                continue
        return counts

    def queues(self) -> builtins.list[str]:
        rows = self._read(
            lambda c: c.execute(f"SELECT DISTINCT queue FROM {_T} ORDER BY queue").fetchall()
        )
        return [r[0] for r in rows]

    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        wait = check_seconds(delay, "requeue: delay")
        at = self.now(now)
        due = at + wait

        def body(c: sqlite3.Connection) -> Task | None:
            n = c.execute(
                f"UPDATE {_T} SET status = 'PENDING', ready = ?, attempts = 0, last_delay = NULL,"
                " due_at = ?, lease_expires_at = NULL, finished_at = NULL, updated_at = ?"
                " WHERE id = ? AND status IN ('FAILED', 'CANCELED')",
                (1 if due <= at else 0, due, at, task_id),
            ).rowcount
            return self._get(c, task_id) if n == 1 else None

        task = self._write(body)
        if task is not None:
            self._notify([task])
        return task

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
        cutoff = self.now(now) - age
        sql = (
            f"DELETE FROM {_T} WHERE status IN ({_placeholders(len(chosen))}) AND finished_at <= ?"
        )
        args: builtins.list[Any] = [s.value for s in chosen] + [cutoff]
        if queue is not None:
            sql += " AND queue = ?"
            args.append(queue)
        return self._write(lambda c: c.execute(sql, args).rowcount)

    def next_due_at(
        self,
        queues: str | Sequence[str],
        *,
        capacity: Mapping[str, float] | None = None,
    ) -> float | None:
        names = normalize_queues(queues)
        marks = _placeholders(len(names))

        def body(c: sqlite3.Connection) -> float | None:
            found: builtins.list[float] = []
            lease = c.execute(
                f"SELECT MIN(lease_expires_at) FROM {_T} WHERE status = 'DOING'"
                f" AND queue IN ({marks})",
                names,
            ).fetchone()[0]
            if lease is not None:
                found.append(float(lease))
            resource_filter = "" if capacity is None else " AND has_resources = 0"
            row = c.execute(
                f"SELECT MIN(due_at) FROM {_T} WHERE status = 'PENDING' AND ready = 0"
                f" AND queue IN ({marks}){resource_filter}",
                names,
            ).fetchone()
            if row[0] is not None:
                found.append(float(row[0]))
            for q in names:
                # Any ready row will do: ready rows were due when they were flipped, so
                # reading the ready index's first entry is enough (and O(1), not a scan).
                row = c.execute(
                    f"SELECT due_at FROM {_T} INDEXED BY {_T}_ready WHERE status = 'PENDING'"
                    f" AND ready = 1 AND queue = ?{resource_filter} LIMIT 1",
                    (q,),
                ).fetchone()
                if row is not None:
                    found.append(float(row[0]))
            if capacity is not None:
                # Tasks with needs are few (GPU work); check them one by one.
                for row in c.execute(
                    # INDEXED BY: left alone, the planner scans every pending row of the
                    # queue through the status index (7 ms at 30,000 pending, every loop).
                    f"SELECT due_at, resources FROM {_T} INDEXED BY {_T}_gated"
                    f" WHERE status = 'PENDING' AND has_resources = 1 AND queue IN ({marks})",
                    names,
                ):
                    try:
                        needs = json.loads(row[1])
                        fits = all(capacity.get(k, 0.0) >= float(v) for k, v in needs.items())
                    except (TypeError, ValueError, AttributeError):
                        fits = True  # lease will dead-letter it: wake for that
                    if fits:
                        found.append(float(row[0]))
            return min(found) if found else None

        return self._read(body)
