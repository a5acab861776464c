"""Workers in several processes on one Redis, and what happens when things break.

Each test starts real worker processes (``resile.Worker`` on
``resile.connect(redis://...)``) and counts every task at the end: nothing
lost, nothing run twice except attempts that were running when a worker died.
Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _redis_server import drop_namespace
from _waits import wait_for

redis = pytest.importorskip("redis")

import resile  # noqa: E402
from resile.queue import Outcome, TaskStatus  # noqa: E402
from resile.queue.store.redis import RedisStore  # noqa: E402
from resile.queue.store.redis import _keys as K  # noqa: E402

pytestmark = pytest.mark.slow

# A worker process: serves the queue until SIGTERM (or drains it with "burst").
# The handler counts its runs in a Redis hash, so the test can tell duplicates.
APP = textwrap.dedent(
    """
    import logging, os, sys, time
    import redis
    import resile

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(name)s %(levelname)s %(message)s")
    URL = os.environ["RESILE_TEST_URL"]
    RUNS = os.environ.get("RESILE_TEST_RUNS")
    queue = resile.connect(URL, retry_for=60)
    counter = redis.Redis.from_url(URL.split("?")[0]) if RUNS else None

    @queue.task(max_retries=20, backoff=resile.Constant(0.05))
    def job(i: int, sleep: float = 0.0) -> int:
        if counter is not None:
            counter.hincrby(RUNS, str(i), 1)
        if sleep:
            time.sleep(sleep)
        return i

    @queue.task(max_retries=2, backoff=resile.Constant(0.5))
    def flaky(ctx: resile.TaskContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")

    if __name__ == "__main__":
        mode, concurrency, lease = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        worker = resile.Worker(queue, concurrency=concurrency, lease_seconds=lease)
        print("ready", flush=True)
        worker.run(burst=(mode == "burst"))
    """
)


def _with_query(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


class Fleet:
    """Worker processes sharing one store; all killed at the end of the test."""

    def __init__(self, tmp: Path, url: str, runs_key: str | None) -> None:
        self.script = tmp / "worker_app.py"
        self.script.write_text(APP)
        self.tmp = tmp
        self.env = {**os.environ, "RESILE_TEST_URL": url}
        if runs_key:
            self.env["RESILE_TEST_RUNS"] = runs_key
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, n: int, mode: str = "serve", concurrency: int = 4, lease: float = 2.0) -> None:
        for _ in range(n):
            log = self.tmp / f"worker-{len(self.procs)}.log"
            self.logs.append(log)
            with log.open("wb") as err:  # the child keeps its own copy of the descriptor
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(self.script), mode, str(concurrency), str(lease)],
                        env=self.env,
                        cwd=self.tmp,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )

    def wait(self, timeout: float) -> None:
        for p in self.procs:
            assert p.wait(timeout) == 0, self.log_text()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs
        )


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(url: str, runs_key: str | None = None) -> Fleet:
        f = Fleet(tmp_path, url, runs_key)
        fleets.append(f)
        return f

    yield make
    for f in fleets:
        f.stop()


@pytest.fixture
def shared(redis_url: str) -> Iterator[tuple[str, Any]]:
    """A fresh namespace on the session's Redis, and a raw client."""
    namespace = f"faults-{uuid.uuid4().hex}"
    url = _with_query(redis_url, f"namespace={namespace}")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield url, client
    client.close()
    drop_namespace(redis_url, namespace)


def queue_for(url: str, **options: Any) -> resile.Queue:
    q = resile.connect(url, **options)

    @q.task(name="job")  # the same handler name as the workers'
    def job(i: int, sleep: float = 0.0) -> int:  # pragma: no cover - runs in the workers
        return i

    @q.task(name="flaky")
    def flaky() -> None:  # pragma: no cover - runs in the workers
        return None

    return q


class TestSharedWorkers:
    def test_four_processes_run_each_task_exactly_once(
        self, shared: tuple[str, Any], fleet_factory: Callable[..., Fleet]
    ) -> None:
        """4 worker processes drain one queue: every task DONE, each run exactly once."""
        url, raw = shared
        runs = f"runs-{uuid.uuid4().hex}"
        n = 2000
        q = queue_for(url)
        try:
            q.enqueue_many([q.spec("job", {"i": i}) for i in range(n)])
            fleet = fleet_factory(url, runs)
            fleet.start(4, mode="burst")
            fleet.wait(60)
            assert q.stats()[TaskStatus.DONE] == n
            counts = raw.hgetall(runs)
            assert len(counts) == n and set(counts.values()) == {"1"}
            assert all(t.attempts == 1 for t in q.list(limit=n))
        finally:
            raw.delete(runs)
            q.close()

    def test_kill_9_loses_nothing(
        self, shared: tuple[str, Any], fleet_factory: Callable[..., Fleet]
    ) -> None:
        """Two of four workers die by SIGKILL mid-run: every task still ends DONE, and only
        attempts the dead workers held ran twice (each such lost attempt is recorded).

        A task the dead worker had leased but not yet started also has its lost attempt
        recorded, yet its handler ran once: ``twice`` is within ``lost``, not equal to it."""
        url, raw = shared
        runs = f"runs-{uuid.uuid4().hex}"
        n = 120
        q = queue_for(url)
        try:
            q.enqueue_many([q.spec("job", {"i": i, "sleep": 0.3}) for i in range(n)])
            fleet = fleet_factory(url, runs)
            fleet.start(4, concurrency=4, lease=1.5)
            wait_for(lambda: q.stats()[TaskStatus.DONE] >= 20, 30, "the first tasks")
            for p in fleet.procs[:2]:
                p.kill()  # SIGKILL: no cleanup, leases left behind
            wait_for(lambda: q.stats()[TaskStatus.DONE] == n, 40, "every task DONE")
            tasks = q.list(limit=n)
            lost = {t.id for t in tasks if any(h.outcome is Outcome.LOST for h in t.history)}
            counts = {int(k): int(v) for k, v in raw.hgetall(runs).items()}
            assert len(counts) == n
            twice = {t.id for t in tasks if counts[t.params["i"]] > 1}
            assert twice <= lost, (twice, lost)
            assert 0 < len(lost) <= 8  # at most the killed workers' slots
            assert all(counts[t.params["i"]] == 2 for t in tasks if t.id in twice)
            assert sum(counts.values()) == n + len(twice)
            for t in tasks:  # one lost attempt for each held task, none for the others
                lost_entries = [h for h in t.history if h.outcome is Outcome.LOST]
                assert len(lost_entries) == (1 if t.id in lost else 0)
            assert all(t.status is TaskStatus.DONE for t in tasks)
        finally:
            raw.delete(runs)
            q.close()


class TestRedisRestart:
    @pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
    def test_restart_with_aof_loses_no_acknowledged_task(
        self, redis_server_factory: Any, fleet_factory: Callable[..., Fleet], how: str
    ) -> None:
        """Redis with appendfsync always is stopped mid-run for 2 s and started again on
        the same port and directory: every task whose enqueue returned ends DONE; producers
        and workers reconnect by themselves and log the outage once."""
        if not redis_server_factory.available:
            pytest.skip("needs a redis-server binary to stop and start")
        server = redis_server_factory(appendonly=True, extra=("--appendfsync", "always"))
        url = _with_query(server.url, "namespace=restart")
        q = queue_for(url, retry_for=60)
        acked: list[str] = []
        failed: list[BaseException] = []
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                try:
                    acked.append(q.enqueue("job", {"i": i, "sleep": 0.01}).id)
                except Exception as exc:  # not acknowledged: not counted
                    failed.append(exc)
                i += 1
                time.sleep(0.005)

        fleet = fleet_factory(url)
        fleet.start(2, concurrency=4, lease=2.0)
        # Both workers up before the outage (on a loaded machine they may start late, see
        # none of it and log nothing).
        wait_for(lambda: len(q.store.workers()) >= 2, 60, "both workers registered")
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            wait_for(lambda: len(acked) >= 100, 30, "100 acknowledged enqueues")
            assert server.process is not None
            if how == "SIGKILL":
                server.kill()
            else:
                server.stop(remove=False)
            time.sleep(2.0)  # Redis is gone for a couple of seconds
            server.start()
            producer.join(60)
            assert not producer.is_alive()
            assert failed == []

            def all_done() -> bool:
                return q.stats()[TaskStatus.DONE] >= len(acked)

            wait_for(all_done, 60, "every acknowledged task DONE")
            for tid in acked:
                t = q.get(tid)
                assert t is not None, f"acknowledged task {tid} was lost"
                assert t.status is TaskStatus.DONE
            assert q.stats()[TaskStatus.DONE] == len(acked) == 400
        finally:
            stop.set()
            producer.join(60)
            fleet.stop()
            q.close()
        for log in fleet.logs:
            text = log.read_text(errors="replace")
            assert text.count("is unavailable") == 1, text[-3000:]
            assert text.count("reachable again") == 1, text[-3000:]


class TestLateness:
    def test_retry_starts_on_time_across_processes(
        self, shared: tuple[str, Any], fleet_factory: Callable[..., Fleet]
    ) -> None:
        """A task enqueued by another process starts at once, and its retry at its due
        time, never early: the worker blocks on Redis instead of polling."""
        url, raw = shared
        store = RedisStore(url.split("?")[0], namespace=url.split("namespace=")[1])
        q = queue_for(url)
        fleet = fleet_factory(url)
        fleet.start(1, concurrency=2, lease=5.0)
        try:
            wake = K.channel(store.root, "default")
            wait_for(
                lambda: dict(raw.pubsub_numsub(wake)).get(wake, 0) >= 1, 30, "the subscription"
            )
            before = raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
            time.sleep(1.0)  # a second of idleness, measured: no calls but a heartbeat
            idle_calls = raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
            assert idle_calls - before <= 2  # no polling while idle (a heartbeat at most)
            task = q.enqueue("flaky", {}, delay=0.5)
            wait_for(lambda: q.get(task.id).status is TaskStatus.DONE, 10, "the task")  # type: ignore[union-attr]
            done = q.get(task.id)
            assert done is not None and [h.outcome for h in done.history] == [
                Outcome.ERROR,
                Outcome.OK,
            ]
            first, second = done.history
            assert first.started_at is not None and second.started_at is not None
            # the first attempt when the task came due, the retry when its backoff ended
            assert task.due_at <= first.started_at < task.due_at + 0.25
            assert done.due_at == pytest.approx(first.ended_at + 0.5)
            assert done.due_at <= second.started_at < done.due_at + 0.25
        finally:
            store.close()
            q.close()
