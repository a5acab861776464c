"""Workers and paused queues: a paused queue's tasks wait, running ones finish, resume restarts.

Runs on every backend several processes can share (``_backends.SHARED_BACKENDS``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import resile
from _backends import BACKENDS, SHARED_BACKENDS
from _waits import wait_for
from resile.queue import Queue, TaskStatus


@pytest.fixture(params=sorted(SHARED_BACKENDS))
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    """A queue on a fresh store of each shared backend."""
    q = resile.connect(BACKENDS[request.param](request, tmp_path), queue="mail")
    try:
        yield q
    finally:
        q.close()


def _status(queue: Queue, task_id: str) -> TaskStatus:
    task = queue.store.get(task_id)
    assert task is not None
    return task.status


class TestPausedQueue:
    def test_burst_worker_leaves_a_paused_queue_alone(self, queue: Queue) -> None:
        """A burst worker on a paused queue runs nothing and returns; after resume it runs all."""

        @queue.task(name="send")
        def send(n: int) -> int:
            return n

        ids = [send.enqueue(n=i).id for i in range(3)]
        queue.store.pause("mail")
        idle = resile.Worker(queue, concurrency=2)
        idle.run(burst=True)
        assert idle.stats.leased == 0
        assert all(_status(queue, i) is TaskStatus.PENDING for i in ids)
        queue.store.resume("mail")
        resile.Worker(queue, concurrency=2).run(burst=True)
        assert all(_status(queue, i) is TaskStatus.DONE for i in ids)

    def test_running_worker_stops_and_starts(self, queue: Queue) -> None:
        """A serving worker takes nothing from the queue once paused, and starts again on resume."""
        release = threading.Event()

        @queue.task(name="slow")
        def slow() -> str:
            release.wait(10)
            return "done"

        worker = resile.Worker(queue, concurrency=2)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            running = slow.enqueue().id
            wait_for(lambda: _status(queue, running) is TaskStatus.DOING, 10, "the first task")
            queue.store.pause("mail")
            waiting = slow.enqueue().id
            # A window with a free slot: a worker honouring the pause leaves the task alone.
            threading.Event().wait(1.0)
            assert _status(queue, waiting) is TaskStatus.PENDING
            release.set()
            wait_for(lambda: _status(queue, running) is TaskStatus.DONE, 10, "the running task")
            resumed = time.monotonic()
            queue.store.resume("mail")
            wait_for(lambda: _status(queue, waiting) is TaskStatus.DONE, 5, "the waiting task")
            assert time.monotonic() - resumed < 2.0
        finally:
            release.set()
            worker.stop()
            runner.join(10)


class TestRegistry:
    def test_a_serving_worker_is_registered_and_removed(self, queue: Queue) -> None:
        """A worker records itself (mode, slots, queues) while it serves, and removes its record."""
        worker = resile.Worker(queue, concurrency=3, heartbeat=0.2, lease_seconds=2)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            wait_for(lambda: len(queue.store.workers()) == 1, 10, "the worker's record")
            (rec,) = queue.store.workers()
            assert (rec.id, rec.mode, rec.concurrency, rec.queues) == (
                worker.worker_id,
                "thread",
                3,
                ("mail",),
            )
            first = rec.beat_at
            wait_for(lambda: queue.store.workers()[0].beat_at > first, 10, "a heartbeat")
            assert queue.store.workers()[0].alive(queue.store.now())
        finally:
            worker.stop()
            runner.join(10)
        assert queue.store.workers() == []
