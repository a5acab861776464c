"""The worker, in every mode on every backend: run, retry, dead-letter, time out, cancel, shut down, survive kill -9.

Everything is real: a fresh store per test (``tests/_backends.py``: a SQLite
file, SQLite in memory, a Redis namespace), handler modules written to
``tmp_path`` (process-mode children import them by path), worker
subprocesses killed with SIGKILL. Waits poll a condition with a bound, or
run on ``resile.testing``'s fake clock. A test tied to some backends says
why with ``@only``.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import pytest

import resile
from _backends import BACKENDS, SHARED_BACKENDS
from _examples import assert_page_shows, run_example
from _waits import wait_for
from resile.queue import Outcome, Task, TaskSpec, TaskStatus
from resile.queue._probe import capacity, gpu_probe, no_gpu_probe
from resile.queue.worker import Worker, load_queue
from resile.testing import FakeClock, no_waits

MODES = ["thread", "process", "async"]
# The handler that runs until stopped, as each mode stops it: thread mode can only
# flag the attempt (the handler polls ctx.canceled); process mode kills a handler
# that ignores everything; async mode cancels a coroutine.
STUCK = {"thread": "block", "process": "hang", "async": "ahang"}

HANDLERS = """
import asyncio
import os
import time

import resile
from resile import TaskContext

queue = resile.connect({url!r})


@queue.task(backoff=resile.Constant(0.01), max_retries=3)
def ok(x: int) -> dict:
    return {{"x": x}}


@queue.task(backoff=resile.Constant(0.01), max_retries=3)
async def aok(x: int) -> dict:
    await asyncio.sleep(0)
    return {{"x": x, "async": True}}


@queue.task(backoff=resile.Constant(0.2), max_retries=5)
def flaky(n: int, ctx: TaskContext) -> int:
    if ctx.attempt <= n:
        raise RuntimeError(f"attempt {{ctx.attempt}} fails")
    return ctx.attempt


@queue.task(backoff=resile.Constant(0.01), max_retries=2)
def always_fails() -> None:
    raise ValueError("nope")


@queue.task(max_retries=5)
def permanent() -> None:
    raise resile.Permanent(ValueError("bad input"))


@queue.task(max_retries=0)
def block(seconds: float, ctx: TaskContext) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ctx.canceled:
            return "stopped"
        time.sleep(0.005)
    return "finished"


@queue.task(max_retries=0)
def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@queue.task(max_retries=0)
async def ahang(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@queue.task(backoff=resile.Constant(0.01), max_retries=3)
def gate(path: str) -> str:
    end = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError("the gate never opened")
        time.sleep(0.01)
    return "passed"


@queue.task(max_retries=3)
def report_pid(path: str, seconds: float) -> str:
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return "finished"


@queue.task(backoff=resile.Constant(0.01), max_retries=1)
def poison() -> None:
    os._exit(13)


@queue.task(resources={{"min_gpu_memory_gb": 0.5}})
def gpu_job() -> str:
    return "on a GPU"


@queue.task(resources={{"min_gpu_utilization": 10}})
def gpu_share() -> str:
    return "had room"
"""

WORKER_MAIN = """
import sys
from resile.queue.worker import Worker

if __name__ == "__main__":
    path, mode, burst = sys.argv[1], sys.argv[2], sys.argv[3] == "burst"
    worker = Worker.from_import_path(
        path, mode=mode, concurrency=3, lease_seconds=1.0, grace=5.0, kill_grace=0.5
    )
    worker.run(burst=burst)
"""


@pytest.fixture
def anyio_backend() -> str:
    """The worker's async mode runs on asyncio."""
    return "asyncio"


F = TypeVar("F", bound=Callable[..., Any])


def only(backends: set[str], why: str) -> Callable[[F], F]:
    """Run the decorated test on ``backends`` only; ``why`` says what ties it to them."""

    def mark(fn: F) -> F:
        fn.backends = frozenset(backends)  # type: ignore[attr-defined]
        fn.why = why  # type: ignore[attr-defined]
        return fn

    return mark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize by backend (and by mode, where a test takes one): every pair but
    process mode on a store its children cannot open."""
    if "backend" not in metafunc.fixturenames:
        return
    allowed = getattr(metafunc.function, "backends", BACKENDS)
    backends = [b for b in sorted(BACKENDS) if b in allowed]
    if "mode" in metafunc.fixturenames:
        pairs = [(m, b) for m in MODES for b in backends if m != "process" or b in SHARED_BACKENDS]
        metafunc.parametrize(("mode", "backend"), pairs, ids=[f"{m}-{b}" for m, b in pairs])
    else:
        metafunc.parametrize("backend", backends)


class Env:
    """A handler module on a fresh store of the backend under test, and helpers to drive workers on it."""

    def __init__(self, tmp_path: Path, module: ModuleType, url: str) -> None:
        self.tmp_path = tmp_path
        self.module = module
        self.url = url
        self.path = f"{module.__name__}:queue"
        self.queue: Any = module.queue

    def enqueue(self, handler: str, **params: Any) -> Task:
        options = {
            k: params.pop(k) for k in ("timeout", "max_retries", "delay", "priority") if k in params
        }
        task: Task = self.queue.enqueue(handler, params, **options)
        return task

    def get(self, task_id: str) -> Task:
        task = self.queue.get(task_id)
        assert task is not None
        return task

    def worker(self, mode: str, **options: Any) -> Worker:
        options.setdefault("concurrency", 2)
        options.setdefault("lease_seconds", 1.5)
        options.setdefault("kill_grace", 0.5)
        return Worker(self.queue, mode=mode, import_path=self.path, **options)  # type: ignore[arg-type]

    def burst(self, mode: str, **options: Any) -> Worker:
        wait = options.pop("wait_for_scheduled", True)
        w = self.worker(mode, **options)
        w.run(burst=True, wait_for_scheduled=wait)
        return w

    def spawn(self, mode: str, burst: bool = False) -> subprocess.Popen[bytes]:
        script = self.tmp_path / "worker_main.py"
        script.write_text(WORKER_MAIN)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(self.tmp_path), *sys.path]))
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, str(script), self.path, mode, "burst" if burst else "serve"],
                cwd=self.tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def log(self) -> Path:
        """Where worker subprocesses write their stderr."""
        return self.tmp_path / "worker.log"

    def count(self, status: TaskStatus) -> int:
        return int(self.queue.stats()[status])


@pytest.fixture
def env(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    """A handler module named uniquely, importable by children, on its own store."""
    name = f"handlers_{uuid.uuid4().hex[:10]}"
    url = BACKENDS[backend](request, tmp_path)
    (tmp_path / f"{name}.py").write_text(HANDLERS.format(url=url))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    e = Env(tmp_path, module, url)
    yield e
    while Background.running:  # a failed test may leave a worker serving
        bg = Background.running.pop()
        bg.worker.stop(force=True)
        bg.thread.join(10)
    e.queue.close()
    sys.modules.pop(name, None)


class Background:
    """A worker serving in a thread; ``stop()`` joins it with a bound."""

    running: ClassVar[list[Background]] = []

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        Background.running.append(self)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: worker.free_slots == worker.concurrency, what="the worker to start")

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 20.0, force: bool = False) -> float:
        t = time.monotonic()
        self.worker.stop(force=force)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, self.error
        return time.monotonic() - t


class TestRunning:
    def test_success_records_the_result(self, env: Env, mode: str) -> None:
        """A handler's return value is stored and the task is DONE after one attempt."""
        tasks = [env.enqueue("ok", x=i) for i in range(5)] + [env.enqueue("aok", x=9)]
        w = env.burst(mode)
        for i, t in enumerate(tasks[:5]):
            got = env.get(t.id)
            assert (got.status, got.result, got.attempts) == (TaskStatus.DONE, {"x": i}, 1)
            assert got.history[-1].outcome is Outcome.OK
        assert env.get(tasks[5].id).result == {"x": 9, "async": True}
        assert w.stats.done == 6

    def test_retries_follow_the_backoff_and_are_never_early(self, env: Env, mode: str) -> None:
        """Failed attempts retry after the task's 0.2 s backoff: never early, not much late."""
        tasks = [env.enqueue("flaky", n=2) for _ in range(3)]
        env.burst(mode, concurrency=3)
        for t in tasks:
            got = env.get(t.id)
            assert (got.status, got.result, got.attempts) == (TaskStatus.DONE, 3, 3)
            assert [a.outcome for a in got.history] == [Outcome.ERROR, Outcome.ERROR, Outcome.OK]
            assert got.last_error is not None and got.last_error.type == "RuntimeError"
            assert "attempt 2 fails" in got.last_error.message
            for prev, cur in zip(got.history, got.history[1:], strict=False):
                assert cur.started_at is not None
                lateness = cur.started_at - (prev.ended_at + 0.2)
                assert lateness >= 0, f"attempt {cur.attempt} started {-lateness:.4f} s early"
                assert lateness < 0.25, f"attempt {cur.attempt} started {lateness:.4f} s late"

    def test_dead_letter_after_max_retries(self, env: Env, mode: str) -> None:
        """A task that always fails ends FAILED after 1 + max_retries attempts, every error kept."""
        t = env.enqueue("always_fails")
        w = env.burst(mode)
        got = env.get(t.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 3)
        assert [a.outcome for a in got.history] == [Outcome.ERROR] * 3
        assert all(a.error is not None and a.error.type == "ValueError" for a in got.history)
        assert got.last_error is not None and "raise ValueError" in got.last_error.traceback
        assert (w.stats.retried, w.stats.failed) == (2, 1)

    def test_permanent_dead_letters_at_once(self, env: Env, mode: str) -> None:
        """resile.Permanent from a handler dead-letters after one attempt with the wrapped error."""
        t = env.enqueue("permanent")
        env.burst(mode)
        got = env.get(t.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 1)
        assert got.last_error is not None
        assert (got.last_error.type, got.last_error.message) == ("ValueError", "bad input")

    def test_unknown_handler_fails_and_the_worker_goes_on(self, env: Env, mode: str) -> None:
        """A task naming a handler nobody registered is dead-lettered; the others run."""
        bad = env.queue.store.create(TaskSpec("no_such_handler", max_retries=5))
        good = env.enqueue("ok", x=1)
        env.burst(mode)
        got = env.get(bad.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 1)
        assert got.last_error is not None and got.last_error.type == "UnknownHandler"
        assert "no_such_handler" in got.last_error.message
        assert env.get(good.id).status is TaskStatus.DONE

    def test_params_that_do_not_fit_fail_permanently(self, env: Env, mode: str) -> None:
        """Stored params the handler cannot take dead-letter the task with BadParams."""
        bad = env.queue.store.create(TaskSpec("ok", {"y": 1}, max_retries=5))
        env.burst(mode)
        got = env.get(bad.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 1)
        assert got.last_error is not None and got.last_error.type == "BadParams"

    @only({"sqlite-file"}, "writes the unreadable row with SQL into the file")
    def test_corrupt_task_fails_and_the_worker_goes_on(self, env: Env, mode: str) -> None:
        """A stored row with unreadable params is moved to FAILED; the other tasks complete."""
        import sqlite3

        bad = env.enqueue("ok", x=1)
        good = env.enqueue("ok", x=2)
        db = sqlite3.connect(env.tmp_path / "tasks.db")
        with db:
            db.execute("UPDATE resile_tasks SET params = '{not json' WHERE id = ?", (bad.id,))
        db.close()
        env.burst(mode)
        got = env.get(bad.id)
        assert got.status is TaskStatus.FAILED
        assert got.last_error is not None and got.last_error.type == "CorruptTask"
        assert env.get(good.id).result == {"x": 2}


class TestTimeout:
    def test_an_attempt_over_its_timeout_is_stopped_and_recorded(self, env: Env, mode: str) -> None:
        """An attempt overrunning its exec timeout is stopped, recorded TIMEOUT, then retried."""
        t = env.enqueue(STUCK[mode], seconds=60, timeout=0.3, max_retries=1)
        started = time.monotonic()
        w = env.burst(mode)
        assert time.monotonic() - started < 10
        got = env.get(t.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 2)
        assert [a.outcome for a in got.history] == [Outcome.TIMEOUT, Outcome.TIMEOUT]
        assert got.last_error is not None and got.last_error.type == "TimeoutError"
        assert "exec timeout of 0.3 s" in got.last_error.message
        for a in got.history:
            assert a.duration is not None and 0.3 <= a.duration < 2.0
        assert w.stats.timeouts == 2

    def test_the_slot_of_a_timed_out_attempt_is_freed_for_the_next_task(
        self, env: Env, mode: str
    ) -> None:
        """After a timeout the worker's single slot runs the next task (child killed, coroutine canceled, thread returned)."""
        stuck = env.enqueue(STUCK[mode], seconds=60, timeout=0.3, max_retries=0)
        after = env.enqueue("ok", x=5, priority=1)
        env.burst(mode, concurrency=1)
        assert env.get(stuck.id).status is TaskStatus.FAILED
        assert env.get(after.id).result == {"x": 5}

    def test_thread_mode_holds_the_slot_until_the_thread_returns(self, env: Env) -> None:
        """In thread mode a timed-out handler that ignores cancellation keeps its slot, so threads never pile up."""
        stuck = env.enqueue("hang", seconds=0.8, timeout=0.2)
        after = env.enqueue("ok", x=1, priority=1)
        env.burst("thread", concurrency=1)
        first, second = env.get(stuck.id), env.get(after.id)
        assert first.history[0].outcome is Outcome.TIMEOUT
        assert second.status is TaskStatus.DONE
        assert first.started_at is not None and second.started_at is not None
        assert second.started_at - first.started_at >= 0.75


class TestCancel:
    def test_a_canceled_pending_task_never_runs(self, env: Env, mode: str) -> None:
        """A task canceled before any worker leased it stays CANCELED with no attempt."""
        t = env.enqueue("ok", x=1)
        other = env.enqueue("ok", x=2)
        assert env.queue.cancel(t.id)
        env.burst(mode)
        got = env.get(t.id)
        assert (got.status, got.attempts, got.result) == (TaskStatus.CANCELED, 0, None)
        assert env.get(other.id).status is TaskStatus.DONE

    def test_a_canceled_running_task_is_stopped(self, env: Env, mode: str) -> None:
        """Canceling a running task stops its attempt at the next heartbeat and frees the slot."""
        bg = Background(env.worker(mode, concurrency=1, lease_seconds=0.6))
        t = env.enqueue(STUCK[mode], seconds=60)
        wait_for(lambda: env.get(t.id).status is TaskStatus.DOING, what="the task to start")
        assert env.queue.cancel(t.id)
        wait_for(lambda: bg.worker.stats.lost == 1, what="the worker to stop the attempt")
        nxt = env.enqueue("ok", x=3)
        wait_for(
            lambda: env.get(nxt.id).status is TaskStatus.DONE, what="the freed slot to run a task"
        )
        assert bg.stop() < 5
        got = env.get(t.id)
        assert (got.status, got.result) == (TaskStatus.CANCELED, None)
        assert got.history[-1].outcome is Outcome.CANCELED

    def test_a_lost_lease_stops_the_attempt_and_records_nothing(self, env: Env, mode: str) -> None:
        """When another worker took the task over (lease lapsed and reclaimed), the old attempt is stopped and writes nothing."""
        bg = Background(env.worker(mode, concurrency=1, lease_seconds=0.6))
        t = env.enqueue(STUCK[mode], seconds=60, max_retries=3)
        wait_for(lambda: env.get(t.id).status is TaskStatus.DOING, what="the task to start")
        # Another worker, whose clock says the lease lapsed long ago, reclaims and leases it.
        took = env.queue.store.lease("default", "intruder", now=time.time() + 3600)
        assert [x.id for x in took] == [t.id]
        wait_for(lambda: bg.worker.stats.lost == 1, what="the worker to notice the lost lease")
        nxt = env.enqueue("ok", x=3)
        wait_for(
            lambda: env.get(nxt.id).status is TaskStatus.DONE, what="the freed slot to run a task"
        )
        assert bg.stop() < 5
        got = env.get(t.id)
        assert (got.status, got.lease_owner, got.result) == (TaskStatus.DOING, "intruder", None)


class TestShutdown:
    def test_running_attempts_finish_within_the_grace_period(self, env: Env, mode: str) -> None:
        """stop() lets a running attempt finish and records its result."""
        bg = Background(env.worker(mode, grace=10.0))
        handler = "block" if mode == "thread" else ("ahang" if mode == "async" else "hang")
        t = env.enqueue(handler, seconds=0.4)
        wait_for(lambda: env.get(t.id).status is TaskStatus.DOING, what="the task to start")
        bg.stop()
        got = env.get(t.id)
        assert (got.status, got.result) == (TaskStatus.DONE, "finished")

    def test_unfinished_attempts_are_handed_back_uncounted(self, env: Env, mode: str) -> None:
        """After the grace period a still-running attempt is stopped and released: PENDING, attempt not counted."""
        bg = Background(env.worker(mode, grace=0.2))
        t = env.enqueue(STUCK[mode], seconds=60)
        wait_for(lambda: env.get(t.id).status is TaskStatus.DOING, what="the task to start")
        assert bg.stop() < 5
        got = env.get(t.id)
        assert (got.status, got.attempts, got.lease_expires_at) == (TaskStatus.PENDING, 0, None)
        assert bg.worker.stats.released == 1

    def test_no_new_task_is_leased_after_stop(self, env: Env, mode: str) -> None:
        """A worker asked to stop leases nothing more, even with due tasks waiting."""
        bg = Background(env.worker(mode, concurrency=1, grace=10.0))
        first = env.enqueue("block" if mode == "thread" else "hang", seconds=0.5)
        wait_for(lambda: env.get(first.id).status is TaskStatus.DOING, what="the task to start")
        later = env.enqueue("ok", x=1)
        bg.stop()
        assert env.get(first.id).status is TaskStatus.DONE
        assert env.get(later.id).status is TaskStatus.PENDING

    @only(SHARED_BACKENDS, "process mode: the children open the store by its URL")
    def test_a_child_killed_by_a_group_sigterm_during_shutdown_is_handed_back(
        self, env: Env
    ) -> None:
        """Process mode: a child that a process-group SIGTERM kills while the worker stops gives its task back uncounted."""
        bg = Background(env.worker("process", concurrency=1, grace=10.0))
        pid_file = env.tmp_path / "child.pid"
        t = env.enqueue("report_pid", path=str(pid_file), seconds=60)
        wait_for(pid_file.exists, what="the child to report its pid")
        bg.worker.stop()
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        assert bg.stop() < 5
        got = env.get(t.id)
        assert (got.status, got.attempts) == (TaskStatus.PENDING, 0)
        assert bg.worker.stats.released == 1

    @only(SHARED_BACKENDS, "the worker process opens the store by its URL")
    def test_sigterm_shuts_a_worker_process_down_gracefully(self, env: Env, mode: str) -> None:
        """SIGTERM to a worker process lets the running task finish, then the process exits 0."""
        t = env.enqueue("hang", seconds=0.5)
        proc = env.spawn(mode)
        try:
            wait_for(lambda: env.get(t.id).status is TaskStatus.DOING, what="the task to start")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, env.log.read_text()
        assert env.get(t.id).status is TaskStatus.DONE


class TestCrashes:
    @only(SHARED_BACKENDS, "the worker process opens the store by its URL")
    def test_kill_9_loses_no_task(self, env: Env, mode: str) -> None:
        """A worker killed with SIGKILL mid-task loses nothing: a second worker finishes every task, the lost attempts counted."""
        gate = env.tmp_path / "gate"
        tasks = [env.enqueue("gate", path=str(gate)) for _ in range(6)]
        proc = env.spawn(mode)
        try:
            wait_for(lambda: env.count(TaskStatus.DOING) == 3, what="3 tasks running")
        finally:
            proc.kill()
            proc.wait()
        gate.touch()
        env.burst(mode, concurrency=3, lease_seconds=1.0)
        done = [env.get(t.id) for t in tasks]
        assert [t.status for t in done] == [TaskStatus.DONE] * 6
        lost = [t for t in done if any(a.outcome is Outcome.LOST for a in t.history)]
        assert len(lost) == 3
        assert all(t.attempts == 2 for t in lost)
        assert sum(t.attempts for t in done) == 9
        assert env.queue.stats() == {
            TaskStatus.PENDING: 0,
            TaskStatus.DOING: 0,
            TaskStatus.DONE: 6,
            TaskStatus.FAILED: 0,
            TaskStatus.CANCELED: 0,
        }

    @only(SHARED_BACKENDS, "the worker processes open the store by its URL")
    def test_a_poison_task_ends_failed_and_the_rest_complete(self, env: Env, mode: str) -> None:
        """A task that kills its process every time is dead-lettered after its retries; the others complete."""
        bad = env.enqueue("poison", priority=-1)
        good = [env.enqueue("ok", x=i) for i in range(4)]
        runs = 0
        while not all(env.get(t.id).terminal for t in [bad, *good]):
            runs += 1
            assert runs <= 6, "the poison task never ended"
            proc = env.spawn(mode, burst=True)
            try:
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        got = env.get(bad.id)
        assert (got.status, got.attempts) == (TaskStatus.FAILED, 2)
        assert got.last_error is not None
        expected = "WorkerProcessDied" if mode == "process" else "LeaseExpired"
        assert got.last_error.type == expected
        assert all(env.get(t.id).status is TaskStatus.DONE for t in good)


class TestSeveralWorkers:
    @only(SHARED_BACKENDS, "the worker processes open the store by its URL")
    def test_two_worker_processes_share_one_store_without_running_a_task_twice(
        self, env: Env
    ) -> None:
        """Two worker processes draining one store run every task exactly once."""
        tasks = [env.enqueue("ok", x=i) for i in range(40)]
        procs = [env.spawn("thread", burst=True) for _ in range(2)]
        try:
            for p in procs:
                p.wait(timeout=30)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs] == [0, 0], env.log.read_text()
        done = [env.get(t.id) for t in tasks]
        assert [(t.status, t.attempts) for t in done] == [(TaskStatus.DONE, 1)] * 40
        assert [t.result for t in done] == [{"x": i} for i in range(40)]


class TestTiming:
    def test_an_enqueue_in_this_process_wakes_an_idle_worker(self, env: Env, mode: str) -> None:
        """With polling off, only the enqueue wake-up can start the task, and it does at once."""
        # A long lease: no heartbeat wakes the worker during the test.
        bg = Background(env.worker(mode, poll_interval=None, lease_seconds=60))
        try:
            t = env.enqueue("ok", x=1)
            wait_for(lambda: env.get(t.id).status is TaskStatus.DONE, timeout=2.0, what="the task")
            got = env.get(t.id)
            # Without the wake-up nothing would start it before the heartbeat, 20 s away.
            assert got.started_at is not None and got.started_at - got.created_at < 1.0
        finally:
            bg.stop()

    @only(SHARED_BACKENDS, "another connection reaches the same store")
    def test_a_task_from_another_connection_is_picked_up(self, env: Env, mode: str) -> None:
        """A task created through another connection (no in-process wake-up) starts at once: polled (SQLite) or published (Redis)."""
        bg = Background(env.worker(mode, poll_interval=0.02, lease_seconds=60))
        try:
            other = resile.connect(env.url)
            t = other.enqueue("ok", {"x": 1}, strict=False)
            other.close()
            wait_for(lambda: env.get(t.id).status is TaskStatus.DONE, timeout=2.0, what="the task")
            got = env.get(t.id)
            # Without the poll or the wake-up nothing would start it before the heartbeat,
            # 20 s away.
            assert got.started_at is not None and got.started_at - got.created_at < 1.0
        finally:
            bg.stop()

    def test_burst_without_waiting_for_scheduled_leaves_future_tasks(
        self, env: Env, mode: str
    ) -> None:
        """burst with wait_for_scheduled=False returns without running a task due later."""
        later = env.enqueue("ok", x=1, delay=30)
        now = env.enqueue("ok", x=2)
        env.burst(mode, wait_for_scheduled=False)
        assert env.get(now.id).status is TaskStatus.DONE
        assert env.get(later.id).status is TaskStatus.PENDING


EPOCH = 1_700_000_000.0  # the fake clock's zero, as the stores' wall clock


def fake_queue(env: Env, fake: FakeClock) -> Any:
    """A queue on the backend's store whose wall clock follows resile's fake clock.

    On SQLite in memory that is a second, empty database: the test only uses it.
    """
    q = resile.connect(env.url, clock=lambda: EPOCH + fake.monotonic())

    @q.task(name="slow_retry", backoff=resile.Constant(30.0), max_retries=2)
    def slow_retry(ctx: resile.TaskContext) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        return ctx.attempt

    @q.task(name="stuck", max_retries=0)
    def stuck(ctx: resile.TaskContext) -> str:
        end = time.monotonic() + 60
        while time.monotonic() < end and not ctx.canceled:
            time.sleep(0.005)
        return "stopped"

    return q


FAKE_MODES = ["thread", "async"]  # process-mode children import the module's queue


class TestFailureTime:
    def test_a_slow_failure_write_does_not_delay_the_retry(self, tmp_path: Path) -> None:
        """A failure is recorded as of when the handler raised: its retry is due then + delay, however long the write took."""
        from resile.queue.store.sqlite import SQLiteStore

        with no_waits() as fake:

            class SlowFailStore(SQLiteStore):
                def fail(self, *args: Any, **kwargs: Any) -> Task | None:
                    fake.advance(5.0)  # the write waits 5 s (a locked file, a slow disk)
                    return super().fail(*args, **kwargs)

            store = SlowFailStore(str(tmp_path / "t.db"), clock=lambda: EPOCH + fake.monotonic())
            q = resile.connect(store)
            raised: list[float] = []

            @q.task(name="once", backoff=resile.Constant(30.0), max_retries=1)
            def once(ctx: resile.TaskContext) -> None:
                if ctx.attempt == 1:
                    raised.append(EPOCH + fake.monotonic())
                    raise RuntimeError("first attempt")

            try:
                t = q.enqueue("once", {})
                Worker(q, concurrency=1).run(burst=True)
                got = q.get(t.id)
            finally:
                q.close()
        assert got is not None and got.status is TaskStatus.DONE and len(raised) == 1
        first, second = got.history[0], got.history[1]
        assert first.ended_at is not None and abs(first.ended_at - raised[0]) < 1.0
        assert second.started_at is not None
        # Due 30 s after the raise, not 30 s after the 5 s write: the retry ran before raise + 35.
        assert 30.0 <= second.started_at - raised[0] < 34.0


class TestFakeClock:
    @pytest.mark.parametrize("fake_mode", FAKE_MODES)
    def test_a_30_s_retry_delay_takes_no_real_time(self, env: Env, fake_mode: str) -> None:
        """Under no_waits(), a burst worker runs two retries 30 s apart at once, and on time by the fake clock."""
        with no_waits() as fake:
            q = fake_queue(env, fake)
            try:
                t = q.enqueue("slow_retry", {})
                started = time.monotonic()
                w = Worker(q, mode=fake_mode, concurrency=2)  # type: ignore[arg-type]
                w.run(burst=True)
                real = time.monotonic() - started
                got = q.get(t.id)
            finally:
                q.close()
        assert real < 10, f"the burst took {real:.1f} s of real time"
        assert (got.status, got.result, got.attempts) == (TaskStatus.DONE, 3, 3)
        assert (w.stats.retried, w.stats.done) == (2, 1)
        for prev, cur in zip(got.history, got.history[1:], strict=False):
            assert prev.ended_at is not None and cur.started_at is not None
            # Never early; late by no more than the real time the loop took.
            assert 30.0 <= cur.started_at - prev.ended_at < 30.0 + real
        # Two 30 s waits, each counted from the moment its attempt ended (a hair before
        # the failure was written), so the fake clock moved by just under 60 s at least.
        assert fake.total >= 59.9

    @pytest.mark.parametrize("fake_mode", FAKE_MODES)
    def test_a_delayed_task_runs_at_its_due_time_without_waiting(
        self, env: Env, fake_mode: str
    ) -> None:
        """A task delayed by an hour runs in a burst at once, not before its due time on the fake clock."""
        with no_waits() as fake:
            q = fake_queue(env, fake)
            try:
                t = q.enqueue("slow_retry", {}, delay=3600, max_retries=5)
                Worker(q, mode=fake_mode).run(burst=True)  # type: ignore[arg-type]
                got = q.get(t.id)
            finally:
                q.close()
        assert got.status is TaskStatus.DONE
        assert got.history[0].started_at is not None
        assert got.history[0].started_at >= EPOCH + 1000.0 + 3600

    def test_a_serving_worker_jumps_to_due_times_only(self, env: Env) -> None:
        """A serving worker under no_waits() jumps to a task due in an hour, then, with nothing due, waits for real instead of racing the clock."""
        with no_waits() as fake:
            q = fake_queue(env, fake)
            try:
                bg = Background(Worker(q, concurrency=1))
                t = q.enqueue("slow_retry", {}, delay=3600, max_retries=0)
                wait_for(lambda: q.get(t.id).terminal, what="the delayed task to run")
                bg.stop()
            finally:
                q.close()
        # The jump is due - now in epoch floats: it may fall short of 3600 by a rounding (1e-7).
        assert 3600 - 1e-3 <= fake.total < 3600 + 60

    def test_an_exec_timeout_still_passes_while_a_handler_runs(self, env: Env) -> None:
        """With an attempt in flight the fake clock moves with real time, so its 0.3 s exec timeout stops it."""
        with no_waits() as fake:
            q = fake_queue(env, fake)
            try:
                t = q.enqueue("stuck", {}, timeout=0.3)
                started = time.monotonic()
                w = Worker(q, concurrency=1)
                w.run(burst=True)
                real = time.monotonic() - started
                got = q.get(t.id)
            finally:
                q.close()
        assert real < 10
        assert (got.status, got.history[0].outcome) == (TaskStatus.FAILED, Outcome.TIMEOUT)
        assert w.stats.timeouts == 1

    def test_the_docs_example_runs(self) -> None:
        """docs/worker.md's fake-clock example runs: three attempts, 60 s on the fake clock, no real wait."""
        assert run_example("worker_fake_clock.py").split() == [
            "FAILED", "3", "60", "s", "waited", "on", "the", "fake", "clock",
        ]  # fmt: skip
        assert_page_shows("worker.md", "worker_fake_clock.py")

    def test_a_store_on_the_real_clock_is_waited_for_in_real_time(self, env: Env) -> None:
        """Under no_waits() with a store on the real wall clock, a 0.3 s retry is still never early."""
        with no_waits() as fake:
            t = env.enqueue("flaky", n=1)
            env.burst("thread")
        got = env.get(t.id)
        assert (got.status, got.attempts) == (TaskStatus.DONE, 2)
        first, second = got.history
        assert first.ended_at is not None and second.started_at is not None
        assert second.started_at - first.ended_at >= 0.2
        # The worker stopped moving the fake clock once it saw the store does not follow.
        assert fake.total < 60


class FakeProbe:
    """A machine with a configurable GPU."""

    def __init__(self, memory_gb: float, utilization: float) -> None:
        self.memory_gb = memory_gb
        self.utilization = utilization
        self.calls = 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return {"gpu_memory_gb": self.memory_gb, "gpu_utilization": self.utilization}


class TestResources:
    def test_a_worker_without_a_gpu_does_not_lease_a_gpu_task(self, env: Env) -> None:
        """A task needing 0.5 GB of GPU memory stays PENDING under a worker that has no GPU."""
        t = env.enqueue("gpu_job")
        env.burst("thread", probe=no_gpu_probe)
        assert env.get(t.id).status is TaskStatus.PENDING

    def test_a_worker_with_enough_gpu_memory_runs_it(self, env: Env) -> None:
        """The same task runs on a worker whose probe reports 8 GB free."""
        t = env.enqueue("gpu_job")
        probe = FakeProbe(8.0, 0.0)
        env.burst("thread", probe=probe)
        assert env.get(t.id).result == "on a GPU"
        assert probe.calls >= 1

    def test_min_gpu_utilization_means_free_capacity(self, env: Env) -> None:
        """min_gpu_utilization=10 needs 10 % of the GPU free: refused at 95 % busy, run at 50 %."""
        t = env.enqueue("gpu_share")
        env.burst("thread", probe=FakeProbe(8.0, 95.0))
        assert env.get(t.id).status is TaskStatus.PENDING
        env.burst("thread", probe=FakeProbe(8.0, 50.0))
        assert env.get(t.id).status is TaskStatus.DONE

    def test_capacity_translates_measurements(self) -> None:
        """Probe measurements become the capacity names tasks state needs in."""
        assert capacity({"gpu_memory_gb": 4.0, "gpu_utilization": 30.0, "cpu": 8}) == {
            "min_gpu_memory_gb": 4.0,
            "min_gpu_utilization": 70.0,
            "cpu": 8.0,
            "min_cpu": 8.0,
        }

    def test_a_bad_probe_result_is_named(self) -> None:
        """A probe returning a non-number fails with the key and the value."""
        with pytest.raises(ValueError, match="'gpu_memory_gb' must be a number, got 'lots'"):
            capacity({"gpu_memory_gb": "lots"})  # type: ignore[dict-item]

    def test_the_default_probe_reports_no_gpu_without_nvml(self) -> None:
        """Without nvidia-ml-py (or a GPU) the default probe offers no GPU."""
        try:
            import pynvml  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            assert gpu_probe() == no_gpu_probe()
        else:  # pragma: no cover - machines with NVML
            assert set(gpu_probe()) == {"gpu_memory_gb", "gpu_utilization"}

    def test_a_failing_probe_does_not_stop_the_worker(self, env: Env) -> None:
        """A probe that raises is logged; the worker offers no GPU and runs the other tasks."""

        def broken() -> dict[str, float]:
            raise RuntimeError("driver gone")

        gpu = env.enqueue("gpu_job")
        plain = env.enqueue("ok", x=1)
        env.burst("thread", probe=broken)
        assert env.get(plain.id).status is TaskStatus.DONE
        assert env.get(gpu.id).status is TaskStatus.PENDING


class TestAsyncRun:
    @pytest.mark.anyio
    async def test_run_async_serves_on_the_running_loop(self, env: Env) -> None:
        """run_async runs coroutine handlers on the caller's event loop until the queue is drained."""
        tasks = [env.enqueue("aok", x=i) for i in range(3)]
        w = env.worker("async")
        await w.run_async(burst=True)
        assert [env.get(t.id).result for t in tasks] == [{"x": i, "async": True} for i in range(3)]

    @pytest.mark.anyio
    async def test_run_async_needs_async_mode(self, env: Env) -> None:
        """run_async on a thread-mode worker is refused."""
        with pytest.raises(RuntimeError, match="mode='async'"):
            await env.worker("thread").run_async()


class TestConfiguration:
    def test_worker_is_exported(self) -> None:
        """resile.Worker is the worker class."""
        assert resile.Worker is Worker

    @only({"sqlite-file"}, "checks the worker's arguments, not the store")
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"mode": "fork"}, "mode must be one of"),
            ({"concurrency": 0}, "concurrency must be an int >= 1, got 0"),
            ({"concurrency": 2.5}, "concurrency must be an int >= 1, got 2.5"),
            ({"lease_seconds": 0}, "lease_seconds must be > 0, got 0"),
            ({"lease_seconds": 3, "heartbeat": 3}, "heartbeat must be > 0 and below lease_seconds"),
            ({"grace": -1}, "grace must be a finite number >= 0"),
            ({"poll_interval": 0}, "poll_interval must be > 0 or None"),
            ({"worker_id": ""}, "worker_id must be a non-empty str"),
            ({"queues": []}, "queues must be a queue name"),
        ],
    )
    def test_bad_options_are_named(self, env: Env, options: dict[str, Any], message: str) -> None:
        """Each bad option fails at construction naming the field and the value."""
        with pytest.raises(ValueError, match=message):
            Worker(env.queue, **options)

    def test_not_a_queue(self) -> None:
        """Anything but a queue is refused with a TypeError."""
        with pytest.raises(TypeError, match="queue must be a resile queue"):
            Worker(object())

    def test_process_mode_refuses_a_memory_store(self) -> None:
        """Process mode needs a store its children can open."""
        q = resile.connect("sqlite:///:memory:")
        with pytest.raises(ValueError, match="process mode needs a store other processes can open"):
            Worker(q, mode="process", import_path="x:queue")
        q.close()

    @only({"sqlite-file"}, "checks the worker's arguments, not the store")
    def test_defaults(self, env: Env) -> None:
        """Defaults: 10 threads, one process per CPU, heartbeat a third of the lease, the queue's names."""
        w = Worker(env.queue)
        assert (w.mode, w.concurrency, w.queues) == ("thread", 10, ("default",))
        assert w.heartbeat == pytest.approx(w.lease_seconds / 3)
        assert w.lease_seconds <= 30
        p = Worker(env.queue, mode="process")
        assert p.concurrency == (os.cpu_count() or 1)
        assert p.import_path == env.path

    @only({"sqlite-file"}, "checks the worker's arguments, not the store")
    def test_from_import_path(self, env: Env) -> None:
        """Worker.from_import_path loads the queue and remembers the path for children."""
        w = Worker.from_import_path(env.path, mode="process", concurrency=1)
        assert w.queue is env.queue and w.import_path == env.path

    @pytest.mark.parametrize(
        ("path", "error", "message"),
        [
            ("no_colon", ValueError, "must look like 'package.module:queue'"),
            ("resile_no_such_module_xyz:queue", ImportError, "cannot import module"),
            ("resile:no_such_attr", AttributeError, "has no attribute 'no_such_attr'"),
            ("resile:__version__", TypeError, "not a queue"),
        ],
    )
    def test_load_queue_errors(self, path: str, error: type[Exception], message: str) -> None:
        """load_queue names what is wrong with an import path."""
        with pytest.raises(error, match=message):
            load_queue(path)

    @only({"sqlite-file"}, "checks the worker's arguments, not the store")
    def test_process_mode_with_an_unimportable_queue_raises(self, env: Env) -> None:
        """When children cannot import the queue, run() raises instead of spinning."""
        w = Worker(env.queue, mode="process", concurrency=1, import_path="resile_nope_mod:queue")
        with pytest.raises(RuntimeError, match="could not import the queue"):
            w.run(burst=True)
