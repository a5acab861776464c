"""What only the SQLite store does: WAL, locks, corrupt rows, forks, URLs."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _components import missing
from _names_check import python_strings, spelled_states, sql_columns, unknown_fields
from resile.errors import StoreUnavailable
from resile.queue import TaskSpec, TaskStatus
from resile.queue._names import FIELDS, META_TABLE, TASKS_TABLE
from resile.queue.store import _sqlite_sql as sql
from resile.queue.store.sqlite import CHECKPOINT_EVERY, WAL_LIMIT, SQLiteStore
from resile.testing import no_waits

from .conftest import T0, fill_to_count


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "tasks.db")


def raw(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


class TestSetup:
    def test_wal_and_schema(self, path: str) -> None:
        """A file store runs in WAL mode and records its schema version."""
        with SQLiteStore(path):
            c = raw(path)
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            version = c.execute(f"SELECT value FROM {META_TABLE}").fetchone()[0]
            assert version == "1"
            c.close()

    def test_reopen_keeps_tasks(self, path: str) -> None:
        """Tasks survive closing and reopening the file."""
        with SQLiteStore(path) as s:
            s.create(TaskSpec("h", {"a": 1}, id="x"), now=T0)
        with SQLiteStore(path) as s:
            t = s.get("x")
            assert t is not None and t.params == {"a": 1}

    def test_newer_schema_is_refused(self, path: str) -> None:
        """A file written by a newer resile is not touched."""
        SQLiteStore(path).close()
        c = raw(path)
        c.execute(f"UPDATE {META_TABLE} SET value = '99'")
        c.close()
        with pytest.raises(RuntimeError, match="newer"):
            SQLiteStore(path)

    def test_not_a_database(self, path: str) -> None:
        """A file that is not SQLite fails with sqlite3.DatabaseError."""
        Path(path).write_bytes(b"definitely not sqlite" * 100)
        with pytest.raises(sqlite3.DatabaseError):
            SQLiteStore(path)

    def test_a_refused_file_leaves_no_connection_open(
        self, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When opening fails (not a database, a newer schema), the connection is closed."""
        opened: list[sqlite3.Connection] = []
        connect = sqlite3.connect

        def tracking(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            opened.append(conn)
            return conn

        monkeypatch.setattr(sqlite3, "connect", tracking)
        Path(path).write_bytes(b"definitely not sqlite" * 100)
        with pytest.raises(sqlite3.DatabaseError):
            SQLiteStore(path)
        assert len(opened) == 1
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            opened[0].execute("SELECT 1")

    def test_closed_store(self) -> None:
        """A closed store refuses calls clearly; close is idempotent."""
        s = SQLiteStore()
        s.close()
        s.close()
        with pytest.raises(RuntimeError, match="closed"):
            s.get("x")

    @pytest.mark.parametrize(
        "kwargs",
        [{"busy_timeout": -1}, {"lock_timeout": float("nan")}, {"synchronous": "sometimes"}],
    )
    def test_bad_options(self, kwargs: dict[str, object]) -> None:
        """Bad options fail naming the option."""
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            SQLiteStore(":memory:", **kwargs)  # type: ignore[arg-type]

    def test_url_forms(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """sqlite:///relative, sqlite:////absolute and sqlite:///:memory: all open."""
        monkeypatch.chdir(tmp_path)
        with SQLiteStore.from_url("sqlite:///rel.db") as s:
            assert s.path == "rel.db"
        assert (tmp_path / "rel.db").exists()
        absolute = tmp_path / "abs.db"
        with SQLiteStore.from_url(f"sqlite:///{absolute}") as s:
            assert s.path == str(absolute)
        with SQLiteStore.from_url("sqlite:///:memory:") as s:
            assert s.memory
        with pytest.raises(ValueError, match="names no file"):
            SQLiteStore.from_url("sqlite:///")


def _rendered_queries() -> list[str]:
    """Every statement of the SQL module: its constants and its builders, with sample sizes."""
    out = [v for k, v in vars(sql).items() if k.isupper() and isinstance(v, str) and " " in v]
    for n in (1, 3):
        out += [sql.select_expired(n), sql.flip_due(n), *sql.next_due(n, gated=True)]
        out += [*sql.next_due(n, gated=False), sql.in_list("q", n)]
        out += [sql.purge(statuses=n, queue=q) for q in (True, False)]
        out += [sql.list_tasks(queue=q, statuses=n, after=a) for q in (True, False) for a in (1, 0)]
    out += [sql.list_tasks(queue=False, statuses=None, after=False), *sql.OLDEST_DUE]
    out += [sql.set_field(c, holder=h) for c in ("progress", "checkpoint") for h in (True, False)]
    return out


class TestNames:
    """The SQL takes its states from the names module and spells only defined fields."""

    @pytest.mark.parametrize("module", ["_sqlite_sql.py", "sqlite.py"])
    def test_no_state_is_spelled_in_the_sql(self, module: str) -> None:
        """No string of the SQLite modules spells a state: they are injected from TaskStatus."""
        source = (Path(sql.__file__).parent / module).read_text("utf-8")
        spelled = [hit for text in python_strings(source) for hit in spelled_states(text)]
        assert spelled == []

    def test_every_column_is_a_defined_field(self) -> None:
        """Every column a statement names is a TaskField."""
        for query in _rendered_queries():
            assert unknown_fields(sql_columns(query)) == set(), query

    def test_the_table_has_exactly_defined_fields(self, path: str) -> None:
        """The tasks table's columns, as created, are TaskField values."""
        SQLiteStore(path).close()
        c = raw(path)
        columns = {r[1] for r in c.execute(f"PRAGMA table_info({TASKS_TABLE})")}
        c.close()
        assert columns - FIELDS == set()
        assert {"ready", "has_resources", "seq", "status"} <= columns

    def test_states_are_injected(self) -> None:
        """The rendered statements do hold the states, as SQL literals (the partial indexes)."""
        assert f"status = '{TaskStatus.PENDING.value}' AND ready = 1" in sql.SCHEMA
        assert f"status = '{TaskStatus.PENDING.value}' AND ready = 1" in sql.READY_FIRST
        assert "('CANCELED', 'FAILED')" in sql.REQUEUE
        with pytest.raises(ValueError, match="column must be one of"):
            sql.set_field("status", holder=False)


class TestCorruptRows:
    def _corrupt(self, path: str, task_id: str, column: str, value: str) -> None:
        c = raw(path)
        c.execute(f"UPDATE {TASKS_TABLE} SET {column} = ? WHERE id = ?", (value, task_id))
        c.close()

    @pytest.mark.parametrize(
        ("column", "value"),
        [("params", "{not json"), ("params", "[1, 2]"), ("history", "{{"), ("resources", '"x"')],
    )
    def test_lease_fails_the_corrupt_task_and_goes_on(
        self, path: str, column: str, value: str
    ) -> None:
        """A task with an unreadable column goes to FAILED with the reason; lease takes the next."""
        with SQLiteStore(path) as s:
            s.create(TaskSpec("h", {"a": 1}, id="bad"), now=T0)
            s.create(TaskSpec("h", {"a": 2}, id="good"), now=T0)
            self._corrupt(path, "bad", column, value)
            got = s.lease("default", "w", limit=5, now=T0)
            assert [t.id for t in got] == ["good"]
            bad = s.get("bad")  # readable again, with defaults for the broken column
            assert bad is not None and bad.status is TaskStatus.FAILED
            assert bad.last_error is not None and bad.last_error.type == "CorruptTask"
            assert repr(column) in bad.last_error.message
            c = raw(path)
            kept = c.execute(f"SELECT {column} FROM {TASKS_TABLE} WHERE id = 'bad'").fetchone()[0]
            c.close()
            assert kept == value  # nothing stored is thrown away
            assert s.list(status="FAILED")[0].id == "bad"

    def test_corrupt_backoff_dead_letters_on_failure(self, path: str) -> None:
        """A failure of a task whose stored policy is unusable dead-letters it with the reason."""
        with SQLiteStore(path) as s:
            s.create(TaskSpec("h", id="a", max_retries=5), now=T0)
            self._corrupt(path, "a", "backoff", json.dumps({"type": "wobbly"}))
            s.lease("default", "w", now=T0)
            t = s.fail("a", "w", RuntimeError("boom"), now=T0)
            assert t is not None and t.status is TaskStatus.FAILED
            assert t.last_error is not None and "backoff policy is unusable" in t.last_error.message
            assert "RuntimeError: boom" in t.last_error.message

    def test_corrupt_checkpoint_reads_as_none(self, path: str) -> None:
        """get_checkpoint of an unreadable checkpoint is None, not a crash."""
        with SQLiteStore(path) as s:
            s.create(TaskSpec("h", id="a"), now=T0)
            self._corrupt(path, "a", "checkpoint", "{oops")
            assert s.get_checkpoint("a") is None


class TestLocking:
    def test_locked_database_is_retried_with_backoff(self, path: str) -> None:
        """A write that finds the database locked waits and retries instead of failing."""
        with SQLiteStore(path, busy_timeout=0, lock_timeout=10) as s:
            blocker = raw(path)
            blocker.execute("BEGIN IMMEDIATE")
            # Read the clock before the timer starts: the commit comes >= 0.3 s after it,
            # however late this thread runs again on a loaded machine.
            started = time.monotonic()
            threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
            t = s.create(TaskSpec("h", id="a"), now=T0)
            assert t.id == "a" and time.monotonic() - started >= 0.25
            blocker.close()

    def test_gives_up_after_lock_timeout(self, path: str) -> None:
        """After lock_timeout StoreUnavailable is raised, naming the file; SQLite's error is its cause."""
        with SQLiteStore(path, busy_timeout=0, lock_timeout=0.2) as s:
            blocker = raw(path)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreUnavailable, match="locked") as got:
                    s.create(TaskSpec("h"), now=T0)
                assert path in str(got.value) and "lock_timeout" in str(got.value)
                assert isinstance(got.value.__cause__, sqlite3.OperationalError)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert s.stats()[TaskStatus.PENDING] == 0

    def test_readers_do_not_block_on_a_writer(self, path: str) -> None:
        """WAL: get/list/stats work while another connection holds the write lock."""
        with SQLiteStore(path, busy_timeout=0, lock_timeout=0) as s:
            s.create(TaskSpec("h", id="a"), now=T0)
            blocker = raw(path)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                assert s.get("a") is not None and s.stats()[TaskStatus.PENDING] == 1
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
class TestFork:
    def test_forked_child_opens_its_own_connection(self, path: str) -> None:
        """A store used in a forked child works there and leaves the parent's usable."""
        with SQLiteStore(path) as s:
            s.create(TaskSpec("h", id="parent"), now=T0)
            with warnings.catch_warnings():
                # Python 3.12+ warns when forking with threads alive; the child only uses SQLite.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    s.create(TaskSpec("h", id="child"), now=T0)
                    code = 0 if s.get("parent") is not None else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert s.get("child") is not None


class TestAddedColumns:
    def test_a_file_made_before_traceparent_gets_the_column(self, tmp_path: Path) -> None:
        """Opening a version-1 file without the traceparent column adds it; tasks keep working."""
        import sqlite3

        from resile.queue import TaskSpec
        from resile.queue.store.sqlite import SQLiteStore

        path = tmp_path / "old.db"
        SQLiteStore(str(path)).close()
        with sqlite3.connect(path) as old:
            old.execute("ALTER TABLE resile_tasks DROP COLUMN traceparent")
        trace = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        with SQLiteStore(str(path)) as store:
            made = store.create(TaskSpec("h", traceparent=trace))
            got = store.get(made.id)
        assert got is not None and got.traceparent == trace

    def test_a_file_made_before_the_counts_is_counted_once(self, tmp_path: Path) -> None:
        """Opening a file without the counts table adds it and its triggers, counting the tasks
        there once; later changes are counted by the triggers."""
        path = str(tmp_path / "old.db")
        with SQLiteStore(path) as store:
            expected = fill_to_count(store)
        with sqlite3.connect(path) as old:
            for event in ("insert", "update", "delete"):
                old.execute(f"DROP TRIGGER resile_counts_{event}")
            old.execute("DROP TABLE resile_counts")
        zero = dict.fromkeys(TaskStatus, 0)
        with SQLiteStore(path) as store:
            assert store.counts() == expected
            store.lease("q0", "w")
        with SQLiteStore(path) as store:  # opened again: not counted a second time
            assert store.counts()["q0"] == {**zero, TaskStatus.PENDING: 2, TaskStatus.DOING: 1}


def _wal_size(path: str) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


class TestWalBound:
    def test_the_wal_stays_within_wal_limit(self, path: str) -> None:
        """Hundreds of writes never grow the WAL much past wal_limit (SQLite's default lets it
        reach ~4 MB and keeps it there)."""
        biggest = 0
        with SQLiteStore(path) as s:
            assert s.wal_limit == WAL_LIMIT == 1 << 20
            for i in range(700):
                s.create(TaskSpec("h", {"blob": "x" * 4000}, id=f"t{i}"), now=T0)
                biggest = max(biggest, _wal_size(path))
            assert s.stats()[TaskStatus.PENDING] == 700
        assert biggest <= WAL_LIMIT * 1.25, biggest

    def test_an_idle_store_truncates_its_wal(self, path: str) -> None:
        """The first write CHECKPOINT_EVERY seconds after the last truncation checkpoints the
        WAL and truncates it to nothing."""
        with no_waits() as clock, SQLiteStore(path) as s:
            for i in range(50):
                s.create(TaskSpec("h", {"blob": "x" * 4000}, id=f"t{i}"), now=T0)
            assert _wal_size(path) > 100_000
            clock.advance(CHECKPOINT_EVERY)
            s.create(TaskSpec("h", id="last"), now=T0)
            assert _wal_size(path) == 0
            assert s.stats()[TaskStatus.PENDING] == 51

    def test_wal_limit_option(self, path: str) -> None:
        """wal_limit is read from the URL and checked: bytes >= 65536, named when wrong."""
        with SQLiteStore.from_url(f"sqlite:///{path}?wal_limit=131072") as s:
            assert s.wal_limit == 131072
            c = raw(path)
            assert c.execute("PRAGMA journal_size_limit").fetchone()[0] == -1  # per connection
            c.close()
        with pytest.raises(ValueError, match="wal_limit must be an int of bytes >= 65536, got 10"):
            SQLiteStore(path, wal_limit=10)
        with pytest.raises(ValueError, match="wal_limit must be bytes"):
            SQLiteStore.from_url(f"sqlite:///{path}?wal_limit=big")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs), mounted for the test: only possible as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        missing("a small file system", "mounting a 4 MiB tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing("a small file system", f"mount -t tmpfs failed: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its file system has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


class TestDiskFull:
    def test_a_full_disk_is_store_unavailable_and_the_store_recovers(
        self, small_disk: Path
    ) -> None:
        """On a full file system a write raises StoreUnavailable (naming the file, saying to
        free space); stored tasks stay readable and whole; once space returns the same
        store writes again, with no restart."""
        path = str(small_disk / "tasks.db")
        with SQLiteStore(path) as s:
            for i in range(20):
                s.create(TaskSpec("h", {"i": i}, id=f"before-{i}"), now=T0)
            filler = _fill(small_disk)
            big = [TaskSpec("h", {"blob": "y" * 8000}, id=f"big-{i}") for i in range(100)]
            with pytest.raises(StoreUnavailable, match="full") as got:
                s.create_many(big, now=T0)
            message = str(got.value)
            assert path in message and "free space" in message
            assert isinstance(got.value.__cause__, sqlite3.OperationalError)
            for i in range(20):
                t = s.get(f"before-{i}")
                assert t is not None and t.params == {"i": i}
            assert s.stats()[TaskStatus.PENDING] == 20  # nothing of the refused batch
            filler.unlink()
            s.create_many(big, now=T0)
            assert s.stats()[TaskStatus.PENDING] == 120
            (leased,) = s.lease("default", "w", limit=1, now=T0)
            assert s.complete(leased.id, "w", "ok", now=T0) is not None
        with raw(path) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


class TestOldestDueIndex:
    def test_oldest_due_at_reads_two_index_heads(self, tmp_path: Path) -> None:
        """oldest_due_at searches the ready and delayed due-time indexes; it scans no table."""
        with SQLiteStore(str(tmp_path / "q.db")) as s:
            s.create_many([TaskSpec("h", delay=i % 3) for i in range(30)], now=T0)
            conn = sqlite3.connect(str(tmp_path / "q.db"))
            try:
                plan = [
                    row[3]
                    for query in sql.OLDEST_DUE
                    for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", {"queue": "q"})
                ]
            finally:
                conn.close()
        searches = [p for p in plan if p.startswith("SEARCH")]
        assert any(f"INDEX {TASKS_TABLE}_ready_due" in p for p in searches), plan
        assert any(f"INDEX {TASKS_TABLE}_delayed" in p for p in searches), plan
        assert not any(p.startswith("SCAN") for p in plan), plan
