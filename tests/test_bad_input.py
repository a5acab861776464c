"""Bad input, in one table: each row is an input a user may get wrong, the error they see,
and the proof that nothing stored was harmed.

Every row runs against a real SQLite file that already holds two tasks (one pending, one
done); after the row, the file holds exactly what it held (every field of every task),
and a file the row pointed at is byte for byte what it was. The rows about servers use
loopback ports where nothing listens, never the machine's own services.
``docs/guarantees.md`` ("Bad input") lists the same rows.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import resile
from resile.errors import StoreUnavailable
from resile.queue import TaskStatus
from resile.queue._names import MAX_PARAMS_BYTES, META_TABLE, TASKS_TABLE


class Env:
    """A SQLite store file with two tasks, and what to compare it with afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.path = tmp / "tasks.db"
        self.url = f"sqlite:///{self.path}"
        q = self.open()
        q.enqueue("add", {"a": 3, "b": 4}, id="done")
        (t,) = q.store.lease("default", "setup")
        assert q.store.complete(t.id, "setup", 7) is not None
        # Due in an hour: the rows' burst workers and leases leave it alone.
        q.enqueue("add", {"a": 1, "b": 2}, id="pending", delay=3600)
        q.close()
        self.before = self.snapshot()

    def open(self) -> resile.Queue:
        q = resile.connect(self.url)

        @q.task(name="add")
        def add(a: int, b: int) -> int:
            return a + b

        return q

    def snapshot(self) -> dict[str, Any]:
        """Every task of the file, all its fields (read with sqlite3, not through resile)."""
        c = sqlite3.connect(self.path)
        c.row_factory = sqlite3.Row
        try:
            rows = c.execute(f"SELECT * FROM {TASKS_TABLE} ORDER BY id").fetchall()
            return {r["id"]: dict(r) for r in rows}
        finally:
            c.close()

    def unharmed(self) -> None:
        assert self.snapshot() == self.before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raises(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error was raised")


def _enqueue(env: Env, *args: Any, **kwargs: Any) -> BaseException:
    q = env.open()
    try:
        return _raises(lambda: q.enqueue(*args, **kwargs))
    finally:
        q.close()


# -- the rows -----------------------------------------------------------------------------------


def malformed_scheme(env: Env) -> str:
    err = _raises(lambda: resile.connect(f"sqlit:///{env.tmp / 'other.db'}"))
    assert isinstance(err, ValueError) and not (env.tmp / "other.db").exists()
    return str(err)


def malformed_slashes(env: Env) -> str:
    err = _raises(lambda: resile.connect("sqlite://tasks.db"))
    assert isinstance(err, ValueError)
    return str(err)


def malformed_port(env: Env) -> str:
    err = _raises(lambda: resile.connect("redis://app:s3cret@127.0.0.1:63o9/0"))
    assert isinstance(err, ValueError) and "s3cret" not in str(err)
    return str(err)


def malformed_option(env: Env) -> str:
    err = _raises(lambda: resile.connect(f"{env.url}?busy_timeout=soon"))
    assert isinstance(err, ValueError)
    return str(err)


def malformed_postgres(env: Env) -> str:
    pytest.importorskip("psycopg")
    err = _raises(lambda: resile.connect("postgresql://"))
    assert isinstance(err, ValueError)
    return str(err)


def _unreachable(url: str) -> str:
    def go() -> None:
        q = resile.connect(url)
        try:
            q.stats()  # Redis connects on first use
        finally:
            q.close()

    err = _raises(go)
    assert isinstance(err, StoreUnavailable) and "s3cret" not in str(err)
    return str(err)


def unreachable_redis(env: Env) -> str:
    pytest.importorskip("redis")
    return _unreachable(f"redis://:s3cret@127.0.0.1:{_free_port()}/0?retry_for=0.2")


def unreachable_postgres(env: Env) -> str:
    pytest.importorskip("psycopg")
    return _unreachable(
        f"postgresql://u:s3cret@127.0.0.1:{_free_port()}/db?connect_timeout=1&retry_for=0"
    )


def unreachable_mysql(env: Env) -> str:
    pytest.importorskip("pymysql")
    return _unreachable(
        f"mysql://u:s3cret@127.0.0.1:{_free_port()}/db?connect_timeout=1&retry_for=0"
    )


def not_a_database(env: Env) -> str:
    notes = env.tmp / "notes.db"
    notes.write_text("these are notes, not a database\n" * 100, encoding="utf-8")
    before = _digest(notes)
    err = _raises(lambda: resile.connect(f"sqlite:///{notes}"))
    assert _digest(notes) == before and not Path(f"{notes}-wal").exists()
    return str(err)


def newer_schema(env: Env) -> str:
    c = sqlite3.connect(env.path)
    c.execute(f"UPDATE {META_TABLE} SET value = '99' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    err = _raises(env.open)
    c = sqlite3.connect(env.path)
    (version,) = c.execute(
        f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"
    ).fetchone()
    c.execute(f"UPDATE {META_TABLE} SET value = '1' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    assert version == "99"  # refused, not migrated down
    return str(err)


def params_not_json(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": {1, 2}, "b": 1}))


def params_nan(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": float("nan"), "b": 1}))


def params_oversize(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": "x" * MAX_PARAMS_BYTES, "b": 1}, id="big"))


def delay_negative(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": 1, "b": 1}, delay=-1))


def delay_nan(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": 1, "b": 1}, delay=float("nan")))


def due_at_nan(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": 1, "b": 1}, due_at=float("nan")))


def backoff_negative(env: Env) -> str:
    return str(_raises(lambda: resile.Constant(-1.0)))


def unknown_handler_enqueue(env: Env) -> str:
    return str(_enqueue(env, "no_such_handler", {}))


def _run_one(env: Env, handler: str, params: dict[str, Any], fn: Any = None) -> resile.Task:
    """Enqueue one task (id "row"), run a burst worker, return the task; then delete it so
    that the two tasks of the file are compared alone."""
    q = env.open()
    try:
        if fn is not None:
            q.task(name=handler, max_retries=0)(fn)
        q.enqueue(handler, params, id="row", strict=False, max_retries=0)
        resile.Worker(q, concurrency=1).run(burst=True, wait_for_scheduled=False)
        t = q.get("row")
        assert t is not None
        return t
    finally:
        q.close()
        c = sqlite3.connect(env.path)
        c.execute(f"DELETE FROM {TASKS_TABLE} WHERE id = 'row'")
        c.commit()
        c.close()


def unknown_handler_worker(env: Env) -> str:
    t = _run_one(env, "no_such_handler", {})
    assert t.status is TaskStatus.FAILED and t.last_error is not None
    return f"{t.last_error.type}: {t.last_error.message}"


def result_not_json(env: Env) -> str:
    t = _run_one(env, "returns_a_set", {}, fn=lambda: {1, 2})
    assert t.status is TaskStatus.FAILED and t.last_error is not None
    return f"{t.last_error.type}: {t.last_error.message}"


def params_not_fitting(env: Env) -> str:
    return str(_enqueue(env, "add", {"a": 1, "c": 2}))


def corrupt_row(env: Env) -> str:
    q = env.open()
    q.enqueue("add", {"a": 1, "b": 1}, id="row", priority=-1)
    c = sqlite3.connect(env.path)
    c.execute(f"UPDATE {TASKS_TABLE} SET params = '{{not json' WHERE id = 'row'")
    c.commit()
    c.close()
    try:
        assert q.store.lease("default", "w", limit=1) == []  # the other task is not due
    finally:
        q.close()
    c = sqlite3.connect(env.path)
    status, error, params = c.execute(
        f"SELECT status, last_error, params FROM {TASKS_TABLE} WHERE id = 'row'"
    ).fetchone()
    c.execute(f"DELETE FROM {TASKS_TABLE} WHERE id = 'row'")
    c.commit()
    c.close()
    assert status == TaskStatus.FAILED.value and params == "{not json"  # the value is kept
    err = json.loads(error)
    return f"{err['type']}: {err['message']}"


BROKEN_MODULE = textwrap.dedent(
    """
    import resile
    queue = resile.connect({url!r})
    raise RuntimeError("the settings file is missing")
    """
)


def _cli_error(env: Env, *args: str) -> str:
    """``python -m resile ARGS``: must exit 2 with no traceback; its last stderr line."""
    done = subprocess.run(
        [sys.executable, "-m", "resile", *args],
        cwd=env.tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def queue_module_fails(env: Env) -> str:
    (env.tmp / "broken_tasks.py").write_text(BROKEN_MODULE.format(url=env.url), encoding="utf-8")
    return _cli_error(env, "worker", "broken_tasks:queue", "--burst")


def lease_flag_nan(env: Env) -> str:
    return _cli_error(env, "worker", "json:queue", "--lease", "nan")


@dataclass(frozen=True)
class Row:
    input: str
    run: Callable[[Env], str]
    seen: str  # a part of the error the user sees


ROWS = {
    "url-scheme": Row("`sqlit:///tasks.db`", malformed_scheme, "unknown scheme 'sqlit'"),
    "url-slashes": Row("`sqlite://tasks.db`", malformed_slashes, "three slashes"),
    "url-port": Row(
        "`redis://app:s3cret@127.0.0.1:63o9/0`", malformed_port, "port must be a number"
    ),
    "url-option": Row(
        "`sqlite:///tasks.db?busy_timeout=soon`", malformed_option, "must be seconds, got 'soon'"
    ),
    "url-postgres-empty": Row(
        "`postgresql://`", malformed_postgres, "names no server and no database"
    ),
    "unreachable-redis": Row(
        "Redis URL, nothing listening", unreachable_redis, "cannot be written now"
    ),
    "unreachable-postgres": Row(
        "PostgreSQL URL, nothing listening", unreachable_postgres, "cannot connect"
    ),
    "unreachable-mysql": Row("MySQL URL, nothing listening", unreachable_mysql, "cannot connect"),
    "not-a-database": Row(
        "a text file as `sqlite:///notes.db`", not_a_database, "notes.db: file is not a database"
    ),
    "newer-schema": Row(
        "a file of schema version 99", newer_schema, "version 99 is newer than this resile"
    ),
    "params-not-json": Row(
        "params `{'a': {1, 2}}`", params_not_json, "params['a']: set is not JSON-serializable"
    ),
    "params-nan": Row("params `{'a': nan}`", params_nan, "nan is not valid JSON"),
    "params-oversize": Row("8 MiB of params", params_oversize, "more than the 8,388,608"),
    "delay-negative": Row("`delay=-1`", delay_negative, "delay must be a finite number >= 0"),
    "delay-nan": Row("`delay=nan`", delay_nan, "got nan"),
    "due-at-nan": Row("`due_at=nan`", due_at_nan, "due_at must be epoch seconds, got nan"),
    "backoff-negative": Row(
        "`Constant(-1)`", backoff_negative, "delay must be a finite number >= 0"
    ),
    "handler-unknown-enqueue": Row(
        "`enqueue('no_such_handler')`", unknown_handler_enqueue, "unknown handler"
    ),
    "handler-unknown-worker": Row(
        "a stored task whose handler no worker has", unknown_handler_worker, "UnknownHandler"
    ),
    "params-not-fitting": Row(
        "params that do not fit the handler", params_not_fitting, "missing a required argument"
    ),
    "result-not-json": Row("a handler returning a set", result_not_json, "ResultNotJSON"),
    "corrupt-row": Row("a stored row whose params are not JSON", corrupt_row, "CorruptTask"),
    "queue-module-fails": Row(
        "a queue module that raises at import", queue_module_fails, "importing it raised"
    ),
    "lease-nan": Row("`resile worker ... --lease nan`", lease_flag_nan, "'--lease'"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_bad_input(row: str, tmp_path: Path) -> None:
    """The row's input is refused with an error naming what is wrong; nothing stored changes."""
    env = Env(tmp_path)
    case = ROWS[row]
    seen = case.run(env)
    assert case.seen in seen, seen
    env.unharmed()
