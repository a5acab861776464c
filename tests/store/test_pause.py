"""Pausing a queue: part of the Store contract, run against every backend (``conftest.BACKENDS``)."""

from __future__ import annotations

import threading

import pytest

from resile.queue import Store, TaskError, TaskSpec, TaskStatus
from resile.queue.store import open_store

from .conftest import SHARED_BACKENDS, T0, FakeEpoch

W1 = "worker-1"


def spec(queue: str = "default", **kw: object) -> TaskSpec:
    return TaskSpec("h", queue=queue, **kw)  # type: ignore[arg-type]


class TestPause:
    def test_pause_and_resume_answer_whether_they_changed_anything(self, store: Store) -> None:
        """pause is True once, then False; resume likewise; paused() names the queue and time."""
        assert store.paused() == {}
        assert store.pause("mail", now=T0) is True
        assert store.pause("mail", now=T0 + 5) is False
        assert store.paused() == {"mail": T0}
        assert store.resume("mail") is True
        assert store.resume("mail") is False
        assert store.paused() == {}

    def test_a_paused_queue_leases_nothing(self, store: Store) -> None:
        """lease takes nothing from a paused queue, and again after resume."""
        task = store.create(spec("mail"), now=T0)
        store.pause("mail", now=T0)
        assert store.lease("mail", W1, now=T0 + 1) == []
        assert store.get(task.id).status is TaskStatus.PENDING  # type: ignore[union-attr]
        store.resume("mail")
        assert [t.id for t in store.lease("mail", W1, now=T0 + 2)] == [task.id]

    def test_other_queues_go_on(self, store: Store) -> None:
        """A lease over several queues takes only from those that are not paused."""
        mail = store.create(spec("mail"), now=T0)
        sms = store.create(spec("sms"), now=T0)
        store.pause("mail", now=T0)
        got = store.lease(["mail", "sms"], W1, limit=10, now=T0 + 1)
        assert [t.id for t in got] == [sms.id]
        assert store.get(mail.id).status is TaskStatus.PENDING  # type: ignore[union-attr]

    def test_running_tasks_finish(self, store: Store) -> None:
        """A task leased before the pause renews and completes as usual."""
        task = store.create(spec(), now=T0)
        store.lease("default", W1, now=T0)
        store.pause("default", now=T0 + 1)
        assert store.renew(task.id, W1, now=T0 + 2) is True
        done = store.complete(task.id, W1, "ok", now=T0 + 3)
        assert done is not None and done.status is TaskStatus.DONE

    def test_producers_still_enqueue(self, store: Store) -> None:
        """Creating tasks in a paused queue stores them, to run after resume."""
        store.pause("mail", now=T0)
        store.create(spec("mail"), now=T0)
        assert store.stats("mail")[TaskStatus.PENDING] == 1
        assert store.queues() == ["mail"]

    def test_expired_leases_come_back_but_wait(self, store: Store) -> None:
        """An expired lease of a paused queue is reclaimed to PENDING but not leased again."""
        task = store.create(spec(max_retries=3), now=T0)
        store.lease("default", W1, lease_seconds=10, now=T0)
        store.pause("default", now=T0)
        assert store.lease("default", "worker-2", now=T0 + 3600) == []
        back = store.get(task.id)
        assert back is not None and back.status is TaskStatus.PENDING
        assert back.last_error is not None and back.last_error.type == "LeaseExpired"

    def test_next_due_at_ignores_a_paused_queue(self, store: Store) -> None:
        """A worker on a paused queue sees nothing due, so it sleeps instead of spinning."""
        store.create(spec("mail"), now=T0)
        store.pause("mail", now=T0)
        assert store.next_due_at("mail") is None
        store.create(spec("sms", delay=30), now=T0)
        assert store.next_due_at(["mail", "sms"]) == pytest.approx(T0 + 30)
        store.resume("mail")
        due = store.next_due_at("mail")
        assert due is not None and due <= T0

    def test_pause_before_any_task(self, store: Store) -> None:
        """A queue can be paused before it holds a task; tasks enqueued later wait."""
        store.pause("later", now=T0)
        store.create(spec("later"), now=T0)
        assert store.lease("later", W1, now=T0) == []

    @pytest.mark.parametrize("bad", ["", None, 3])
    def test_bad_queue_name(self, store: Store, bad: object) -> None:
        """pause and resume name the argument they refuse."""
        with pytest.raises(ValueError, match="pause: queue must be a non-empty str"):
            store.pause(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="resume: queue must be a non-empty str"):
            store.resume(bad)  # type: ignore[arg-type]

    def test_failed_task_of_paused_queue_can_be_requeued(self, store: Store) -> None:
        """Requeue works on a paused queue; the task waits for resume."""
        task = store.create(spec(max_retries=0), now=T0)
        store.lease("default", W1, now=T0)
        store.fail(task.id, W1, TaskError("E", "x"), now=T0)
        store.pause("default", now=T0)
        assert store.requeue(task.id, now=T0) is not None
        assert store.lease("default", W1, now=T0 + 1) == []


class TestShared:
    def test_every_opener_sees_the_pause(
        self, store: Store, store_url: str, backend: str, clock: FakeEpoch
    ) -> None:
        """A pause made through one store object stops leases through another (another process)."""
        if backend not in SHARED_BACKENDS:
            pytest.skip(f"{backend} is private to one store object")
        store.create(spec("mail"), now=T0)
        with open_store(store_url, clock=clock) as other:
            assert other.pause("mail", now=T0) is True
            assert store.lease("mail", W1, now=T0 + 1) == []
            assert store.paused() == {"mail": T0}
            other.resume("mail")
        assert len(store.lease("mail", W1, now=T0 + 2)) == 1

    def test_resume_wakes_watchers(self, store: Store) -> None:
        """Where the store can wake other processes' workers (Redis), resume does."""
        woke = threading.Event()
        stop = store.watch(["mail"], woke.set)
        if stop is None:
            pytest.skip("this store has no cross-process wake-ups (workers poll next_due_at)")
        try:
            store.pause("mail", now=T0)
            woke.clear()
            store.resume("mail")
            assert woke.wait(10), "resume did not wake the watcher"
        finally:
            stop()
