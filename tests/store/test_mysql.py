"""What only the MySQL store does: its URL, schema versions, the dialect, retention, faults.

Everything runs on a real server (the session's throwaway MariaDB or
``RESILE_TEST_MYSQL_URL``), each test in a database of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pymysql
import pytest

import resile
from _mysql_server import create_database, drop_database
from _names_check import python_strings, spelled_states
from _postgres_server import free_port
from _proxy import Proxy, through
from _waits import returns_within, wait_for
from resile.queue import TaskSpec, TaskStatus
from resile.queue._names import Tally
from resile.queue.store import _sqlite_sql as lite
from resile.queue.store import open_store
from resile.queue.store.mysql import SCHEMA_VERSION, MySQLStore, SchemaError, _dialect, _sql
from resile.queue.worker import Worker

from .conftest import fill_to_count

T0 = 1_700_000_000.0


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "h")
    return TaskSpec(**kw)


def raw(url: str, database: str | None = None) -> pymysql.connections.Connection[Any]:
    """A plain autocommit connection (no resile)."""
    p = urlsplit(url)
    return pymysql.connect(
        host=p.hostname or "127.0.0.1",
        port=p.port or 3306,
        user=unquote(p.username or ""),
        password=unquote(p.password or ""),
        database=database,
        autocommit=True,
    )


@pytest.fixture
def url(mysql_url: str) -> Iterator[str]:
    """The session server's URL on a fresh database of the test's own (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield create_database(mysql_url, name)
    drop_database(mysql_url, name)


@pytest.fixture
def stores(url: str) -> Iterator[Callable[..., MySQLStore]]:
    """Open stores on the test's database (options as keywords); closed afterwards."""
    opened: list[MySQLStore] = []

    def factory(**options: Any) -> MySQLStore:
        s = open_store(url, **options)
        assert isinstance(s, MySQLStore)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


class TestUrl:
    """The URL and its options."""

    def test_connect_takes_mysql_and_mariadb_urls(self, url: str) -> None:
        """mysql:// and mariadb:// both open the MySQL store through resile.connect."""
        for u in (url, url.replace("mysql://", "mariadb://", 1)):
            q = resile.connect(u)
            try:
                assert isinstance(q.store, MySQLStore)
            finally:
                q.close()

    @pytest.mark.parametrize(
        ("query", "match"),
        [
            ("?retention=soon", "retention must be seconds, got 'soon'"),
            ("?pool_size=0", "pool_size must be an int >= 1, got 0"),
            ("?nope=1", "unknown option 'nope'"),
        ],
    )
    def test_bad_options_are_named(self, url: str, query: str, match: str) -> None:
        """A bad option fails naming the option and the value."""
        with pytest.raises(ValueError, match=match):
            open_store(url + query)

    def test_no_database_named(self, mysql_url: str) -> None:
        """A URL without a database is refused, saying so."""
        with pytest.raises(ValueError, match="names no database"):
            open_store(urlunsplit(urlsplit(mysql_url)._replace(path="")))

    def test_unreachable_server_is_one_clear_line_fast(self) -> None:
        """Nothing listening: ConnectionError naming the server (password hidden) within 5 s."""
        port = free_port()
        start = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            open_store(f"mysql://u:secret@127.0.0.1:{port}/db")
        assert time.monotonic() - start < 5
        assert f"127.0.0.1:{port}" in str(info.value) and "secret" not in str(info.value)
        assert "\n" not in str(info.value)


class TestSchema:
    """The schema is versioned, created on open, refused when newer."""

    def test_created_with_its_version(self, url: str, stores: Callable[..., MySQLStore]) -> None:
        """Opening creates the tables and stores SCHEMA_VERSION."""
        stores()
        with raw(url, urlsplit(url).path[1:]) as c, c.cursor() as cur:
            cur.execute(_sql.META_GET, {"key": _sql.VERSION_KEY})
            assert cur.fetchone() == (str(SCHEMA_VERSION),)

    def test_a_newer_schema_is_refused(self, url: str, stores: Callable[..., MySQLStore]) -> None:
        """A schema written by a newer resile is refused with a clear SchemaError."""
        stores().close()
        with raw(url, urlsplit(url).path[1:]) as c, c.cursor() as cur:
            cur.execute(_sql.META_SET, {"key": _sql.VERSION_KEY, "value": "99"})
        with pytest.raises(SchemaError, match="version 99 is newer than this resile"):
            open_store(url)

    def test_migrate_false_refuses_a_missing_schema(self, url: str) -> None:
        """With migrate=false an empty database is refused, pointing at `resile migrate`."""
        with pytest.raises(SchemaError, match="resile migrate"):
            open_store(f"{url}?migrate=false")

    def test_a_version_1_schema_is_migrated(
        self, url: str, stores: Callable[..., MySQLStore]
    ) -> None:
        """Tables made before traceparent, the counters and the counts get them on open, tasks
        kept and counted once."""
        first = stores()
        expected = fill_to_count(first)
        task = first.list(queue="q")[0]
        first.close()
        with raw(url, urlsplit(url).path[1:]) as c, c.cursor() as cur:
            cur.execute("ALTER TABLE resile_tasks DROP COLUMN traceparent")
            cur.execute("DROP TABLE resile_tallies")
            for event in ("insert", "update", "delete"):
                cur.execute(f"DROP TRIGGER resile_counts_{event}")
            cur.execute("DROP TABLE resile_counts")
            cur.execute(_sql.META_SET, {"key": _sql.VERSION_KEY, "value": "1"})
        s = stores()
        assert s.schema_version() == SCHEMA_VERSION == 3
        assert s.counts() == expected
        got = s.get(task.id)
        assert got is not None and got.traceparent is None
        made = s.create(
            TaskSpec(handler="h", queue="q", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        )
        assert s.get(made.id) == made
        (leased,) = s.lease("q", "w", now=time.time() + 1)
        assert s.complete(leased.id, "w") is not None
        assert sum(c[Tally.DONE] for c in s.tallies(since=0).values()) == 1


class TestDialect:
    """The SQLite store's statements, rendered for MySQL in one place."""

    def test_lease_reads_skip_locked_rows(self) -> None:
        """The lease's picks lock with SKIP LOCKED; the reclaim and a read by id FOR UPDATE."""
        for statement in (lite.READY_FIRST, lite.READY_NEXT):
            assert _dialect.render(statement).endswith(" FOR UPDATE SKIP LOCKED")
        for statement in (lite.SELECT_HELD, lite.select_expired(3)):
            assert _dialect.render(statement).endswith(" FOR UPDATE")
            assert "SKIP LOCKED" not in _dialect.render(statement)
        assert "FOR UPDATE" not in _dialect.render(lite.STATS)

    def test_the_lease_does_not_flip_ready_rows(self) -> None:
        """The UPDATE that cannot skip locked rows is not run; the picks read due rows directly."""
        assert _dialect.render(lite.flip_due(2)) == "DO 0"
        assert "ready" not in _dialect.render(lite.READY_FIRST)
        assert "due_at <= %(now)s" in _dialect.render(lite.READY_NEXT)

    def test_parameters_and_hints(self) -> None:
        """:name becomes %(name)s; SQLite's INDEXED BY hints are dropped."""
        rendered = _dialect.render(lite.next_due(2, gated=True)[2])
        assert "%(queue)s" in rendered and ":queue" not in rendered
        assert "INDEXED BY" not in rendered

    def test_own_sql_spells_no_state(self) -> None:
        """The MySQL modules' SQL gets every state injected."""
        for module in (_sql, _dialect):
            source = Path(module.__file__ or "").read_text("utf-8")
            assert [h for t in python_strings(source) for h in spelled_states(t)] == []


class TestRetention:
    """Retention per outcome, pruned in bounded batches."""

    def test_retention_per_outcome(self, stores: Callable[..., MySQLStore]) -> None:
        """prune() drops DONE/CANCELED past retention and FAILED past failed_retention only."""
        s = stores(retention=10.0, failed_retention=100.0)
        for i in range(3):
            s.create(spec(id=f"t{i}", max_retries=0), now=T0)
        got = s.lease("default", "w", limit=2, now=T0)
        s.complete(got[0].id, "w", now=T0)
        s.fail(got[1].id, "w", ValueError("x"), now=T0)
        s.cancel("t2", now=T0)
        assert s.prune(now=T0 + 5) == 0
        assert s.prune(now=T0 + 11) == 2
        assert [t.status for t in s.list()] == [TaskStatus.FAILED]
        assert s.prune(now=T0 + 101) == 1 and s.list() == []


class TestFaults:
    """Killed connections, lock waits, a worker across processes."""

    def test_killed_connections_are_replaced(
        self, url: str, stores: Callable[..., MySQLStore]
    ) -> None:
        """KILL of every pooled connection: the next call still works."""
        s = stores()
        s.create(spec(id="a"), now=T0)
        with raw(url) as c, c.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s",
                (urlsplit(url).path[1:],),
            )
            for (pid,) in cur.fetchall():
                cur.execute(f"KILL {int(pid)}")
        (task,) = s.lease("default", "w", now=T0)
        assert task.id == "a" and s.complete("a", "w", now=T0) is not None

    def test_a_locked_row_is_skipped_not_waited_for(
        self, url: str, stores: Callable[..., MySQLStore]
    ) -> None:
        """A due task locked by another transaction is skipped by lease: the next one is taken."""
        s = stores()
        s.create_many([spec(id="a"), spec(id="b")], now=T0)
        with raw(url, urlsplit(url).path[1:]) as c, c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT seq FROM resile_tasks WHERE id = 'a' FOR UPDATE")
            start = time.monotonic()
            got = s.lease("default", "w", now=T0)
            assert time.monotonic() - start < 2
            cur.execute("ROLLBACK")
        assert [t.id for t in got] == ["b"]

    def test_an_idle_worker_finds_another_processes_task(
        self, url: str, stores: Callable[..., MySQLStore]
    ) -> None:
        """No NOTIFY on MySQL: a short bounded poll finds a task another store created."""
        queue = resile.connect(url)
        ran = threading.Event()

        @queue.task(name="ping")
        def ping() -> None:
            ran.set()

        worker = Worker(queue, poll_interval=0.05, concurrency=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: worker._running_flag, 10, "the worker to start")  # type: ignore[attr-defined]
            stores().create(spec(handler="ping"))
            assert ran.wait(10)
        finally:
            worker.stop()
            thread.join(10)
            queue.close()


class TestSilentAndFrozen:
    """A connection that goes silent, a client frozen inside a transaction (issue 14)."""

    def test_a_silent_connection_is_dropped_and_the_call_run_again(
        self, url: str, stores: Callable[..., MySQLStore]
    ) -> None:
        """A pooled connection open but silent (a black-holed path): after read_timeout the store drops it and the call succeeds on a fresh one."""
        port = urlsplit(url).port
        assert port is not None
        proxy = Proxy(port)
        try:
            s = open_store(through(url, proxy), read_timeout=0.5, pool_size=1)
            s.create(spec(id="a"), now=T0)
            assert proxy.silence() >= 1
            start = time.monotonic()
            task = returns_within(lambda: s.get("a"), 10, "get on a silent connection")
            assert task is not None and task.id == "a"
            assert time.monotonic() - start >= 0.4  # it waited for the timeout, then retried
            s.close()
        finally:
            proxy.close()

    def test_a_frozen_transaction_loses_its_locks_and_cannot_commit(
        self, stores: Callable[..., MySQLStore]
    ) -> None:
        """MariaDB ends a session idle in a transaction holding a task's row lock after idle_timeout: the others' writes go on, and it cannot commit after."""
        s = stores(idle_timeout=1)
        s.create(spec(id="a"), now=T0)
        (task,) = s.lease("default", "w", now=T0)
        frozen = s._new_connection().raw  # a session with the store's own settings
        if "mariadb" not in frozen.get_server_info().lower():
            pytest.skip("MySQL has no idle_transaction_timeout (MariaDB's)")
        cur = frozen.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT seq FROM resile_tasks WHERE id = 'a' FOR UPDATE")
        done = returns_within(lambda: s.complete("a", "w", now=T0 + 1), 10, "complete")
        assert done is not None and done.status is TaskStatus.DONE
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            cur.execute("UPDATE resile_tasks SET attempts = 99")
            frozen.commit()
        got = s.get("a")
        assert got is not None and got.attempts == task.attempts
