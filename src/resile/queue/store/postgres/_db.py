"""The PostgreSQL store's connections: options, the pool, transactions with retries, the schema.

``Database`` owns everything that talks to the server without knowing what a
task is: it checks the options, opens the first connection itself (so an
unreachable server or a refused login is one clear line at once), keeps a
``psycopg_pool`` pool (a forked child opens its own), runs a body in one
transaction and runs it again with backoff after a lost connection, a
deadlock or a serialization failure, and creates or migrates the schema
under an advisory lock.

Bodies are plain functions of a cursor, or generators of ``(sql, params)``
steps (``drive`` / ``drive_async``), so that one sequence of statements can run
on the store's pool and on a caller's own sync or async connection.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from resile.backoff import Exponential
from resile.errors import StoreUnavailable
from resile.queue.store._sql_options import redact
from resile.queue.store.base import check_seconds
from resile.queue.store.postgres import _sql
from resile.queue.store.postgres._guard import Guard
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = [
    "RETRYABLE",
    "Again",
    "Connection",
    "Cursor",
    "Database",
    "Rows",
    "SchemaError",
    "Step",
    "bool_option",
    "drive",
    "drive_async",
    "seconds_option",
]

T = TypeVar("T")
Step = tuple[str, Mapping[str, Any] | None]
Rows = list[dict[str, Any]]
Cursor = psycopg.Cursor[dict[str, Any]]
Connection = psycopg.Connection[dict[str, Any]]


class SchemaError(RuntimeError):
    """The database's task schema cannot be used by this code (newer, or older without migrate)."""


class Again(Exception):
    """A race with a concurrent transaction was seen: run the whole transaction again."""


RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    # The server ended a session left idle in a transaction (idle_timeout: the worker was
    # frozen): that transaction rolled back; run it again on a fresh connection.
    psycopg.errors.IdleInTransactionSessionTimeout,
    PoolTimeout,
    Again,
)


def seconds_option(name: str, value: object, *, none_ok: bool) -> float | None:
    """``value`` as seconds >= 0 (``None`` allowed when ``none_ok``).

    Raises:
        ValueError: ``"PostgresStore: <name> must be ..., got <value>"``.
    """
    if value is None and none_ok:
        return None
    return check_seconds(
        value, f"PostgresStore: {name}", "seconds >= 0 or None" if none_ok else "seconds >= 0"
    )


def bool_option(name: str, value: object) -> bool:
    """``value`` as a bool (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``).

    Raises:
        ValueError: anything else, named with its value.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"PostgresStore: {name} must be true or false, got {value!r}")


def drive(cur: psycopg.Cursor[Any], steps: Generator[Step, Rows, T]) -> T:
    """Run a generator of statements on ``cur``, sending each one's rows back."""
    try:
        step = next(steps)
        while True:
            cur.execute(step[0], step[1])
            step = steps.send(cur.fetchall() if cur.description is not None else [])
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(cur: psycopg.AsyncCursor[Any], steps: Generator[Step, Rows, T]) -> T:
    """``drive`` on an async cursor."""
    try:
        step = next(steps)
        while True:
            await cur.execute(step[0], step[1])
            rows = await cur.fetchall() if cur.description is not None else []
            step = steps.send(rows)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Database:
    """Connections to one PostgreSQL database for the store in ``queries.schema``.

    Args:
        conninfo: a libpq connection string or URL.
        queries: the statements of the store's schema.
        pool_size: the most pooled connections.
        connect_timeout: seconds to wait for a connection.
        retry_for: seconds during which a transaction is run again after a
            transient failure (``RETRYABLE``).
        migrate: create or migrate an older schema (else ``SchemaError``).
        prepare: let psycopg prepare statements it runs often (``False`` behind
            PgBouncer's transaction pooling).
        read_timeout: seconds one transaction may wait on the server before its
            connection is dropped and the transaction run again on a fresh one
            (``None``: no bound); also TCP keepalives and ``tcp_user_timeout``.
        idle_timeout: the session's ``idle_in_transaction_session_timeout``
            (seconds, ``None``: the server's): a client frozen inside a
            transaction loses its session, and its row locks, that soon.

    Raises:
        ValueError: a bad option. ConnectionError: no connection can be made.
        SchemaError: the schema is newer than this code, or older and not ``migrate``.
    """

    def __init__(
        self,
        conninfo: str,
        queries: _sql.Queries,
        *,
        pool_size: int,
        connect_timeout: float,
        retry_for: float,
        migrate: bool,
        prepare: bool = True,
        read_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        if not isinstance(conninfo, str) or not conninfo:
            raise ValueError(f"PostgresStore: conninfo must be a non-empty str, got {conninfo!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"PostgresStore: pool_size must be an int >= 1, got {pool_size!r}")
        self.q = queries
        self.url = redact(conninfo)
        self.read_timeout = seconds_option("read_timeout", read_timeout, none_ok=True) or None
        self.idle_timeout = seconds_option("idle_timeout", idle_timeout, none_ok=True) or None
        self.conninfo = self._session_conninfo(conninfo)
        self.guard = Guard(self.read_timeout, f"PostgreSQL at {self.url}", self._drain)
        self.pool_size = pool_size
        self.prepare = bool(prepare)
        self.connect_timeout = float(
            seconds_option("connect_timeout", connect_timeout, none_ok=False) or 0.0
        )
        self.retry_for = float(seconds_option("retry_for", retry_for, none_ok=False) or 0.0)
        self.lock = threading.Lock()
        self.closed = False
        self._retrying = Retrying(
            on=RETRYABLE,
            backoff=Exponential(0.01, max_delay=1.0),
            stop=after_elapsed(self.retry_for),
            name=f"postgres transaction on {self.url}",
            quiet=True,  # a give-up is raised as StoreUnavailable, which says it all
        )
        self._pid = os.getpid()
        with self.connect(dict_rows=True) as conn, conn.transaction(), conn.cursor() as cur:
            drive(cur, self.schema_steps(bool_option("migrate", migrate)))
        self._pool = self._open_pool()

    def _session_conninfo(self, conninfo: str) -> str:
        """``conninfo`` with keepalives, ``tcp_user_timeout`` and the idle-in-transaction
        timeout added (what the caller set stays)."""
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"PostgresStore: bad conninfo {self.url!r}: {exc}") from None
        extra: dict[str, Any] = {}
        if self.read_timeout is not None:
            extra = {
                "keepalives": 1,
                "keepalives_idle": max(1, math.ceil(self.read_timeout / 2)),
                "keepalives_interval": max(1, math.ceil(self.read_timeout / 6)),
                "keepalives_count": 3,
                "tcp_user_timeout": math.ceil(self.read_timeout * 1000),
            }
        extra = {k: v for k, v in extra.items() if k not in given}
        if self.idle_timeout is not None:
            ms = max(1, math.ceil(self.idle_timeout * 1000))
            setting = f"-c idle_in_transaction_session_timeout={ms}"
            extra["options"] = f"{given['options']} {setting}" if given.get("options") else setting
        return make_conninfo(conninfo, **extra) if extra else conninfo

    def connect(
        self, *, dict_rows: bool = True, timeout: float | None = None
    ) -> psycopg.Connection[Any]:
        """A connection of our own (autocommit), or ``ConnectionError`` in one line."""
        wait = self.connect_timeout if timeout is None else timeout
        try:
            return psycopg.connect(
                self.conninfo,
                autocommit=True,
                row_factory=dict_row if dict_rows else psycopg.rows.tuple_row,
                connect_timeout=max(1, math.ceil(wait)),
            )
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc, "cannot connect: ") from exc

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
        pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": max(1, math.ceil(self.connect_timeout)),
                # None: never prepare (a pooler may hand the next transaction another session).
                "prepare_threshold": 5 if self.prepare else None,
            },
            timeout=self.connect_timeout,
            open=False,
            name=f"resile-{self.q.schema}",
        )
        pool.open(wait=False)
        return pool

    def _drain(self) -> None:
        """Replace every pooled connection (the guard found one silent: the others may be)."""
        if self._pid == os.getpid() and not self.closed:
            self._pool.drain()

    def _ensure(self) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
        """The pool; refuses a closed store; a forked child opens its own."""
        if self.closed:
            raise RuntimeError(f"the PostgreSQL store at {self.url} is closed")
        if self._pid != os.getpid():
            # The parent's pool threads do not exist here and its sockets are the parent's:
            # leave them alone and open our own.
            self.lock = threading.Lock()
            self._pool = self._open_pool()
            self._pid = os.getpid()
        return self._pool

    def check_open(self) -> None:
        """Raise ``RuntimeError`` when the store is closed."""
        self._ensure()

    def tx(self, body: Callable[[Cursor], T]) -> T:
        """Run ``body`` in one transaction, again (with backoff) after a transient failure."""
        pool = self._ensure()
        lost: list[bool] = []

        def once() -> T:
            with self._lend(pool, lost) as conn, conn.transaction(), conn.cursor() as cur:
                return body(cur)

        return self._call(once)

    def bare(self, body: Callable[[Cursor], T]) -> T:
        """Run ``body`` outside a transaction block (the pool's connections autocommit).

        For a body of one statement (atomic by itself) or of reads that need no
        common snapshot: no ``BEGIN`` and ``COMMIT``, two round trips fewer.
        Again (with backoff) after a transient failure, as ``tx``.
        """
        pool = self._ensure()
        lost: list[bool] = []

        def once() -> T:
            with self._lend(pool, lost) as conn, conn.cursor() as cur:
                return body(cur)

        return self._call(once)

    def pipeline(self, body: Callable[[Connection], Callable[[], T]]) -> T:
        """Run the statements ``body(conn)`` sends in one pipeline, then its reader.

        ``body`` executes its statements on cursors of ``conn`` without reading them
        and returns a function that reads them; that runs once the server answered.
        The statements go in one round trip (psycopg's pipeline mode, one ``Sync``)
        and run in one implicit transaction: all of them commit, or none (no ``BEGIN``
        and ``COMMIT`` of their own). Again (with backoff) after a transient failure,
        as ``tx``.
        """
        pool = self._ensure()
        lost: list[bool] = []

        def once() -> T:
            with self._lend(pool, lost) as conn:
                with conn.pipeline():
                    read = body(conn)
                return read()

        return self._call(once)

    @contextlib.contextmanager
    def _lend(
        self, pool: ConnectionPool[psycopg.Connection[dict[str, Any]]], lost: list[bool]
    ) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """The connection for one try of a transaction, watched by ``guard``: the pool's;
        after a try lost its connection (``lost`` not empty), one made now for this try.

        The pool refills in the background, and after a failed connection attempt it
        waits 1 s, then 2, 4 ... before the next one (psycopg_pool's reconnect backoff),
        while ``getconn`` waits up to ``connect_timeout``: under repeated resets a retry
        that waited on the pool could not write for longer than a lease.
        """
        try:
            if not lost:
                with pool.connection() as conn, self.guard.watch(conn):
                    yield conn
                return
            own = psycopg.connect(
                self.conninfo,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, math.ceil(self.connect_timeout)),
                prepare_threshold=None,
            )
            with own, self.guard.watch(own):
                yield own
        except (psycopg.OperationalError, PoolTimeout):
            lost.append(True)
            raise

    def _call(self, once: Callable[[], T]) -> T:
        try:
            return self._retrying(once)()
        except Again as exc:  # a race that kept recurring for retry_for seconds
            raise RuntimeError(f"{self.url}: a transaction kept meeting concurrent writes") from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:  # still down after retry_for
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: BaseException, what: str = "") -> StoreUnavailable:
        """A failure that outlasted ``retry_for`` (``exc``) as the one "cannot write now"
        error: a lost server, or locks held elsewhere (a statement timeout, deadlocks)."""
        lines = str(exc).strip().splitlines()
        reason = f"{what}{lines[-1] if lines else type(exc).__name__}"
        if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.TransactionRollback)):
            return StoreUnavailable(
                self.url,
                f"{type(exc).__name__}: {reason}",
                "other transactions held the rows or the table for longer than retry_for "
                "(or statement_timeout); try again",
            )
        return StoreUnavailable.server_down(self.url, reason)

    def run(
        self, steps: Callable[[bool], Generator[Step, Rows, T]], *, single_first: bool = False
    ) -> T:
        """``tx`` of a generator of statements: ``steps(first)`` makes a fresh one for each try.

        ``single_first``: the first try is one statement, run without a transaction
        block (a statement is atomic by itself: one round trip instead of three).
        """
        pool = self._ensure()
        tries = 0
        lost: list[bool] = []

        def once() -> T:
            nonlocal tries
            tries += 1
            first = tries == 1
            with self._lend(pool, lost) as conn:
                if single_first and first:
                    with conn.cursor() as cur:
                        return drive(cur, steps(True))
                with conn.transaction(), conn.cursor() as cur:
                    return drive(cur, steps(first))

        return self._call(once)

    def autocommit(self, statement: str) -> None:
        """Run one statement outside a transaction block (``VACUUM``) on a pooled connection."""
        with self._ensure().connection() as conn:
            conn.execute(statement)

    def close(self) -> None:
        """Close the pool (in the process that opened it); idempotent."""
        self.closed = True
        if self._pid == os.getpid():
            self._pool.close()

    # -- schema ---------------------------------------------------------------------------------

    def schema_steps(self, migrate: bool) -> Generator[Step, Rows, int]:
        """Check the schema's version and create or migrate it; returns the version found.

        Raises:
            SchemaError: newer than this code, or older and not ``migrate``.
        """
        q = self.q
        yield q.MIGRATION_LOCK, {"key": q.LOCK_KEY}
        found = yield from self.version_steps()
        if found > _sql.SCHEMA_VERSION:
            raise SchemaError(
                f"{self.url}: schema {q.schema!r} has task schema version {found}, newer than "
                f"this resile ({_sql.SCHEMA_VERSION}); upgrade resile"
            )
        if found < _sql.SCHEMA_VERSION:
            if not migrate:
                raise SchemaError(
                    f"{self.url}: schema {q.schema!r} is at task schema version {found}, this "
                    f"resile needs {_sql.SCHEMA_VERSION}; run `resile migrate --db URL`"
                )
            # The schema script is idempotent and migrates: version 2 adds the traceparent
            # column to both task tables (ADD COLUMN IF NOT EXISTS) and the counters' table.
            yield q.SCHEMA, None
            # Version 3 counts tasks per (queue, status): counted once here, then by triggers.
            yield q.COUNTS_INIT, None
            yield q.META_SET, {"key": q.VERSION_KEY, "value": str(_sql.SCHEMA_VERSION)}
        return found

    def version_steps(self) -> Generator[Step, Rows, int]:
        """The task schema version stored in the database (0: none)."""
        q = self.q
        (exists,) = yield q.SCHEMA_EXISTS, {"meta": q.META_TABLE}
        if not exists["found"]:
            return 0
        rows = yield q.META_GET, {"key": q.VERSION_KEY}
        return int(rows[0]["value"]) if rows else 0
