"""Schedule records and the atomic tick: part of the Store contract, run against every backend."""

from __future__ import annotations

import threading

import pytest

from resile.queue import Store
from resile.queue._names import TaskStatus
from resile.queue.schedules import ScheduleRecord, tick_id
from resile.queue.store import open_store
from resile.queue.task import Task, TaskSpec

from .conftest import SHARED_BACKENDS, T0, FakeEpoch

DECL = {"every": 60.0, "tz": "UTC", "handler": "report", "missed": "skip", "overlap": "allow"}


def tick(record: ScheduleRecord, at: float) -> tuple[ScheduleRecord, TaskSpec]:
    """The record after firing the tick at ``at``, and that tick's task."""
    tid = tick_id(record.name, at)
    return record.changed(at, last=at, task=tid), TaskSpec(handler="report", id=tid, due_at=at)


class TestRecords:
    def test_declare_list_pause_resume_delete(self, store: Store) -> None:
        """A declared schedule is stored once, listed, paused, resumed and deleted on request."""
        assert store.schedules() == []
        assert store.save_schedule("nightly", "default", DECL) == "added"
        assert store.save_schedule("nightly", "default", DECL) == "unchanged"
        assert store.save_schedule("nightly", "default", {**DECL, "every": 120.0}) == "updated"
        (rec,) = store.schedules()
        assert (rec.name, rec.queue, rec.last, rec.paused) == ("nightly", "default", T0, "")
        assert rec.declaration["every"] == 120.0
        assert store.pause_schedule("nightly") is True
        assert store.pause_schedule("nightly") is False
        paused = store.get_schedule("nightly")
        assert paused is not None and paused.paused == "operator"
        assert store.resume_schedule("nightly") is True
        assert store.resume_schedule("nightly") is False
        assert store.delete_schedule("nightly") is True
        assert store.delete_schedule("nightly") is False
        assert store.get_schedule("nightly") is None

    def test_a_redeclared_schedule_paused_as_undeclared_runs_again(self, store: Store) -> None:
        """Declaring again undoes an "undeclared" pause, but never an operator's pause."""
        store.save_schedule("a", "default", DECL)
        store.save_schedule("b", "default", DECL)
        store.pause_schedule("a", reason="undeclared")
        store.pause_schedule("b")
        assert store.save_schedule("a", "default", DECL) == "updated"
        assert store.save_schedule("b", "default", DECL) == "unchanged"
        assert {r.name: r.paused for r in store.schedules()} == {"a": "", "b": "operator"}

    def test_schedules_filter_by_queue(self, store: Store) -> None:
        """``schedules(queue)`` lists only that queue's schedules, in name order."""
        store.save_schedule("b", "mail", DECL)
        store.save_schedule("a", "mail", DECL)
        store.save_schedule("c", "sms", DECL)
        assert [r.name for r in store.schedules("mail")] == ["a", "b"]
        assert [r.name for r in store.schedules()] == ["a", "b", "c"]


class TestFireTick:
    def test_fires_once_with_its_task(self, store: Store, clock: FakeEpoch) -> None:
        """A tick advances the record and creates its task due at the fire time; the same tick
        from a stale record is refused and creates nothing."""
        store.save_schedule("nightly", "default", DECL)
        rec = store.get_schedule("nightly")
        assert rec is not None
        new, spec = tick(rec, T0 + 60)
        clock.advance(60.2)
        task = store.fire_tick(rec, new, spec)
        assert isinstance(task, Task) and task.id == spec.id and task.due_at == T0 + 60
        assert store.fire_tick(rec, new, spec) is False
        stored = store.get_schedule("nightly")
        assert stored is not None and (stored.last, stored.task) == (T0 + 60, spec.id)
        assert [t.id for t in store.list()] == [spec.id]
        assert store.get(spec.id).status is TaskStatus.PENDING  # type: ignore[union-attr]

    def test_an_existing_tick_task_is_not_created_twice(self, store: Store) -> None:
        """When the tick's task exists already, the record advances and no task is added."""
        store.save_schedule("nightly", "default", DECL)
        rec = store.get_schedule("nightly")
        assert rec is not None
        new, spec = tick(rec, T0 + 60)
        store.create(spec)
        assert store.fire_tick(rec, new, spec) is True
        assert len(store.list()) == 1
        assert store.get_schedule("nightly").last == T0 + 60  # type: ignore[union-attr]

    def test_a_paused_or_changed_record_does_not_fire(self, store: Store) -> None:
        """A pause (or any change) between the read and the tick makes the tick write nothing."""
        store.save_schedule("nightly", "default", DECL)
        rec = store.get_schedule("nightly")
        assert rec is not None
        store.pause_schedule("nightly")
        new, spec = tick(rec, T0 + 60)
        assert store.fire_tick(rec, new, spec) is False
        paused = store.get_schedule("nightly")
        assert paused is not None and store.fire_tick(paused, new, spec) is False
        assert store.list() == []

    def test_advance_without_a_task(self, store: Store) -> None:
        """A skipped or missed tick advances the record and enqueues nothing."""
        store.save_schedule("nightly", "default", DECL)
        rec = store.get_schedule("nightly")
        assert rec is not None
        assert store.fire_tick(rec, rec.changed(T0, last=T0 + 60)) is True
        assert store.list() == []

    def test_racing_workers_fire_a_tick_once(
        self, backend: str, store: Store, store_url: str, clock: FakeEpoch
    ) -> None:
        """Eight workers (own connections where the backend is shared) firing the same tick at
        once: exactly one creates its task."""
        store.save_schedule("nightly", "default", DECL)
        shared = backend in SHARED_BACKENDS
        stores = [open_store(store_url, clock=clock) if shared else store for _ in range(8)]
        results: list[Task | bool] = []
        lock = threading.Lock()
        start = threading.Barrier(len(stores))

        def fire(s: Store) -> None:
            rec = s.get_schedule("nightly")
            assert rec is not None
            new, spec = tick(rec, T0 + 60)
            start.wait(timeout=10)
            got = s.fire_tick(rec, new, spec)
            with lock:
                results.append(got)

        threads = [threading.Thread(target=fire, args=(s,)) for s in stores]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
        finally:
            if shared:
                for s in stores:
                    s.close()
        assert sum(isinstance(r, Task) for r in results) == 1
        assert results.count(False) == 7
        assert len(store.list()) == 1

    @pytest.mark.parametrize("name", ["", "a b", "x" * 181, "é"])
    def test_bad_names_are_refused(self, store: Store, name: str) -> None:
        """A schedule name outside 1-180 of [A-Za-z0-9_.-] is refused, naming the value."""
        with pytest.raises(ValueError, match="name must be"):
            store.save_schedule(name, "default", DECL)
