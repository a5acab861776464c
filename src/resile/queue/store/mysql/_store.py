"""The MySQL store: the SQLite store's transactions and SQL on InnoDB, through one adapter.

``MySQLStore`` keeps every contract method of ``SQLiteStore`` (each one
transaction whose transition ``resile.queue._transitions`` decides) and
replaces what is SQLite's: the connection (a small pool of PyMySQL
connections, READ COMMITTED, ``FOUND_ROWS`` so that ``rowcount`` counts
matched rows as SQLite does), the schema (``_sql``), the retries (deadlocks,
lock wait timeouts, lost connections) and the SQL dialect (``_dialect``: named
parameters, row locks with ``SKIP LOCKED`` for the lease). The statements are
the SQLite store's, so the two never disagree on what a transition writes.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.constants.CLIENT
import pymysql.cursors

from resile.backoff import Exponential
from resile.errors import StoreUnavailable
from resile.queue._names import DEFAULT_LEASE_SECONDS, META_TABLE
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
from resile.queue.store.base import check_seconds
from resile.queue.store.mysql import _sql
from resile.queue.store.mysql._dialect import render
from resile.queue.store.sqlite import SQLiteStore
from resile.queue.task import JSONValue, Task
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = ["DEFAULT_FAILED_RETENTION", "DEFAULT_RETENTION", "MySQLStore", "SchemaError"]

T = TypeVar("T")
logger = logging.getLogger("resile.queue")

_PRUNE_BATCH = 1000
# Server errors after which the whole transaction runs again: deadlock, lock wait
# timeout, and the connection errors (gone away, lost, cannot connect, killed).
_TRANSIENT = frozenset({1213, 1205, 2003, 2006, 2013, 2055, 1927, 1053, 4031})
_OPTIONS = SERVER_OPTIONS


class SchemaError(RuntimeError):
    """The database's task schema cannot be used by this code (newer, or older without migrate)."""


_LOCK_ERRORS = frozenset({1213, 1205})  # deadlock, lock wait timeout: the connection is fine


def _close_quietly(conn: _Connection) -> None:
    try:
        conn.raw.close()
    except Exception:
        return


class _Transient(Exception):
    """A transient error (server or connection), wrapped so that only it is retried."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class _Row(tuple):  # type: ignore[type-arg]
    """A result row read by position or by column name, as ``sqlite3.Row``."""

    __slots__ = ()
    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> builtins.list[str]:
        return builtins.list(self._index)


class _Cursor:
    """The slice of ``sqlite3.Cursor`` the SQLite store's bodies use, over a PyMySQL cursor."""

    def __init__(self, cur: pymysql.cursors.Cursor) -> None:
        self._cur = cur
        self._row: type[_Row] | None = None

    def _wrap(self, values: Any) -> _Row:
        if self._row is None:
            names = [d[0] for d in self._cur.description or ()]
            self._row = type(
                "Row", (_Row,), {"__slots__": (), "_index": {n: i for i, n in enumerate(names)}}
            )
        return self._row(values)

    def fetchone(self) -> _Row | None:
        values = self._cur.fetchone()
        return None if values is None else self._wrap(values)

    def fetchall(self) -> builtins.list[_Row]:
        return [self._wrap(v) for v in self._cur.fetchall()]

    def __iter__(self) -> Iterator[_Row]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid


class _Connection:
    """The slice of ``sqlite3.Connection`` the SQLite store's bodies use: ``execute``, ``executemany``."""

    def __init__(self, conn: pymysql.connections.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> _Cursor:
        cur = self.raw.cursor()
        cur.execute(render(statement), params)
        return _Cursor(cur)

    def executemany(self, statement: str, seq: Sequence[Mapping[str, Any]]) -> None:
        cur = self.raw.cursor()
        query = render(statement)
        for params in seq:
            cur.execute(query, params)


def _connect_args(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """PyMySQL's connection arguments and resile's options, from a ``mysql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("mysql", "mariadb", "mysql+pymysql"):
        raise ValueError(
            f"MySQL URL must look like mysql://user:password@host:3306/db, got {redact(url)!r}"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError(f"MySQL URL {redact(url)!r} names no database (mysql://user:pw@host/db)")
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": database,
    }
    opts, rest = read_options(url, _OPTIONS, what="MySQL")
    for key, value in rest:
        if key != "unix_socket":
            raise ValueError(
                f"MySQL URL {redact(url)!r}: unknown option {key!r} "
                f"(known: {', '.join(_OPTIONS)}, unix_socket)"
            )
        args["unix_socket"] = value
    return args, opts


class MySQLStore(SQLiteStore):
    """A ``Store`` in a MySQL 8 or MariaDB 10.6+ database (PyMySQL).

    Args:
        url: ``mysql://user:password@host:3306/database`` (the database must exist).
        retention: seconds ``DONE`` and ``CANCELED`` tasks are kept (``None``: until purged).
        failed_retention: the same for dead letters (``FAILED``).
        pool_size: the most idle connections kept.
        connect_timeout: seconds to wait for a connection.
        retry_for: seconds during which a transaction that met a deadlock, a lock
            wait timeout or a lost connection is run again.
        migrate: create or migrate the schema on open (``False``: refuse).
        read_timeout: seconds a read or a write on a connection may wait on the
            server (PyMySQL's ``read_timeout`` / ``write_timeout``); past it the
            connection is dropped and the transaction run again on a fresh one
            (``None``: wait for ever).
        idle_timeout: on MariaDB, the session's ``idle_transaction_timeout``
            (whole seconds, at least 1): a client frozen inside a transaction
            loses its session, and its row locks, that soon; keep it shorter
            than the lease (``None``: the server's; MySQL has no such setting).
        clock: epoch-time source for ``now=None``.

    Raises:
        ValueError: a bad URL or option (named with its value).
        ConnectionError: the server cannot be reached or refuses the login (one line).
        SchemaError: the schema is newer than this code (or absent and not ``migrate``).
    """

    def __init__(
        self,
        url: str,
        *,
        retention: float | None = DEFAULT_RETENTION,
        failed_retention: float | None = DEFAULT_FAILED_RETENTION,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        retry_for: float = 30.0,
        migrate: bool = True,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Not SQLiteStore.__init__: no file. The base Store's part is all we keep of it.
        super(SQLiteStore, self).__init__(clock=clock)
        self._args, _ = _connect_args(url)
        self.url = redact(url)
        self.retention = (
            None if retention is None else check_seconds(retention, "MySQLStore: retention")
        )
        self.failed_retention = (
            None
            if failed_retention is None
            else check_seconds(failed_retention, "MySQLStore: failed_retention")
        )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"MySQLStore: pool_size must be an int >= 1, got {pool_size!r}")
        self.pool_size = pool_size
        self.connect_timeout = check_seconds(connect_timeout, "MySQLStore: connect_timeout")
        self.read_timeout = (
            None
            if read_timeout is None
            else check_seconds(read_timeout, "MySQLStore: read_timeout") or None
        )
        self.idle_timeout = (
            None
            if idle_timeout is None
            else check_seconds(idle_timeout, "MySQLStore: idle_timeout") or None
        )
        self._tallies_pruned = -1  # the minute the counters were last pruned
        self._lock = threading.RLock()
        self._idle: builtins.list[_Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._pruner = PruneTimer(lambda at: self.prune(now=at))
        self._retrying = Retrying(
            on=_Transient,
            backoff=Exponential(0.005, max_delay=0.5),
            stop=after_elapsed(check_seconds(retry_for, "MySQLStore: retry_for")),
            name=f"mysql transaction on {self.url}",
            quiet=True,  # a give-up is raised as StoreUnavailable, which says it all
        )
        conn = self._new_connection()
        try:
            self._migrate(conn, bool(migrate))
        finally:
            conn.raw.close()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MySQLStore:
        """Open ``mysql://user:pw@host:3306/db?retention=...&pool_size=...`` (``mariadb://`` too).

        Query options: ``retention``, ``failed_retention`` (seconds or ``none``),
        ``pool_size``, ``connect_timeout``, ``retry_for``, ``migrate``,
        ``read_timeout``, ``idle_timeout`` (seconds or ``none``), ``unix_socket``; keyword ``options`` override them.

        Raises:
            ValueError: not a MySQL URL, or a bad option.
        """
        _, opts = _connect_args(url)
        opts.update(options)
        return cls(url, **opts)

    # -- connections ----------------------------------------------------------------------------

    def _new_connection(self) -> _Connection:
        try:
            raw = pymysql.connect(
                **self._args,
                charset="utf8mb4",
                autocommit=False,
                connect_timeout=max(1, math.ceil(self.connect_timeout)),
                client_flag=pymysql.constants.CLIENT.FOUND_ROWS,
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                read_timeout=self.read_timeout,
                write_timeout=self.read_timeout,
            )
            server = str(raw.get_server_info())  # type: ignore[no-untyped-call]
            if self.idle_timeout is not None and "mariadb" in server.lower():
                # MariaDB ends a session idle this long inside a transaction (rolled back,
                # its locks released): a frozen worker cannot hold the others' rows.
                with raw.cursor() as cur:
                    cur.execute(
                        "SET SESSION idle_transaction_timeout = %s",
                        (max(1, math.ceil(self.idle_timeout)),),
                    )
        except pymysql.err.OperationalError as exc:
            raise StoreUnavailable.server_down(self.url, f"cannot connect: {exc.args[-1]}") from exc
        return _Connection(raw)

    def _migrate(self, conn: _Connection, migrate: bool) -> None:
        cur = conn.raw.cursor()
        lock = {"name": f"resile:{self._args['database']}", "timeout": 30}
        cur.execute(_sql.LOCK, lock)
        try:
            cur.execute("SHOW TABLES LIKE %(t)s", {"t": META_TABLE})
            found = 0
            if cur.fetchone() is not None:
                cur.execute(_sql.META_GET, {"key": _sql.VERSION_KEY})
                row = cur.fetchone()
                found = int(row[0]) if row else 0
            if found > _sql.SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.url}: task schema version {found} is newer than this resile "
                    f"({_sql.SCHEMA_VERSION}); upgrade resile"
                )
            if found < _sql.SCHEMA_VERSION:
                if not migrate:
                    raise SchemaError(
                        f"{self.url}: task schema version {found}, this resile needs "
                        f"{_sql.SCHEMA_VERSION}; run `resile migrate --db URL`"
                    )
                for statement in _sql.SCHEMA:
                    cur.execute(statement)
                cur.execute(_sql.TABLE_COLUMNS)
                have = {str(r[0]).lower() for r in cur.fetchall()}
                for name, kind in _sql.ADDED_COLUMNS:
                    if name not in have:  # a table made by an older version
                        cur.execute(_sql.add_column(name, kind))
                for statement in _sql.COUNTS_SCHEMA:
                    cur.execute(statement)
                cur.execute(_sql.COUNTS_LOCK)
                try:
                    for statement in _sql.COUNTS_INIT:
                        cur.execute(statement)
                    conn.raw.commit()
                finally:
                    cur.execute(_sql.COUNTS_UNLOCK)
                cur.execute(
                    _sql.META_SET, {"key": _sql.VERSION_KEY, "value": str(_sql.SCHEMA_VERSION)}
                )
                conn.raw.commit()
        finally:
            cur.execute(_sql.UNLOCK, lock)

    def schema_version(self) -> int:
        """The task schema version stored in the database (0: none)."""

        def body(c: _Connection) -> int:
            cur = c.raw.cursor()
            cur.execute("SHOW TABLES LIKE %(t)s", {"t": META_TABLE})
            if cur.fetchone() is None:
                return 0
            cur.execute(_sql.META_GET, {"key": _sql.VERSION_KEY})
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return self._read(body)

    def _ensure(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._pid != os.getpid():
            # A forked child never uses its parent's sockets.
            self._lock = threading.RLock()
            self._idle = []
            self._pid = os.getpid()

    def _tx(self, body: Callable[[Any], T]) -> T:
        """Run ``body`` in one transaction; run it again after a transient error."""
        self._ensure()
        lost: list[bool] = []

        def once() -> T:
            conn = None
            if not lost:
                # After a lost connection, a new one: an idle one another thread gave back
                # may have met the same fault (a silent one costs read_timeout again).
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
            if conn is None:
                try:
                    conn = self._new_connection()
                except ConnectionError as exc:  # down (a restart): try again for retry_for
                    raise _Transient(exc) from exc
            try:
                conn.raw.begin()
                result = body(conn)
                conn.raw.commit()
            except BaseException as exc:
                code = _code(exc)
                lost_now = isinstance(exc, pymysql.err.InterfaceError) or (
                    code in _TRANSIENT and code not in _LOCK_ERRORS
                )
                if lost_now:
                    lost.append(True)
                    _close_quietly(conn)
                    # The idle ones met the same reset, restart or silent path, most
                    # likely: each would cost a try (a silent one read_timeout seconds).
                    with self._lock:
                        idle, self._idle = self._idle, []
                    for other in idle:
                        _close_quietly(other)
                else:
                    try:
                        conn.raw.rollback()
                        self._give_back(conn)
                    except Exception:
                        _close_quietly(conn)
                if lost_now or code in _TRANSIENT:
                    raise _Transient(exc) from exc
                raise
            self._give_back(conn)
            return result

        try:
            return self._retrying(once)()
        except _Transient as exc:  # still failing after retry_for
            error = exc.error
            if isinstance(error, StoreUnavailable):  # no connection could be made
                raise error from error.__cause__
            reason = f"{type(error).__name__}: {error}"
            if _code(error) in _LOCK_ERRORS:
                advice = "other transactions held the rows for longer than retry_for; try again"
                raise StoreUnavailable(self.url, reason, advice) from error
            raise StoreUnavailable.server_down(self.url, reason) from error

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.raw.close()

    _write = _tx
    _read = _tx

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                conn.raw.close()

    # -- retention ------------------------------------------------------------------------------

    def prune(self, *, now: float | None = None) -> int:
        """Apply retention now: delete finished tasks past ``retention`` / ``failed_retention``,
        in batches of 1,000 (each its own transaction). Returns how many were deleted."""
        at = self.now(now)
        total = 0
        for statuses, kept in retention_classes(self.retention, self.failed_retention):
            params = {
                "statuses": [s.value for s in statuses],
                "cutoff": at - kept,
                "batch": _PRUNE_BATCH,
            }

            def batch(c: _Connection, params: dict[str, Any] = params) -> int:
                cur = c.raw.cursor()
                cur.execute(_sql.PRUNE_PICK, params)
                seqs = [r[0] for r in cur.fetchall()]
                if seqs:
                    cur.execute(_sql.PRUNE_DELETE, {"seqs": seqs})
                return len(seqs)

            while True:
                n = self._write(batch)
                total += n
                if n < _PRUNE_BATCH:
                    break
        return total

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
        got = super().lease(
            queues, worker_id, limit=limit, lease_seconds=lease_seconds, capacity=capacity, now=at
        )
        self._pruner.tick(at)
        return got

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
        at = self.now(now)
        out = super().complete_then_lease(
            items, queues, worker_id, limit=limit, lease_seconds=lease_seconds,
            capacity=capacity, now=at,
        )  # fmt: skip
        self._pruner.tick(at)
        return out
