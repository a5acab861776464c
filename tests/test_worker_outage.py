"""A worker whose store stops answering: shutdown within the grace period, one log line each
way, no task run twice by the worker that holds its outcome.

The stores are real: a redis-server of the test's own that the test kills and starts
again (AOF ``always``, so the restart keeps every write), a SQLite file whose write lock
another connection holds. The shutdown tests run the real ``resile worker`` command in
a subprocess and signal it. Every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import resile
from _components import missing
from _waits import wait_for
from resile.queue import Outcome, TaskStatus

# The worker module the subprocess tests run: one handler that holds its slot until the
# test creates the file it names, then writes a second file and returns.
APP = textwrap.dedent(
    """
    import os, threading, time
    import resile

    queue = resile.connect(os.environ["RESILE_TEST_URL"])

    @queue.task(max_retries=0)
    def hold(release: str, finished: str) -> str:
        end = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < end:
            threading.Event().wait(0.01)  # a bounded poll for the test's go-ahead
        open(finished, "w").close()
        return "done"
    """
)


@pytest.fixture
def server(redis_server_factory: Any) -> Any:
    """A redis-server of this test's own, with AOF ``always`` (a kill loses no write)."""
    pytest.importorskip("redis")
    if not redis_server_factory.available:
        missing("redis-server", "needed to stop and start a real Redis under a worker")
    return redis_server_factory(appendonly=True, extra=("--appendfsync", "always"))


class WorkerProcess:
    """``resile worker app:queue`` in a subprocess, its stderr in a file."""

    def __init__(self, tmp: Path, url: str, *args: str) -> None:
        (tmp / "outage_app.py").write_text(APP, encoding="utf-8")
        self.log = tmp / "worker.log"
        env = {**os.environ, "RESILE_TEST_URL": url}
        with self.log.open("wb") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "resile", "worker", "outage_app:queue", "-v", *args],
                cwd=tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal_and_time(self, timeout: float) -> float:
        """SIGTERM; the seconds until the process exited (fails after ``timeout``)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker did not exit within {timeout} s of SIGTERM:\n{self.text()[-3000:]}"
            ) from None
        return time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Any]:
    made: list[WorkerProcess] = []

    def start(url: str, *args: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path, url, *args)
        made.append(w)
        return w

    yield start
    for w in made:
        w.close()


def _doing(q: resile.Queue, task_id: str) -> bool:
    t = q.get(task_id)
    return t is not None and t.status is TaskStatus.DOING


def _holding(
    server: Any, worker_process: Any, tmp: Path, task_id: str, *args: str
) -> tuple[WorkerProcess, Path, Path]:
    """A `resile worker` (``args``) running task ``task_id`` of the hold handler; the
    worker, the file that releases the handler and the one it writes when it returns."""
    release, finished = tmp / "release", tmp / "finished"
    with resile.connect(server.url, retry_for=10) as q:
        params = {"release": str(release), "finished": str(finished)}
        q.enqueue("hold", params, id=task_id, strict=False)
        w = worker_process(server.url, *args)
        wait_for(lambda: _doing(q, task_id), 30, "the worker to lease the task")
    return w, release, finished


class TestShutdownDuringAnOutage:
    def test_sigterm_exits_within_the_grace_period_while_redis_is_down(
        self, server: Any, worker_process: Any, tmp_path: Path
    ) -> None:
        """SIGTERM to a worker holding an outcome it cannot write (Redis down): it exits
        within the grace period and logs the task it could not hand back; no traceback."""
        w, release, finished = _holding(
            server, worker_process, tmp_path, "held", "--grace", "2", "--lease", "30"
        )
        server.kill()
        release.touch()
        wait_for(finished.exists, 30, "the handler to return while Redis is down")
        took = w.signal_and_time(timeout=25)
        text = w.text()
        assert took < 2 + 3, (took, text[-3000:])
        assert "did not take" in text and "held" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        server.start()
        with resile.connect(server.url, retry_for=10) as q:
            t = q.get("held")
            # Not handed back: still leased by the worker that left; it comes back when the
            # lease lapses (the documented rule), nothing was lost.
            assert t is not None and t.status is TaskStatus.DOING

    def test_second_signal_exits_at_once_while_redis_is_down(
        self, server: Any, worker_process: Any, tmp_path: Path
    ) -> None:
        """A second SIGTERM during an outage skips a long grace period: the worker exits
        within seconds although its handler still runs and nothing can be written."""
        w, release, _ = _holding(server, worker_process, tmp_path, "busy", "--grace", "120")
        server.kill()
        w.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "got SIGTERM" in w.text(), 30, "the worker to take the first signal")
        took = w.signal_and_time(timeout=25)
        assert took < 3, (took, w.text()[-3000:])
        assert "Traceback" not in w.text()
        release.touch()

    def test_stop_while_sqlite_is_locked_returns_within_the_grace_period(
        self, tmp_path: Path
    ) -> None:
        """stop() while another connection holds SQLite's write lock (the worker's outcome
        cannot be written): run() returns within the grace period, the task untouched."""
        path = str(tmp_path / "tasks.db")
        q = resile.connect(f"sqlite:///{path}?busy_timeout=0.05&lock_timeout=30")
        finished = threading.Event()
        go = threading.Event()

        @q.task(max_retries=0)
        def job() -> str:
            go.wait(30)
            finished.set()
            return "ok"

        job.enqueue(id="locked")
        w = resile.Worker(q, concurrency=1, grace=1.0)
        runner = threading.Thread(target=w.run)
        runner.start()
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            wait_for(lambda: _doing(q, "locked"), 15, "the worker to lease the task")
            blocker.execute("BEGIN IMMEDIATE")
            go.set()
            assert finished.wait(15)
            started = time.monotonic()
            w.stop()
            runner.join(15)
            took = time.monotonic() - started
            assert not runner.is_alive() and took < 1.0 + 2.5, took
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
            w.stop(force=True)
            runner.join(15)
        t = q.get("locked")
        assert t is not None and t.status is TaskStatus.DOING  # its lease lapses; not lost
        q.close()


class TestNotRunTwice:
    def test_worker_holding_an_outcome_does_not_run_the_task_again(self, server: Any) -> None:
        """A worker holding an attempt's unwritten failure through a Redis outage longer than
        the lease, whose own lease reclaims the task when Redis is back: it writes the
        failure under that lease instead of running the handler again (runs 1 and 3, never
        2, never two at once)."""
        offset = [0.0]  # the store's clock runs ahead by this much (the outage's length)
        q = resile.connect(server.url, retry_for=0.5, clock=lambda: time.time() + offset[0])
        runs: list[int] = []
        running = [0, 0]  # now, most at once
        started, go = threading.Event(), threading.Event()

        @q.task(max_retries=5, backoff=resile.Constant(0.0))
        def flaky(ctx: resile.TaskContext) -> str:
            running[0] += 1
            running[1] = max(running)
            runs.append(ctx.attempt)
            try:
                if len(runs) == 1:
                    started.set()
                    go.wait(30)
                    raise RuntimeError("the first run fails")
                return "ok"
            finally:
                running[0] -= 1

        flaky.enqueue(id="t")
        # A lease of 30 s with a heartbeat of 29 s: no renewal comes in the seconds of the
        # test, and the worker makes no store call while it waits for the running attempt.
        # The store's clock, moved 100 s on, lapses the lease as a long outage would.
        w = resile.Worker(q, concurrency=2, lease_seconds=30, heartbeat=29)
        runner = threading.Thread(target=w.run)
        runner.start()
        try:
            assert started.wait(15)
            offset[0] = 100.0
            server.kill()
            go.set()
            wait_for(lambda: not running[0], 15, "the first run to end")
            server.start()
            wait_for(lambda: (t := q.get("t")) is not None and t.status is TaskStatus.DONE, 20)
            final = q.get("t")
        finally:
            w.stop(force=True)
            runner.join(15)
            q.close()
        assert final is not None
        history = [(h.attempt, h.outcome) for h in final.history]
        assert history == [(1, Outcome.LOST), (2, Outcome.ERROR), (3, Outcome.OK)], history
        assert runs == [1, 3] and running[1] == 1, runs


class Outage:
    """A store and a way to make it refuse writes (``begin``) and take them again (``end``)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.kind = kind
        if kind == "sqlite-locked":
            self.path = str(tmp / "tasks.db")
            self.url = f"sqlite:///{self.path}?busy_timeout=0.01&lock_timeout=0.05"
            self.named = self.path
            self.blocker = sqlite3.connect(self.path, isolation_level=None)
        else:
            self.server = request.getfixturevalue("server")
            self.url = f"{self.server.url}?retry_for=0.2"
            self.named = str(self.server.port)

    def begin(self) -> None:
        if self.kind == "sqlite-locked":
            self.blocker.execute("BEGIN IMMEDIATE")
        else:
            self.server.kill()

    def end(self) -> None:
        if self.kind == "sqlite-locked":
            if self.blocker.in_transaction:
                self.blocker.execute("ROLLBACK")
        elif self.server.process is None:
            self.server.start()

    def close(self) -> None:
        self.end()
        if self.kind == "sqlite-locked":
            self.blocker.close()


class TestOutageLog:
    @pytest.mark.parametrize("kind", ["sqlite-locked", "redis-down"])
    def test_an_outage_is_logged_once_each_way(
        self, kind: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: Any
    ) -> None:
        """A store refusing writes for many rounds of a worker that holds an outcome (SQLite
        locked, Redis down): one warning when it starts, one when it ends, no traceback
        (not one ERROR per failed round)."""
        outage = Outage(kind, request, tmp_path)
        q = resile.connect(outage.url)
        go = threading.Event()

        @q.task(max_retries=0)
        def job() -> str:
            go.wait(30)
            return "ok"

        job.enqueue(id="a")
        w = resile.Worker(q, concurrency=1, grace=1.0)
        runner = threading.Thread(target=w.run)
        with caplog.at_level(logging.DEBUG, logger="resile.worker"):
            runner.start()
            try:
                wait_for(lambda: _doing(q, "a"), 15, "the worker to lease the task")
                outage.begin()
                go.set()
                wait_for(lambda: _failed_rounds(caplog) >= 4, 30, "four failed rounds")
                outage.end()
                wait_for(lambda: (t := q.get("a")) is not None and t.status is TaskStatus.DONE)
            finally:
                outage.close()
                w.stop()
                runner.join(15)
                q.close()
        messages = _loud(caplog)
        assert len(messages) == 2, messages
        assert "cannot be written now" in messages[0] and outage.named in messages[0]
        assert "answers again" in messages[1]
        assert not any(r.exc_info for r in caplog.records), messages
        # Nor does the store's own retry engine log each round's give-up.
        engine = [r.getMessage() for r in caplog.records if r.name == "resile"]
        assert not [m for m in engine if "giving up" in m], engine


def _failed_rounds(caplog: pytest.LogCaptureFixture) -> int:
    """Failed rounds the worker logged (at any level; main logged each with a traceback)."""
    return sum(
        r.name == "resile.worker"
        and ("store error" in r.getMessage() or "cannot be written" in r.getMessage())
        for r in caplog.records
    )


def _loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The worker's records at WARNING and above."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "resile.worker" and r.levelno >= logging.WARNING
    ]
