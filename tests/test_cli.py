"""The ``resile`` command: every subcommand, its exit codes and its errors, on a real SQLite file.

Most tests drive the click command in-process (``CliRunner``); a few run the
installed console script as a subprocess to check the real entry point.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import resile
from resile import Queue, TaskStatus
from resile.cli import CLI_RETRY_FOR, _open, cli, main

HANDLERS = """
import resile

queue = resile.connect({url!r})


@queue.task(backoff=resile.Constant(0.01), max_retries=1)
def add(a: int, b: int) -> int:
    return a + b


@queue.task(backoff=resile.Constant(0.01), max_retries=1)
def boom() -> None:
    raise ValueError("always")


@queue.task
def lease_length(ctx: resile.TaskContext) -> float:
    t = ctx.task
    return t.lease_expires_at - t.started_at
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store URL on a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def queue(db: str) -> Iterator[Queue]:
    """The same store opened through the API, to arrange and check state."""
    q = resile.connect(db)
    yield q
    q.close()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI in-process; output and exit code are captured."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def make_task(q: Queue, task_id: str, **options: object) -> None:
    q.enqueue("job", {"x": 1}, id=task_id, strict=False, **options)  # type: ignore[arg-type]


def finish(queue: Queue, task_id: str, *, ok: bool) -> None:
    """Lease ``task_id`` (it must be the only due task) and complete or dead-letter it."""
    (task,) = queue.store.lease("default", "w")
    assert task.id == task_id
    if ok:
        queue.store.complete(task_id, "w", {"r": 1})
    else:
        queue.store.fail(task_id, "w", ValueError("bad"), permanent=True)


class TestEnqueue:
    def test_enqueue_prints_id_and_stores(self, db: str, queue: Queue) -> None:
        """enqueue stores a PENDING task with the given params and options and prints its id."""
        r = run(
            "enqueue",
            "send_email",
            "--params",
            '{"to": "a@b.c"}',
            "--priority",
            "5",
            "--delay",
            "60",
            "--id",
            "mail-42",
            "--queue",
            "mail",
            "--max-retries",
            "2",
            "--timeout",
            "3",
            "--db",
            db,
        )
        assert r.exit_code == 0 and r.stdout.strip() == "mail-42"
        task = queue.get("mail-42")
        assert task is not None and task.status is TaskStatus.PENDING
        assert (task.handler, task.queue, task.params) == ("send_email", "mail", {"to": "a@b.c"})
        assert (task.priority, task.max_retries, task.timeout) == (5, 2, 3.0)
        assert task.due_at > time.time() + 50

    def test_generated_id(self, db: str, queue: Queue) -> None:
        """Without --id the generated id is printed."""
        r = run("enqueue", "job", "--db", db)
        assert r.exit_code == 0 and queue.get(r.stdout.strip()) is not None

    def test_duplicate_id_exits_1(self, db: str, queue: Queue) -> None:
        """A duplicate --id exits 1 naming the id; the stored task is unchanged."""
        make_task(queue, "dup")
        r = run("enqueue", "other", "--id", "dup", "--db", db)
        assert r.exit_code == 1 and "--id 'dup'" in r.stderr and "already exists" in r.stderr
        task = queue.get("dup")
        assert task is not None and task.handler == "job"

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--params", "{not json"], "'--params'"),
            (["--params", "[1, 2]"], "must be a JSON object"),
            (["--params", '{"x": NaN}'], "params['x']"),
            (["--priority", "high"], "'--priority'"),
            (["--delay", "-1"], "'--delay'"),
            (["--timeout", "0"], "'--timeout'"),
            (["--max-retries", "-2"], "'--max-retries'"),
            (["--id", ""], "id must be a non-empty str"),
        ],
    )
    def test_bad_values_exit_2(self, db: str, queue: Queue, args: list[str], needle: str) -> None:
        """A bad flag value exits 2 with a message naming it; nothing is stored."""
        r = run("enqueue", "job", *args, "--db", db)
        assert r.exit_code == 2, r.output
        assert needle in r.stderr
        assert sum(queue.stats().values()) == 0


class TestDb:
    def test_env_var_sets_db(self, db: str, queue: Queue) -> None:
        """RESILE_DB is the default of --db."""
        r = run("enqueue", "job", "--id", "e1", env={"RESILE_DB": db})
        assert r.exit_code == 0 and queue.get("e1") is not None

    @pytest.mark.parametrize("url", ["tasks.db", "nosuch://x/y", "sqlite://relative.db"])
    def test_bad_db_exits_2(self, url: str) -> None:
        """A --db that is not a store URL exits 2 naming --db and the value."""
        r = run("stats", "--db", url)
        assert r.exit_code == 2 and "'--db'" in r.stderr and url in r.stderr


def free_port() -> int:
    """A loopback port on which nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def one_error_line(stderr: str) -> str:
    """The single line a refused command prints; fails on a traceback or more lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


STORE_COMMANDS = [
    ["list"],
    ["stats"],
    ["status", "t1"],
    ["cancel", "t1"],
    ["retry", "t1"],
    ["purge"],
    ["enqueue", "job"],
]


class TestStoreProblems:
    @pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: c[0])
    def test_not_a_database_is_one_line_exit_1(self, tmp_path: Path, command: list[str]) -> None:
        """A --db file that is not a database: one line naming the file, exit 1, no traceback."""
        path = tmp_path / "notes.db"
        path.write_text("these are notes, not a database\n" * 100, encoding="utf-8")
        r = run(*command, "--db", f"sqlite:///{path}")
        assert r.exit_code == 1
        line = one_error_line(r.stderr)
        assert str(path) in line and "not a database" in line

    def test_unopenable_file_is_one_line_exit_1(self, tmp_path: Path) -> None:
        """A --db file in a folder that does not exist: one line naming it, exit 1."""
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'tasks.db'}"
        r = run("list", "--db", url)
        assert r.exit_code == 1 and url in one_error_line(r.stderr)

    @staticmethod
    def _fails_fast(url: str) -> None:
        """`python -m resile list --db url` exits 1 within 5 s with one line naming url."""
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "resile", "list", "--db", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - started
        assert out.returncode == 1 and took < 5.0, (took, out.stderr)
        assert url in one_error_line(out.stderr)

    def test_unreachable_redis_fails_within_5s(self) -> None:
        """`resile list` on a Redis port where nothing listens: exit 1 within 5 s, one line."""
        pytest.importorskip("redis")
        self._fails_fast(f"redis://127.0.0.1:{free_port()}/0")

    @pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
    def test_unreachable_sql_server_fails_within_5s(self, scheme: str) -> None:
        """`resile list` on a PostgreSQL / MySQL port where nothing listens: exit 1 within 5 s."""
        self._fails_fast(f"{scheme}://u@127.0.0.1:{free_port()}/db")

    @pytest.mark.parametrize("scheme", ["redis", "postgresql", "mysql"])
    def test_server_that_never_accepts_fails_within_5s(self, scheme: str) -> None:
        """A port whose accept queue is full (connects hang, as to a host that drops packets): 5 s."""
        if scheme == "redis":
            pytest.importorskip("redis")
        url = (
            "{scheme}://127.0.0.1:{port}/0"
            if scheme == "redis"
            else "{scheme}://u@127.0.0.1:{port}/db"
        )
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(0)
            port = server.getsockname()[1]
            fillers = []
            for _ in range(2):  # fill the accept queue; later SYNs are dropped
                c = socket.socket()
                c.settimeout(0.2)
                with contextlib.suppress(OSError):
                    c.connect(("127.0.0.1", port))
                fillers.append(c)
            try:
                self._fails_fast(url.format(scheme=scheme, port=port))
            finally:
                for c in fillers:
                    c.close()

    def test_commands_open_redis_with_a_short_retry_for(self) -> None:
        """Non-worker commands reconnect for CLI_RETRY_FOR seconds unless the URL sets retry_for."""
        pytest.importorskip("redis")
        url = f"redis://127.0.0.1:{free_port()}/0"
        with _open(url) as q:
            assert q.store.retry_for == CLI_RETRY_FOR  # type: ignore[attr-defined]
        with _open(f"{url}?retry_for=12.5") as q:
            assert q.store.retry_for == 12.5  # type: ignore[attr-defined]
        with resile.connect(url) as q:  # what a worker's module opens: the long ride-through
            assert q.store.retry_for > 10  # type: ignore[attr-defined]

    def test_worker_whose_store_is_not_a_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """worker MODULE:QUEUE whose module opens a file that is not a database: one line, exit 1."""
        path = tmp_path / "notes.db"
        path.write_text("not a database\n" * 100, encoding="utf-8")
        (tmp_path / "cli_bad_store.py").write_text(
            HANDLERS.format(url=f"sqlite:///{path}"), encoding="utf-8"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        r = run("worker", "cli_bad_store:queue", "--burst")
        sys.modules.pop("cli_bad_store", None)
        assert r.exit_code == 1
        line = one_error_line(r.stderr)
        assert "cli_bad_store:queue" in line and "not a database" in line


class TestStatus:
    def test_status_shows_the_task(self, db: str, queue: Queue) -> None:
        """status prints the state, attempts, params, last error and the attempt history."""
        make_task(queue, "t1")
        assert [t.id for t in queue.store.lease("default", "w")] == ["t1"]
        queue.store.fail("t1", "w", ConnectionError("503 from upstream"))
        r = run("status", "t1", "--db", db)
        assert r.exit_code == 0
        for needle in ("t1", "PENDING", "1 of 4", '{"x": 1}', "503 from upstream", "attempts"):
            assert needle in r.stdout

    def test_status_json(self, db: str, queue: Queue) -> None:
        """status --json prints the whole task as JSON."""
        make_task(queue, "t1")
        r = run("status", "t1", "--json", "--db", db)
        data = json.loads(r.stdout)
        assert data["id"] == "t1" and data["status"] == "PENDING" and data["params"] == {"x": 1}

    def test_unknown_exits_1(self, db: str) -> None:
        """status of an unknown id exits 1 naming it."""
        r = run("status", "ghost", "--db", db)
        assert r.exit_code == 1 and "no task with id 'ghost'" in r.stderr


class TestList:
    def test_list_filters_and_limits(self, db: str, queue: Queue) -> None:
        """list shows tasks oldest first, filtered by --status and --queue, capped by --limit."""
        make_task(queue, "a")
        make_task(queue, "b")
        make_task(queue, "c", queue="other")
        queue.cancel("b")
        r = run("list", "--db", db)
        assert r.exit_code == 0 and "3 task(s)" in r.stdout and "CANCELED" in r.stdout
        r = run("list", "--json", "--db", db)
        assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["a", "b", "c"]
        r = run("list", "--status", "canceled", "--db", db)
        assert "1 task(s)" in r.stdout and "CANCELED" in r.stdout and "PENDING" not in r.stdout
        r = run("list", "--queue", "other", "--json", "--db", db)
        assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["c"]
        r = run("list", "--limit", "1", "--json", "--db", db)
        assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["a"]

    @pytest.mark.parametrize(
        ("args", "needle"),
        [(["--status", "LOST"], "'--status'"), (["--limit", "0"], "'--limit'")],
    )
    def test_bad_values_exit_2(self, db: str, args: list[str], needle: str) -> None:
        """An unknown status or a limit below 1 exits 2 naming the flag."""
        r = run("list", *args, "--db", db)
        assert r.exit_code == 2 and needle in r.stderr


class TestStats:
    def test_counts(self, db: str, queue: Queue) -> None:
        """stats counts tasks per state and queue (table and JSON)."""
        make_task(queue, "a")
        make_task(queue, "b")
        make_task(queue, "c", queue="other")
        queue.cancel("a")
        r = run("stats", "--json", "--db", db)
        data = json.loads(r.stdout)
        assert data["total"] == {"PENDING": 2, "DOING": 0, "DONE": 0, "FAILED": 0, "CANCELED": 1}
        assert data["queues"]["other"]["PENDING"] == 1
        r = run("stats", "--db", db)
        assert r.exit_code == 0 and "other" in r.stdout and "CANCELED" in r.stdout

    def test_run_time_last_hour(self, db: str, queue: Queue) -> None:
        """stats adds the last hour's run time and retry lateness per queue (table and JSON)."""
        make_task(queue, "a")
        now = time.time()
        queue.store.lease("default", "w", now=now)
        queue.store.complete("a", "w", None, now=now + 0.003)
        data = json.loads(run("stats", "--json", "--db", db).stdout)
        run_time = data["timings_last_hour"]["default"]["run"]
        assert run_time["n"] == 1 and 0.002 < run_time["p50"] <= 0.005
        assert data["timings_last_hour"]["default"]["late"] == {"n": 0, "p50": None, "p95": None}
        out = run("stats", "--db", db).stdout
        assert "retry lateness" in out and "3.2 ms / 4.8 ms (1)" in out


class TestCancelRetryPurge:
    def test_cancel(self, db: str, queue: Queue) -> None:
        """cancel cancels a pending task; again, or unknown, exits 1."""
        make_task(queue, "t")
        r = run("cancel", "t", "--db", db)
        assert r.exit_code == 0 and "canceled t" in r.stdout
        t = queue.get("t")
        assert t is not None and t.status is TaskStatus.CANCELED
        r = run("cancel", "t", "--db", db)
        assert r.exit_code == 1 and "CANCELED" in r.stderr
        assert run("cancel", "ghost", "--db", db).exit_code == 1

    def test_retry_requeues_a_dead_task(self, db: str, queue: Queue) -> None:
        """retry puts a FAILED task back to PENDING with fresh attempts; a pending one exits 1."""
        make_task(queue, "dead")
        finish(queue, "dead", ok=False)
        r = run("retry", "dead", "--db", db)
        assert r.exit_code == 0 and "requeued dead" in r.stdout
        t = queue.get("dead")
        assert t is not None and t.status is TaskStatus.PENDING and t.attempts == 0
        r = run("retry", "dead", "--db", db)
        assert r.exit_code == 1 and "only FAILED or CANCELED" in r.stderr
        assert run("retry", "ghost", "--db", db).exit_code == 1

    def test_purge(self, db: str, queue: Queue) -> None:
        """purge deletes finished tasks older than --older-than; pending ones stay."""
        make_task(queue, "done")
        finish(queue, "done", ok=True)
        make_task(queue, "pending", delay=60)
        r = run("purge", "--older-than", "3600", "--db", db)
        assert r.exit_code == 0 and "purged 0" in r.stdout
        r = run("purge", "--db", db)
        assert r.exit_code == 0 and "purged 1" in r.stdout
        assert queue.get("done") is None and queue.get("pending") is not None
        r = run("purge", "--older-than", "-5", "--db", db)
        assert r.exit_code == 2 and "'--older-than'" in r.stderr


class TestMigrate:
    """`resile migrate --db URL [--check]` on the SQL servers."""

    @pytest.fixture(params=["postgres", "mysql"])
    def sql_url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        """An empty PostgreSQL schema or MySQL database (tests/_backends.py)."""
        from _backends import BACKENDS

        return BACKENDS[request.param](request, tmp_path)

    def test_check_then_migrate_then_check(self, sql_url: str) -> None:
        """--check on an empty database exits 1 pointing at migrate; migrate creates the schema;
        --check then exits 0 with the version (PostgreSQL 4: the counts kept by the statements;
        MySQL 3: traceparent, the counters, the counts)."""
        version = 4 if sql_url.startswith("postgres") else 3
        r = run("migrate", "--check", "--db", sql_url)
        assert r.exit_code == 1 and "resile migrate" in one_error_line(r.stderr)
        r = run("migrate", "--db", sql_url)
        assert r.exit_code == 0 and f"migrated to version {version}" in r.stdout
        r = run("migrate", "--check", "--db", sql_url)
        assert r.exit_code == 0 and f"is at version {version} (current)" in r.stdout

    def test_other_stores_have_nothing_to_migrate(self, db: str) -> None:
        """On SQLite, migrate says the store makes its schema on open, exit 0."""
        r = run("migrate", "--db", db)
        assert r.exit_code == 0 and "nothing to migrate" in r.stdout


class TestWorker:
    def test_burst_drains_a_queue(
        self, tmp_path: Path, db: str, queue: Queue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """worker MODULE:QUEUE --burst runs every task (retries included) and returns."""
        (tmp_path / "cli_handlers.py").write_text(HANDLERS.format(url=db), encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        for i in range(5):
            queue.enqueue("add", {"a": i, "b": 1}, id=f"add-{i}", strict=False)
        queue.enqueue("boom", {}, id="boom", strict=False, max_retries=1)
        r = run("worker", "cli_handlers:queue", "--burst", "--concurrency", "3")
        assert r.exit_code == 0, r.output
        assert "5 done" in r.stderr and "1 dead" in r.stderr
        for i in range(5):
            t = queue.get(f"add-{i}")
            assert t is not None and t.status is TaskStatus.DONE and t.result == i + 1
        dead = queue.get("boom")
        assert dead is not None and dead.status is TaskStatus.FAILED and dead.attempts == 2
        sys.modules.pop("cli_handlers", None)

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["no_such_module_xyz:queue"], "cannot import module 'no_such_module_xyz'"),
            (["json"], "must look like 'package.module:queue'"),
            (["json:dumps"], "not a queue"),
            (["json:queue", "--mode", "fiber"], "'--mode'"),
            (["json:queue", "--concurrency", "0"], "'--concurrency'"),
            (["json:queue", "--lease", "0"], "'--lease': must be a finite number of seconds > 0"),
            (["json:queue", "--lease", "-3"], "'--lease'"),
            (["json:queue", "--lease", "nan"], "got nan"),
            (["json:queue", "--lease", "inf"], "got inf"),
            (["json:queue", "--lease", "soon"], "'--lease'"),
            (["json:queue", "--grace", "nan"], "'--grace'"),
        ],
    )
    def test_bad_arguments_exit_2(self, args: list[str], needle: str) -> None:
        """A queue path that does not import or a bad option exits 2 with the reason."""
        r = run("worker", *args, "--burst")
        assert r.exit_code == 2 and needle in r.stderr

    def test_lease_sets_the_workers_lease(
        self, tmp_path: Path, db: str, queue: Queue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """worker --lease 3 leases each task for 3 s (the handler sees its lease's length)."""
        (tmp_path / "cli_lease_handlers.py").write_text(HANDLERS.format(url=db), encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        queue.enqueue("lease_length", {}, id="lease", strict=False)
        r = run("worker", "cli_lease_handlers:queue", "--burst", "--lease", "3", "--grace", "1")
        assert r.exit_code == 0, r.output
        t = queue.get("lease")
        assert t is not None and t.status is TaskStatus.DONE
        assert t.result == pytest.approx(3.0)
        sys.modules.pop("cli_lease_handlers", None)


class TestConsoleScript:
    def test_exit_codes_of_the_installed_command(self, db: str) -> None:
        """The installed `resile` command exits 0, 1 and 2 as documented."""
        exe = Path(sys.executable).with_name("resile")
        ok = subprocess.run(
            [str(exe), "enqueue", "job", "--id", "j", "--db", db], capture_output=True, text=True
        )
        assert ok.returncode == 0 and ok.stdout.strip() == "j"
        missing = subprocess.run(
            [str(exe), "status", "nope", "--db", db], capture_output=True, text=True
        )
        assert missing.returncode == 1 and "nope" in missing.stderr
        usage = subprocess.run([str(exe), "list", "--limit", "x", "--db", db], capture_output=True)
        assert usage.returncode == 2

    def test_python_m_resile_runs_the_cli(self, db: str) -> None:
        """`python -m resile` is the resile command: --help lists the subcommands, codes match."""
        helped = subprocess.run(
            [sys.executable, "-m", "resile", "--help"], capture_output=True, text=True, timeout=30
        )
        assert helped.returncode == 0, helped.stderr
        for command in ("worker", "enqueue", "status", "list", "stats", "demo"):
            assert command in helped.stdout
        missing = subprocess.run(
            [sys.executable, "-m", "resile", "status", "nope", "--db", db],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert missing.returncode == 1 and "nope" in missing.stderr

    def test_python_m_resile_without_the_cli_extra(self) -> None:
        """Without click, `python -m resile` says which extra to install, in one line, exit 2."""
        code = (
            "import runpy, sys; sys.modules['click'] = None; sys.argv = ['resile', '--help']; "
            "runpy.run_module('resile', run_name='__main__')"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 2 and "resile[cli]" in one_error_line(out.stderr)

    def test_main_returns_codes(self, db: str) -> None:
        """main(argv) returns the exit code instead of raising."""
        assert main(["enqueue", "job", "--id", "m", "--db", db]) == 0
        assert main(["cancel", "ghost", "--db", db]) == 1
        assert main(["frobnicate"]) == 2

    def test_import_resile_does_not_import_click(self) -> None:
        """`import resile` (and resile.compat, resile.demo) never imports click or rich."""
        code = (
            "import sys, resile, resile.compat, resile.demo; "
            "print(sorted(m for m in ('click', 'rich') if m in sys.modules))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


class TestWorkerObservability:
    def test_log_format_json_writes_one_object_per_transition(
        self, tmp_path: Path, db: str, queue: Queue
    ) -> None:
        """worker --log-format json: every stderr log line is JSON; transitions carry task fields."""
        (tmp_path / "cli_obs_handlers.py").write_text(HANDLERS.format(url=db), encoding="utf-8")
        queue.enqueue("add", {"a": 1, "b": 2}, id="add-1", strict=False)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "resile",
                "worker",
                "cli_obs_handlers:queue",
                "--burst",
                "--log-format",
                "json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("task_id") == "add-1"]
        assert [line["transition"] for line in mine] == [
            "task.leased",
            "task.attempt_finished",
        ]
        assert mine[-1]["outcome"] == "succeeded" and mine[-1]["queue"] == "default"
        assert all("worker_id" in line for line in mine)

    def test_a_taken_metrics_port_is_one_line_and_exit_1(
        self, tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """worker --metrics-port on a port in use: one line naming it, exit 1."""
        (tmp_path / "cli_obs_taken.py").write_text(HANDLERS.format(url=db), encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            r = run("worker", "cli_obs_taken:queue", "--burst", "--metrics-port", str(port))
        sys.modules.pop("cli_obs_taken", None)
        assert r.exit_code == 1
        assert f"--metrics-port {port} --metrics-host 127.0.0.1: cannot serve" in r.stderr

    def test_a_bad_metrics_port_exits_2(self) -> None:
        """--metrics-port outside 0..65535 is a usage error naming the option."""
        r = run("worker", "json:queue", "--metrics-port", "70000")
        assert r.exit_code == 2 and "'--metrics-port'" in r.stderr
