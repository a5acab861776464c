"""The Store contract, tested once and run against every backend (see ``conftest.BACKENDS``).

Every test passes ``now=`` (or moves the fake clock); none sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from resile import Constant, DecorrelatedJitter, DuplicateTask, Exponential, Linear
from resile.backoff import Backoff
from resile.queue import AttemptRecord, Outcome, Store, Task, TaskError, TaskSpec, TaskStatus
from resile.queue import _transitions as tr
from resile.queue._names import LEASE_EXPIRED_REASON
from resile.queue.store.base import list_key

from .conftest import SHARED_BACKENDS, T0, FakeEpoch

W1, W2 = "worker-1", "worker-2"


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "h")
    kw.setdefault("backoff", Constant(5.0))
    return TaskSpec(**kw)


def lease_one(store: Store, worker: str = W1, now: float = T0, **kw: Any) -> Task:
    got = store.lease("default", worker, now=now, **kw)
    assert len(got) == 1, got
    return got[0]


class TestCreate:
    def test_new_task_is_pending_with_every_field(self, store: Store) -> None:
        """create stores a PENDING task holding exactly what the spec said."""
        t = store.create(
            spec(
                id="a",
                params={"x": [1, {"y": None}]},
                priority=7,
                max_retries=2,
                backoff=Linear(1, 2),
                timeout=30,
                resources={"min_gpu_memory_gb": 0.5},
                queue="q",
            ),
            now=T0,
        )
        assert t.status is TaskStatus.PENDING and t.status == "PENDING"
        assert (t.id, t.queue, t.handler, t.priority, t.max_retries) == ("a", "q", "h", 7, 2)
        assert t.params == {"x": [1, {"y": None}]}
        assert t.backoff == Linear(1, 2).to_dict()
        assert t.backoff_policy == Linear(1, 2)
        assert t.timeout == 30.0 and t.resources == {"min_gpu_memory_gb": 0.5}
        assert t.attempts == 0 and t.progress == 0 and t.history == ()
        assert t.due_at == T0 and t.created_at == T0 and t.updated_at == T0
        assert t.lease_owner is None and t.result is None and t.last_error is None
        assert store.get("a") == t

    def test_generated_ids_are_unique(self, store: Store) -> None:
        """Without an id the store generates distinct ones."""
        ids = {store.create(spec(), now=T0).id for _ in range(50)}
        assert len(ids) == 50

    def test_delay_and_due_at(self, store: Store) -> None:
        """delay counts from creation; due_at is absolute; both keep sub-ms precision."""
        assert store.create(spec(id="d", delay=1.2345678), now=T0).due_at == pytest.approx(
            T0 + 1.2345678, abs=1e-6
        )
        assert store.get("d").due_at == pytest.approx(T0 + 1.2345678, abs=1e-6)  # type: ignore[union-attr]
        assert store.create(spec(id="a", due_at=T0 + 9.0005), now=T0).due_at == T0 + 9.0005

    def test_sequence_increases(self, store: Store) -> None:
        """Each task gets a larger sequence number than the one before."""
        seqs = [store.create(spec(), now=T0).sequence for _ in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5

    def test_duplicate_id_raises_and_keeps_the_original(self, store: Store) -> None:
        """A duplicate id raises DuplicateTask naming it; the stored task is unchanged."""
        first = store.create(spec(id="x", params={"v": 1}), now=T0)
        with pytest.raises(DuplicateTask, match="'x'") as info:
            store.create(spec(id="x", params={"v": 2}), now=T0 + 1)
        assert info.value.task_id == "x" and info.value.queue == "default"
        assert store.get("x") == first

    def test_duplicate_id_is_global_across_queues(self, store: Store) -> None:
        """Ids are unique in the store, whatever the queue."""
        store.create(spec(id="x", queue="a"), now=T0)
        with pytest.raises(DuplicateTask):
            store.create(spec(id="x", queue="b"), now=T0)

    def test_if_exists_return_gives_the_existing_task(self, store: Store) -> None:
        """if_exists="return" returns the stored task, whatever its state, and stores nothing."""
        first = store.create(spec(id="x", params={"v": 1}), now=T0)
        lease_one(store)
        again = store.create(spec(id="x", params={"v": 2}), if_exists="return", now=T0 + 1)
        assert again.params == {"v": 1} and again.status is TaskStatus.DOING
        assert again.sequence == first.sequence
        assert sum(store.stats().values()) == 1

    def test_a_policy_changed_between_creates_is_stored_as_changed(self, store: Store) -> None:
        """Stores encode a recurring backoff mapping once; a change to it is not missed."""
        s = spec(backoff=Constant(5.0))
        first = store.create(s, now=T0)
        s.backoff["delay"] = 9.0  # type: ignore[index]
        second = store.create(s, now=T0)
        assert first.backoff["delay"] == 5.0
        assert second.backoff["delay"] == 9.0
        assert store.get(second.id).backoff["delay"] == 9.0  # type: ignore[union-attr]
        assert store.get(first.id).backoff["delay"] == 5.0  # type: ignore[union-attr]

    def test_bad_if_exists(self, store: Store) -> None:
        """An unknown duplicate policy is refused."""
        with pytest.raises(ValueError, match="if_exists"):
            store.create(spec(), if_exists="ignore", now=T0)  # type: ignore[arg-type]

    def test_create_many_in_order(self, store: Store) -> None:
        """create_many returns the tasks in order with increasing sequence numbers."""
        tasks = store.create_many([spec(id=f"t{i}") for i in range(5)], now=T0)
        assert [t.id for t in tasks] == [f"t{i}" for i in range(5)]
        assert [t.sequence for t in tasks] == sorted(t.sequence for t in tasks)

    def test_create_many_mixes_kinds_of_task(self, store: Store) -> None:
        """One batch of tasks that differ in every shared field keeps each task's own."""
        a = dict(backoff=Constant(1.0), max_retries=1)
        b = dict(backoff=Linear(2, 3), max_retries=4, timeout=9, resources={"gpu": 1.0})
        specs = [
            spec(id="a1", queue="q1", priority=1, params={"n": 1}, **a),
            spec(id="b1", queue="q2", handler="h2", **b),
            spec(id="a2", queue="q1", priority=1, params={"n": 2}, **a),
            spec(id="c1", queue="q1", priority=-5, delay=30, **a),
            spec(id="b2", queue="q2", handler="h2", **b),
        ]
        made = store.create_many(specs, now=T0)
        for s, t in zip(specs, made, strict=True):
            got = store.get(s.id)  # type: ignore[arg-type]
            assert got == t
            assert (t.id, t.queue, t.handler, t.priority, t.max_retries) == (
                s.id,
                s.queue,
                s.handler,
                s.priority,
                s.max_retries,
            )
            assert (t.params, t.backoff, t.timeout, t.resources) == (
                dict(s.params),
                dict(s.backoff),
                s.timeout,
                dict(s.resources),  # type: ignore[arg-type]
            )
            assert t.due_at == T0 + s.delay  # type: ignore[operator]

    def test_create_many_is_all_or_nothing(self, store: Store) -> None:
        """A duplicate in a batch stores nothing of the batch."""
        store.create(spec(id="b"), now=T0)
        with pytest.raises(DuplicateTask):
            store.create_many([spec(id="a"), spec(id="b"), spec(id="c")], now=T0)
        assert store.get("a") is None and store.get("c") is None
        with pytest.raises(DuplicateTask):
            store.create_many([spec(id="n"), spec(id="n")], now=T0)
        assert store.get("n") is None

    def test_create_many_return_policy(self, store: Store) -> None:
        """Under if_exists="return" duplicates come back as the existing tasks."""
        old = store.create(spec(id="b", params={"old": True}), now=T0)
        tasks = store.create_many(
            [spec(id="a"), spec(id="b"), spec(id="a")], if_exists="return", now=T0
        )
        assert [t.id for t in tasks] == ["a", "b", "a"]
        assert tasks[1] == old and tasks[0].sequence == tasks[2].sequence
        assert sum(store.stats().values()) == 2

    def test_listeners_hear_creates(self, store: Store) -> None:
        """add_listener callbacks get the created tasks; removing stops them; errors are ignored."""
        heard: list[str] = []

        def boom(tasks: Any) -> None:
            raise RuntimeError("listener bug")

        store.add_listener(boom)
        remove = store.add_listener(lambda ts: heard.extend(t.id for t in ts))
        store.create(spec(id="a"), now=T0)
        store.create_many([spec(id="b"), spec(id="c")], now=T0)
        store.create(spec(id="a"), if_exists="return", now=T0)
        remove()
        store.create(spec(id="d"), now=T0)
        assert heard == ["a", "b", "c"]


class TestLease:
    def test_nothing_due(self, store: Store) -> None:
        """An empty queue, or one with only future tasks, leases nothing."""
        assert store.lease("default", W1, now=T0) == []
        store.create(spec(delay=10), now=T0)
        assert store.lease("default", W1, now=T0 + 9.999) == []

    def test_never_early(self, store: Store) -> None:
        """A task due at T is not leased a microsecond before T, and is at T."""
        store.create(spec(id="a", due_at=T0 + 1.0), now=T0)
        assert store.lease("default", W1, now=T0 + 1.0 - 1e-6) == []
        assert lease_one(store, now=T0 + 1.0).id == "a"

    def test_lease_sets_doing_and_counts_the_attempt(self, store: Store) -> None:
        """Leasing makes the task DOING, counts the attempt and records owner and expiry."""
        store.create(spec(id="a"), now=T0)
        t = lease_one(store, now=T0 + 1, lease_seconds=12.5)
        assert t.status is TaskStatus.DOING and t.attempts == 1
        assert t.lease_owner == W1 and t.lease_expires_at == T0 + 13.5
        assert t.started_at == T0 + 1
        assert store.get("a") == t

    def test_leased_task_is_not_leased_again(self, store: Store) -> None:
        """A DOING task with a live lease is invisible to other workers."""
        store.create(spec(id="a"), now=T0)
        lease_one(store, W1)
        assert store.lease("default", W2, now=T0 + 1) == []

    def test_lower_priority_value_first(self, store: Store) -> None:
        """Lower priority values are leased first."""
        for p in (5, -1, 3, 0):
            store.create(spec(id=f"p{p}", priority=p), now=T0)
        got = store.lease("default", W1, limit=10, now=T0)
        assert [t.id for t in got] == ["p-1", "p0", "p3", "p5"]

    def test_equal_priority_is_fifo(self, store: Store) -> None:
        """Tasks of one priority run in creation order, even created in the same instant."""
        for i in range(20):
            store.create(spec(id=f"t{i:02}"), now=T0)
        got = [lease_one(store).id for _ in range(20)]
        assert got == [f"t{i:02}" for i in range(20)]

    def test_due_urgent_task_overtakes_older_due_routine_one(self, store: Store) -> None:
        """Among due tasks priority decides, not which became due first."""
        store.create(spec(id="old-low", priority=10), now=T0)
        store.create(spec(id="new-high", priority=0, delay=5), now=T0)
        store.create(spec(id="future-high", priority=-5, delay=100), now=T0)
        got = store.lease("default", W1, limit=10, now=T0 + 5)
        assert [t.id for t in got] == ["new-high", "old-low"]

    def test_limit(self, store: Store) -> None:
        """limit caps how many tasks one lease takes."""
        store.create_many([spec() for _ in range(7)], now=T0)
        assert len(store.lease("default", W1, limit=3, now=T0)) == 3
        assert len(store.lease("default", W1, limit=10, now=T0)) == 4

    def test_queues_are_separate(self, store: Store) -> None:
        """A lease takes only from the queues it names."""
        store.create(spec(id="a", queue="a"), now=T0)
        store.create(spec(id="b", queue="b"), now=T0)
        assert [t.id for t in store.lease("b", W1, now=T0)] == ["b"]
        assert store.lease(["b", "c"], W1, now=T0) == []

    def test_several_queues_compete_on_priority_then_sequence(self, store: Store) -> None:
        """Leasing from several queues merges them by (priority, sequence)."""
        store.create(spec(id="a1", queue="a", priority=1), now=T0)
        store.create(spec(id="b1", queue="b", priority=1), now=T0)
        store.create(spec(id="a0", queue="a", priority=0), now=T0)
        store.create(spec(id="b2", queue="b", priority=2), now=T0)
        got = store.lease(["a", "b"], W1, limit=10, now=T0)
        assert [t.id for t in got] == ["a0", "a1", "b1", "b2"]

    def test_many_due_tasks_in_chunks(self, store: Store) -> None:
        """Ordering holds across more tasks than one read chunk."""
        store.create_many(
            [spec(id=f"t{i:03}", priority=i % 3) for i in range(200)],
            now=T0,
        )
        got = store.lease("default", W1, limit=200, now=T0)
        expected = sorted((i % 3, i) for i in range(200))
        assert [t.id for t in got] == [f"t{i:03}" for _, i in expected]

    def test_capacity_filters_tasks_with_needs(self, store: Store) -> None:
        """With capacity, only tasks whose needs it meets are leased; None ignores needs."""
        store.create(spec(id="gpu", resources={"min_gpu_memory_gb": 4}), now=T0)
        store.create(spec(id="cpu"), now=T0)
        store.create(spec(id="zero", resources={"min_gpu_memory_gb": 0}), now=T0)
        got = store.lease("default", W1, limit=5, capacity={}, now=T0)
        assert {t.id for t in got} == {"cpu", "zero"}
        assert store.lease("default", W1, capacity={"min_gpu_memory_gb": 2}, now=T0) == []
        assert lease_one(store, capacity={"min_gpu_memory_gb": 8}).id == "gpu"

    def test_capacity_none_leases_regardless(self, store: Store) -> None:
        """capacity=None takes tasks with any needs."""
        store.create(spec(id="gpu", resources={"min_gpu_memory_gb": 80}), now=T0)
        assert lease_one(store).id == "gpu"

    def test_bad_arguments(self, store: Store) -> None:
        """limit < 1, lease_seconds <= 0, no queue or no worker id are refused."""
        with pytest.raises(ValueError, match="limit"):
            store.lease("default", W1, limit=0, now=T0)
        with pytest.raises(ValueError, match="lease_seconds"):
            store.lease("default", W1, lease_seconds=0, now=T0)
        with pytest.raises(ValueError, match="queues"):
            store.lease([], W1, now=T0)
        with pytest.raises(ValueError, match="worker_id"):
            store.lease("default", "", now=T0)


class TestLeaseExpiry:
    def test_expired_lease_comes_back_with_the_attempt_counted(self, store: Store) -> None:
        """A lapsed lease is reclaimed by the next lease: the lost attempt counts."""
        store.create(spec(id="a", max_retries=3, backoff=Constant(2.0)), now=T0)
        lease_one(store, W1, lease_seconds=10)
        assert store.lease("default", W2, now=T0 + 10) == []  # not yet: expiry is exclusive
        assert store.lease("default", W2, now=T0 + 11) == []  # reclaimed; due at expiry + 2
        t = store.get("a")
        assert t is not None and t.status is TaskStatus.PENDING and t.attempts == 1
        assert t.due_at == T0 + 12.0 and t.last_delay == 2.0
        assert t.last_error == TaskError("LeaseExpired", LEASE_EXPIRED_REASON)
        assert [(h.attempt, h.outcome) for h in t.history] == [(1, Outcome.LOST)]
        assert t.history[0].ended_at == T0 + 10 and t.history[0].started_at == T0
        t2 = lease_one(store, W2, now=T0 + 12)
        assert t2.attempts == 2 and t2.lease_owner == W2

    def test_task_that_always_loses_its_worker_ends_failed(self, store: Store) -> None:
        """A task whose every attempt is lost is FAILED after max_retries + 1 attempts."""
        store.create(spec(id="poison", max_retries=2, backoff=Constant(0)), now=T0)
        now = T0
        for attempt in (1, 2, 3):
            t = lease_one(store, f"w{attempt}", now=now, lease_seconds=5)
            assert t.attempts == attempt
            now += 6
        assert store.lease("default", "w4", now=now) == []
        t = store.get("poison")
        assert t is not None and t.status is TaskStatus.FAILED
        assert t.last_error is not None and t.last_error.message == LEASE_EXPIRED_REASON
        assert t.attempts == 3 and [h.outcome for h in t.history] == [Outcome.LOST] * 3
        assert t.finished_at == now

    def test_reclaimed_task_can_be_leased_in_the_same_call(self, store: Store) -> None:
        """With no backoff wait, the reclaiming lease can take the task itself."""
        store.create(spec(id="a", backoff=Constant(0)), now=T0)
        lease_one(store, W1, lease_seconds=5)
        t = lease_one(store, W2, now=T0 + 6)
        assert t.id == "a" and t.attempts == 2 and t.lease_owner == W2

    def test_renewed_lease_is_not_reclaimed(self, store: Store) -> None:
        """Heartbeats keep a long attempt's lease alive."""
        store.create(spec(id="a"), now=T0)
        lease_one(store, W1, lease_seconds=5)
        for k in range(1, 5):
            assert store.renew("a", W1, lease_seconds=5, now=T0 + 4 * k)
        assert store.lease("default", W2, now=T0 + 20) == []
        assert store.get("a").status is TaskStatus.DOING  # type: ignore[union-attr]

    def test_reclaim_only_in_leased_queues(self, store: Store) -> None:
        """Expired leases of other queues are left for their own workers."""
        store.create(spec(id="a", queue="a"), now=T0)
        store.lease("a", W1, lease_seconds=1, now=T0)
        store.lease("b", W2, now=T0 + 5)
        assert store.get("a").status is TaskStatus.DOING  # type: ignore[union-attr]


class TestOwnership:
    def test_renew(self, store: Store) -> None:
        """renew extends the owner's lease and refuses anyone else."""
        store.create(spec(id="a"), now=T0)
        lease_one(store, W1, lease_seconds=5)
        assert store.renew("a", W1, lease_seconds=30, now=T0 + 1)
        assert store.get("a").lease_expires_at == T0 + 31  # type: ignore[union-attr]
        assert not store.renew("a", W2, now=T0 + 1)
        assert not store.renew("missing", W1, now=T0 + 1)

    def test_renew_many(self, store: Store) -> None:
        """renew_many returns the ids still held."""
        store.create_many([spec(id="a"), spec(id="b"), spec(id="c")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        lease_one(store, W2)
        assert store.renew_many(["a", "b", "c", "zz"], W1, now=T0 + 1) == {"a", "b"}

    def test_stale_worker_cannot_overwrite_the_new_owner(self, store: Store) -> None:
        """After a reclaim the old worker's renew/complete/fail/release write nothing."""
        store.create(spec(id="a", backoff=Constant(0)), now=T0)
        lease_one(store, W1, lease_seconds=5)
        new = lease_one(store, W2, now=T0 + 6)
        assert not store.renew("a", W1, now=T0 + 7)
        assert store.complete("a", W1, {"stale": True}, now=T0 + 7) is None
        assert store.fail("a", W1, RuntimeError("stale"), now=T0 + 7) is None
        assert store.release("a", W1, now=T0 + 7) is None
        assert store.progress("a", 50, worker_id=W1, now=T0 + 7) is False
        assert store.save_checkpoint("a", {"stale": 1}, worker_id=W1, now=T0 + 7) is False
        cur = store.get("a")
        assert cur is not None and cur.status is TaskStatus.DOING and cur.lease_owner == W2
        assert cur.attempts == new.attempts and cur.result is None and cur.checkpoint is None
        done = store.complete("a", W2, "fresh", now=T0 + 8)
        assert done is not None and done.result == "fresh"

    def test_only_doing_tasks_complete_or_fail(self, store: Store) -> None:
        """complete/fail on a PENDING or finished task write nothing."""
        store.create(spec(id="a"), now=T0)
        assert store.complete("a", W1, 1, now=T0) is None
        assert store.fail("a", W1, RuntimeError(), now=T0) is None
        lease_one(store)
        store.complete("a", W1, 1, now=T0 + 1)
        assert store.complete("a", W1, 2, now=T0 + 2) is None
        assert store.fail("a", W1, RuntimeError(), now=T0 + 2) is None
        assert store.get("a").result == 1  # type: ignore[union-attr]


class TestComplete:
    def test_done(self, store: Store) -> None:
        """complete stores the result, progress 100, the history entry and finished_at."""
        store.create(spec(id="a"), now=T0)
        lease_one(store, now=T0 + 1)
        t = store.complete("a", W1, {"rows": [1, 2], "ok": True}, now=T0 + 3.25)
        assert t is not None and t.status is TaskStatus.DONE and t.terminal
        assert t.result == {"rows": [1, 2], "ok": True} and t.progress == 100
        assert t.finished_at == T0 + 3.25 and t.lease_expires_at is None
        (h,) = t.history
        assert (h.attempt, h.outcome, h.error) == (1, Outcome.OK, None)
        assert h.duration == pytest.approx(2.25)
        assert store.get("a") == t

    def test_complete_many(self, store: Store) -> None:
        """complete_many answers each (id, result) as complete would, in order."""
        store.create_many([spec(id=i) for i in ("a", "b", "c")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        lease_one(store, W2)
        done = store.complete_many([("a", 1), ("c", "x"), ("b", {"y": [2]})], W1, now=T0 + 1)
        assert [None if t is None else (t.id, t.status, t.result) for t in done] == [
            ("a", TaskStatus.DONE, 1),
            None,
            ("b", TaskStatus.DONE, {"y": [2]}),
        ]
        assert store.get("b") == done[2]
        assert store.get("c").status is TaskStatus.DOING  # type: ignore[union-attr]
        assert store.complete_many([], W1) == []

    def test_complete_many_refuses_non_json_before_writing(self, store: Store) -> None:
        """A non-JSON result in the batch raises and nothing of the batch is written."""
        store.create_many([spec(id="a"), spec(id="b")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        with pytest.raises(ValueError, match="set"):
            store.complete_many([("a", 1), ("b", {1, 2})], W1, now=T0)
        assert store.stats()[TaskStatus.DOING] == 2

    def test_complete_many_flags(self, store: Store) -> None:
        """complete_many_flags writes what complete_many writes and answers True / False per item."""
        store.create_many([spec(id=i) for i in ("a", "b", "c")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        lease_one(store, W2)
        flags = store.complete_many_flags([("a", 1), ("c", "x"), ("b", [2])], W1, now=T0 + 1)
        assert flags == [True, False, True]
        a, b, c = (store.get(i) for i in ("a", "b", "c"))
        assert a is not None and (a.status, a.result, a.finished_at) == (TaskStatus.DONE, 1, T0 + 1)
        assert b is not None and (b.status, b.result) == (TaskStatus.DONE, [2])
        assert c is not None and c.status is TaskStatus.DOING and c.lease_owner == W2
        assert store.complete_many_flags([], W1) == []

    def test_complete_many_flags_refuses_non_json_before_writing(self, store: Store) -> None:
        """A non-JSON result makes complete_many_flags raise with nothing of the batch written."""
        store.create_many([spec(id="a"), spec(id="b")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        with pytest.raises(ValueError, match="set"):
            store.complete_many_flags([("a", 1), ("b", {1, 2})], W1, now=T0)
        assert store.stats()[TaskStatus.DOING] == 2

    def test_complete_then_lease(self, store: Store) -> None:
        """complete_then_lease records the completions, then leases the next due tasks."""
        store.create_many([spec(id=i) for i in ("a", "b", "c", "d")], now=T0)
        store.lease("default", W1, limit=2, now=T0)
        flags, leased = store.complete_then_lease(
            [("a", "ra"), ("b", "rb")], "default", W1, limit=5, now=T0 + 1
        )
        assert flags == [True, True]
        assert sorted(t.id for t in leased) == ["c", "d"]
        assert all(t.status is TaskStatus.DOING and t.lease_owner == W1 for t in leased)
        assert store.get("a").result == "ra"  # type: ignore[union-attr]
        assert store.stats()[TaskStatus.DONE] == 2

    def test_complete_then_lease_with_nothing_to_complete(self, store: Store) -> None:
        """With no completions, complete_then_lease is a plain lease."""
        store.create(spec(id="a"), now=T0)
        flags, leased = store.complete_then_lease([], "default", W1, now=T0)
        assert flags == [] and [t.id for t in leased] == ["a"]

    def test_complete_then_lease_refuses_non_json_before_anything(self, store: Store) -> None:
        """A non-JSON result makes complete_then_lease raise with nothing written and nothing leased."""
        store.create_many([spec(id="a"), spec(id="b")], now=T0)
        lease_one(store)
        with pytest.raises(ValueError, match="set"):
            store.complete_then_lease([("a", {1})], "default", W1, now=T0)
        assert store.get("a").status is TaskStatus.DOING  # type: ignore[union-attr]
        assert store.get("b").status is TaskStatus.PENDING  # type: ignore[union-attr]

    def test_non_json_result_is_refused_and_the_lease_kept(self, store: Store) -> None:
        """A result that is not plain JSON raises naming the path; the task stays DOING."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        with pytest.raises(ValueError, match=r"result\['when'\]: datetime"):
            import datetime

            store.complete("a", W1, {"when": datetime.datetime.now()}, now=T0 + 1)
        assert store.get("a").status is TaskStatus.DOING  # type: ignore[union-attr]
        assert store.fail("a", W1, ValueError("bad result"), now=T0 + 1) is not None


class TestFail:
    def test_retry_is_scheduled_by_the_stored_backoff(self, store: Store) -> None:
        """fail puts the task back PENDING, due at now + backoff.delay(attempts, last_delay)."""
        store.create(spec(id="a", max_retries=5, backoff=Linear(1.0, 2.0)), now=T0)
        now = T0
        expected = [1.0, 3.0, 5.0]
        for attempt, wait in enumerate(expected, start=1):
            t = lease_one(store, now=now)
            assert t.attempts == attempt
            failed = store.fail("a", W1, RuntimeError(f"boom {attempt}"), now=now + 0.5)
            assert failed is not None and failed.status is TaskStatus.PENDING
            assert failed.due_at == pytest.approx(now + 0.5 + wait)
            assert failed.last_delay == pytest.approx(wait)
            assert store.lease("default", W1, now=failed.due_at - 1e-6) == []
            now = failed.due_at
        t = store.get("a")
        assert t is not None and [h.attempt for h in t.history] == [1, 2, 3]
        assert all(h.outcome is Outcome.ERROR for h in t.history)
        assert t.history[-1].error is not None and t.history[-1].error.message == "boom 3"

    def test_error_is_recorded(self, store: Store) -> None:
        """The exception's type, message and traceback are kept."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        try:
            raise KeyError("missing-key")
        except KeyError as exc:
            t = store.fail("a", W1, exc, now=T0 + 1)
        assert t is not None and t.last_error is not None
        assert t.last_error.type == "KeyError" and "missing-key" in t.last_error.message
        assert "Traceback" in t.last_error.traceback and "raise KeyError" in t.last_error.traceback

    def test_max_retries_means_retries_after_the_first_attempt(self, store: Store) -> None:
        """max_retries=2 gives 3 attempts; the third failure dead-letters."""
        store.create(spec(id="a", max_retries=2, backoff=Constant(0)), now=T0)
        outcomes = []
        for _ in range(3):
            lease_one(store)
            outcomes.append(store.fail("a", W1, RuntimeError("x"), now=T0).status)  # type: ignore[union-attr]
        assert outcomes == [TaskStatus.PENDING, TaskStatus.PENDING, TaskStatus.FAILED]
        t = store.get("a")
        assert t is not None and t.attempts == 3 and t.finished_at == T0
        assert store.lease("default", W1, now=T0 + 100) == []

    def test_zero_retries(self, store: Store) -> None:
        """max_retries=0: the first failure is final."""
        store.create(spec(id="a", max_retries=0), now=T0)
        lease_one(store)
        assert store.fail("a", W1, RuntimeError(), now=T0).status is TaskStatus.FAILED  # type: ignore[union-attr]

    def test_permanent_dead_letters_at_once(self, store: Store) -> None:
        """permanent=True fails the task with retries left."""
        store.create(spec(id="a", max_retries=10), now=T0)
        lease_one(store)
        t = store.fail("a", W1, ValueError("bad input"), permanent=True, now=T0)
        assert t is not None and t.status is TaskStatus.FAILED and t.retries_left == 10

    def test_explicit_delay_overrides_the_backoff(self, store: Store) -> None:
        """delay= (a server's Retry-After) replaces the policy's wait."""
        store.create(spec(id="a", backoff=Constant(5)), now=T0)
        lease_one(store)
        t = store.fail("a", W1, RuntimeError(), delay=42.0, now=T0)
        assert t is not None and t.due_at == T0 + 42 and t.last_delay == 42

    def test_timeout_outcome(self, store: Store) -> None:
        """outcome=TIMEOUT is recorded in the history."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        t = store.fail(
            "a", W1, TaskError("TimeoutError", "took > 30 s"), outcome=Outcome.TIMEOUT, now=T0
        )
        assert t is not None and t.history[-1].outcome is Outcome.TIMEOUT

    def test_exponential_policy_round_trips(self, store: Store) -> None:
        """A stored Exponential policy gives initial * multiplier ** (n - 1)."""
        store.create(
            spec(id="a", max_retries=5, backoff=Exponential(0.5, 3.0, jitter="none")), now=T0
        )
        waits = []
        now = T0
        for _ in range(3):
            lease_one(store, now=now)
            t = store.fail("a", W1, RuntimeError(), now=now)
            assert t is not None
            waits.append(t.due_at - now)
            now = t.due_at
        assert waits == pytest.approx([0.5, 1.5, 4.5])


class TestRelease:
    def test_release_hands_back_without_counting(self, store: Store) -> None:
        """release returns the task PENDING and due now, its attempt not counted."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        t = store.release("a", W1, now=T0 + 1)
        assert t is not None and t.status is TaskStatus.PENDING and t.attempts == 0
        assert t.due_at == T0 + 1 and t.history == ()
        assert lease_one(store, W2, now=T0 + 1).attempts == 1
        assert store.release("a", W1, now=T0 + 2) is None


class TestCancel:
    def test_pending_task_never_runs(self, store: Store) -> None:
        """A canceled PENDING task is CANCELED and never leased."""
        store.create(spec(id="a"), now=T0)
        assert store.cancel("a", now=T0 + 1)
        t = store.get("a")
        assert t is not None and t.status is TaskStatus.CANCELED and t.finished_at == T0 + 1
        assert store.lease("default", W1, now=T0 + 2) == []

    def test_doing_task_worker_finds_out(self, store: Store) -> None:
        """Canceling a DOING task makes the worker's renew fail and its writes no-ops."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        assert store.cancel("a", now=T0 + 1)
        assert not store.renew("a", W1, now=T0 + 2)
        assert store.complete("a", W1, "late", now=T0 + 2) is None
        t = store.get("a")
        assert t is not None and t.status is TaskStatus.CANCELED and t.result is None
        assert [h.outcome for h in t.history] == [Outcome.CANCELED]
        assert store.lease("default", W2, now=T0 + 1000) == []  # not reclaimed either

    def test_terminal_or_missing(self, store: Store) -> None:
        """cancel of a finished or unknown task returns False and changes nothing."""
        store.create(spec(id="a"), now=T0)
        lease_one(store)
        done = store.complete("a", W1, 1, now=T0)
        assert not store.cancel("a", now=T0 + 1)
        assert store.get("a") == done
        assert not store.cancel("missing")
        store.create(spec(id="b"), now=T0)
        assert store.cancel("b") and not store.cancel("b")


class TestProgressAndCheckpoint:
    def test_progress(self, store: Store) -> None:
        """progress is stored for PENDING/DOING tasks, with an optional owner check."""
        store.create(spec(id="a"), now=T0)
        assert store.progress("a", 10, now=T0)
        lease_one(store)
        assert store.progress("a", 42.5, worker_id=W1, now=T0)
        assert store.get("a").progress == 42.5  # type: ignore[union-attr]
        assert not store.progress("a", 50, worker_id=W2, now=T0)
        assert not store.progress("missing", 50, now=T0)
        store.complete("a", W1, None, now=T0)
        assert not store.progress("a", 5, now=T0)

    @pytest.mark.parametrize("pct", [-1, 100.5, float("nan"), "50", True])
    def test_bad_progress(self, store: Store, pct: Any) -> None:
        """progress outside 0..100 (or not a number) is refused."""
        store.create(spec(id="a"), now=T0)
        with pytest.raises(ValueError, match="progress"):
            store.progress("a", pct, now=T0)

    def test_checkpoint_survives_a_failed_attempt(self, store: Store) -> None:
        """A checkpoint saved by one attempt is there for the next."""
        store.create(spec(id="a", backoff=Constant(0)), now=T0)
        assert store.get_checkpoint("a") is None
        lease_one(store)
        cp = {"offset": 4096, "sha256": "ab" * 32}
        assert store.save_checkpoint("a", cp, worker_id=W1, now=T0)
        store.fail("a", W1, OSError("connection reset"), now=T0)
        t = lease_one(store, W2)
        assert t.checkpoint == cp and store.get_checkpoint("a") == cp
        assert store.get_checkpoint("missing") is None

    def test_checkpoint_must_be_json(self, store: Store) -> None:
        """A checkpoint that is not plain JSON raises naming the path."""
        store.create(spec(id="a"), now=T0)
        with pytest.raises(ValueError, match=r"checkpoint\['seen'\]: set"):
            store.save_checkpoint("a", {"seen": {1, 2}}, now=T0)


class TestQueries:
    def test_get_missing(self, store: Store) -> None:
        """get of an unknown id is None."""
        assert store.get("nope") is None

    def test_list_filters_and_pages(self, store: Store) -> None:
        """list filters by queue and status and pages by offset or by sequence cursor."""
        for i in range(10):
            store.create(spec(id=f"t{i}", queue="a" if i % 2 else "b"), now=T0)
        store.lease("a", W1, limit=2, now=T0)  # t1, t3
        assert [t.id for t in store.list()] == [f"t{i}" for i in range(10)]
        assert [t.id for t in store.list(queue="a")] == ["t1", "t3", "t5", "t7", "t9"]
        assert [t.id for t in store.list(status="DOING")] == ["t1", "t3"]
        assert [t.id for t in store.list(status=TaskStatus.DOING)] == ["t1", "t3"]
        assert [t.id for t in store.list(queue="a", status=["pending"])] == ["t5", "t7", "t9"]
        assert [t.id for t in store.list(limit=3, offset=3)] == ["t3", "t4", "t5"]
        page1 = store.list(limit=4)
        page2 = store.list(limit=4, after=page1[-1].sequence)
        assert [t.id for t in page1 + page2] == [f"t{i}" for i in range(8)]
        assert store.list(limit=5, offset=100) == []

    def test_list_bad_arguments(self, store: Store) -> None:
        """Unknown statuses and bad paging values are refused."""
        with pytest.raises(ValueError, match="status"):
            store.list(status="RUNNING")
        with pytest.raises(ValueError, match="limit"):
            store.list(limit=0)
        with pytest.raises(ValueError, match="offset"):
            store.list(offset=-1)

    def test_list_sorts_by_due_updated_and_creation_with_keyset_pages(self, store: Store) -> None:
        """list sorts by due, updated or creation time, either way, ties by sequence, and its
        (key, sequence) cursor walks every page in the same order as one call."""
        dues = [30.0, 10.0, 20.0, 10.0, 40.0, 20.0, 5.0]  # ties on 10 and 20
        for i, due in enumerate(dues):
            store.create(spec(id=f"t{i}", queue="a" if i % 3 else "b", due_at=T0 + due), now=T0)
        held = store.lease("b", W1, limit=1, now=T0 + 35)  # t0 (due 30) or t3 ... DOING now
        store.complete(held[0].id, W1, None, now=T0 + 50)  # DONE, updated last
        store.lease("a", W1, limit=1, now=T0 + 40)  # DOING, updated at T0 + 40
        store.make_due("t4", now=T0 + 3)  # PENDING, due and updated at T0 + 3
        everything = store.list(limit=100)
        assert len(everything) == len(dues)
        for order in ("created", "due", "updated"):
            for descending in (False, True):
                want = sorted(everything, key=lambda t: list_key(t, order), reverse=descending)
                got = store.list(order=order, descending=descending)
                assert [t.id for t in got] == [t.id for t in want], (order, descending)
                paged: list[Task] = []
                cursor: dict[str, Any] = {}
                while page := store.list(order=order, descending=descending, limit=2, **cursor):
                    paged += page
                    key, seq = list_key(page[-1], order)
                    cursor = (
                        {"after": seq} if order == "created" else {"after": seq, "after_key": key}
                    )
                assert [t.id for t in paged] == [t.id for t in want], (order, descending)
        in_a = store.list(queue="a", status="PENDING", order="due", descending=True)
        assert [t.id for t in in_a] == [
            t.id
            for t in sorted(everything, key=lambda t: list_key(t, "due"), reverse=True)
            if t.queue == "a" and t.status is TaskStatus.PENDING
        ]

    def test_finished_task_updated_at_is_finished_at(self, store: Store) -> None:
        """Every way to finish writes updated_at = finished_at (the list sorted by updated
        time reads the finish-time indexes for finished tasks), and a lapsed lease that
        dead-letters too."""
        for i in range(5):
            store.create(spec(id=f"t{i}", max_retries=0), now=T0)
        held = store.lease("default", W1, limit=4, lease_seconds=5, now=T0 + 1)
        store.complete(held[0].id, W1, None, now=T0 + 2)
        store.fail(held[1].id, W1, TaskError("E", "m"), permanent=True, now=T0 + 3)
        store.cancel(held[2].id, now=T0 + 4)
        store.cancel("t4", now=T0 + 5)  # PENDING
        store.lease("default", W2, now=T0 + 60)  # reclaims held[3]: no retry left
        finished = store.list(status=["DONE", "FAILED", "CANCELED"])
        assert len(finished) == 5
        for t in finished:
            assert t.finished_at is not None and t.updated_at == t.finished_at, t

    def test_list_by_time_pages_through_many_ties(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Sorted by due or updated time with batches sharing one time (more than a read
        chunk of the Redis store), each page is in (time, sequence) order and the pages
        walk every task once, filtered by status or not."""
        if hasattr(store, "WHOLE_CHUNK"):  # Redis: sets without a time index read in chunks
            monkeypatch.setattr(store, "WHOLE_CHUNK", 16)
        store.create_many(
            [spec(id=f"t{999 - i}", queue="a", due_at=T0 + (i >= 190)) for i in range(220)], now=T0
        )
        held = store.lease("a", W1, limit=100, now=T0 + 5)
        store.complete_many([(t.id, None) for t in held[:70]], W1, now=T0 + 6)
        store.complete_many([(t.id, None) for t in held[70:]], W1, now=T0 + 7)
        everything = store.list(limit=500)
        for order, status in (("due", "PENDING"), ("updated", "DONE"), ("updated", None)):
            for descending in (False, True):
                want = sorted(
                    (t for t in everything if status is None or t.status.value == status),
                    key=lambda t: list_key(t, order),
                    reverse=descending,
                )
                paged: list[Task] = []
                cursor: dict[str, Any] = {}
                kw: dict[str, Any] = {"order": order, "descending": descending, "limit": 20}
                while page := store.list(status=status, **kw, **cursor):
                    paged += page
                    key, seq = list_key(page[-1], order)
                    cursor = {"after": seq, "after_key": key}
                assert [t.id for t in paged] == [t.id for t in want], (order, status, descending)

    def test_list_bad_order_arguments(self, store: Store) -> None:
        """An unknown order, or a keyed cursor missing half of itself, is refused by name."""
        with pytest.raises(
            ValueError, match="order must be one of created, due, updated, got 'size'"
        ):
            store.list(order="size")
        with pytest.raises(ValueError, match="after and after_key go together"):
            store.list(order="due", after=3)
        with pytest.raises(ValueError, match="after and after_key go together"):
            store.list(order="updated", after_key=T0)
        with pytest.raises(ValueError, match="after_key applies to order due or updated"):
            store.list(after=3, after_key=T0)
        with pytest.raises(ValueError, match="after_key must be finite"):
            store.list(order="due", after=3, after_key=float("nan"))

    def test_stats_and_queues(self, store: Store) -> None:
        """stats counts every state (zeros included), per queue or overall; queues lists names."""
        assert store.stats() == dict.fromkeys(TaskStatus, 0)
        assert store.queues() == []
        store.create_many([spec(id=f"a{i}", queue="a") for i in range(4)], now=T0)
        store.create(spec(id="b0", queue="b"), now=T0)
        got = store.lease("a", W1, limit=3, now=T0)
        store.complete(got[0].id, W1, None, now=T0)
        store.fail(got[1].id, W1, RuntimeError(), permanent=True, now=T0)
        store.cancel("b0", now=T0)
        assert store.stats("a") == {
            TaskStatus.PENDING: 1,
            TaskStatus.DOING: 1,
            TaskStatus.DONE: 1,
            TaskStatus.FAILED: 1,
            TaskStatus.CANCELED: 0,
        }
        assert store.stats()["CANCELED"] == 1 and sum(store.stats().values()) == 5  # type: ignore[index]
        assert store.queues() == ["a", "b"]


class TestCounts:
    @staticmethod
    def real_counts(store: Store) -> dict[str, dict[TaskStatus, int]]:
        """Every task listed and counted by hand: what ``counts`` must equal."""
        out: dict[str, dict[TaskStatus, int]] = {}
        for t in store.list(limit=100_000):
            out.setdefault(t.queue, dict.fromkeys(TaskStatus, 0))[t.status] += 1
        return dict(sorted(out.items()))

    def test_counts_start_empty_and_name_every_status(self, store: Store) -> None:
        """counts of an empty store is {}; a queue's entry has every status, zeros included."""
        assert store.counts() == {}
        store.create(spec(id="a", queue="q"), now=T0)
        assert store.counts() == {"q": {**dict.fromkeys(TaskStatus, 0), TaskStatus.PENDING: 1}}

    def test_counts_equal_a_real_count_after_random_transitions(self, store: Store) -> None:
        """After random creates, leases, completions, failures, reclaims, releases, cancels,
        requeues and purges, counts (and stats, queues) equal a count of the listed tasks."""
        import random

        rnd = random.Random(11)
        queues = ["a", "b", "c"]
        now = T0
        held: list[tuple[str, str]] = []  # (task id, worker)
        made = 0
        for step in range(160):
            now += rnd.choice([0.0, 0.5, 3.0])
            op = rnd.random()
            if op < 0.25:
                n = rnd.choice([1, 1, 3])
                q = rnd.choice(queues)
                specs = [spec(id=f"t{made + i}", queue=q, max_retries=1) for i in range(n)]
                made += n
                store.create_many(specs, now=now)
            elif op < 0.45:
                worker = rnd.choice([W1, W2])
                got = store.lease(rnd.sample(queues, 2), worker, limit=2, lease_seconds=2, now=now)
                held += [(t.id, worker) for t in got]
            elif op < 0.75 and held:
                tid, worker = held.pop(rnd.randrange(len(held)))
                how = rnd.random()
                if how < 0.4:
                    store.complete(tid, worker, None, now=now)
                elif how < 0.75:
                    store.fail(tid, worker, RuntimeError("x"), permanent=how > 0.65, now=now)
                else:
                    store.release(tid, worker, now=now)
            elif op < 0.85 and made:
                store.cancel(f"t{rnd.randrange(made)}", now=now)
            elif op < 0.95 and made:
                store.requeue(f"t{rnd.randrange(made)}", now=now)
            else:
                store.purge(5.0, now=now)
            if step % 20 == 19:
                real = self.real_counts(store)
                assert store.counts() == real, step
                assert store.queues() == list(real)
                total = dict.fromkeys(TaskStatus, 0)
                for per in real.values():
                    for status, n in per.items():
                        total[status] += n
                assert store.stats() == total
                assert all(store.stats(q) == per for q, per in real.items())
        assert sum(sum(per.values()) for per in store.counts().values()) > 0


class TestRequeue:
    def test_failed_task_runs_again(self, store: Store) -> None:
        """requeue brings a dead task back PENDING with attempts reset and history kept."""
        store.create(spec(id="a", max_retries=0), now=T0)
        lease_one(store)
        store.save_checkpoint("a", {"offset": 7}, worker_id=W1, now=T0)
        store.fail("a", W1, RuntimeError("dead"), now=T0)
        t = store.requeue("a", now=T0 + 10)
        assert t is not None and t.status is TaskStatus.PENDING and t.attempts == 0
        assert t.due_at == T0 + 10 and t.finished_at is None and len(t.history) == 1
        assert t.checkpoint == {"offset": 7}
        again = lease_one(store, now=T0 + 10)
        assert again.attempts == 1

    def test_canceled_task_with_delay(self, store: Store) -> None:
        """A canceled task can be requeued, optionally later."""
        store.create(spec(id="a"), now=T0)
        store.cancel("a", now=T0)
        t = store.requeue("a", delay=5, now=T0)
        assert t is not None and t.due_at == T0 + 5
        assert store.lease("default", W1, now=T0 + 4) == []
        assert lease_one(store, now=T0 + 5).id == "a"

    def test_only_dead_or_canceled(self, store: Store) -> None:
        """requeue of a PENDING, DOING, DONE or unknown task returns None."""
        store.create(spec(id="a"), now=T0)
        assert store.requeue("a", now=T0) is None
        lease_one(store)
        assert store.requeue("a", now=T0) is None
        store.complete("a", W1, None, now=T0)
        assert store.requeue("a", now=T0) is None
        assert store.requeue("missing", now=T0) is None


class TestAttemptWorker:
    def test_every_history_entry_names_the_worker_that_held_the_attempt(self, store: Store) -> None:
        """complete, fail, a reclaimed lease and a cancel while running each record the lease
        holder's id in the attempt's history entry."""
        store.create_many([spec(id=i, max_retries=5) for i in ("a", "b", "c")], now=T0)
        store.lease("default", W1, limit=3, lease_seconds=10, now=T0)
        store.complete("a", W1, None, now=T0 + 1)
        store.fail("b", W1, RuntimeError("x"), delay=0, now=T0 + 1)
        store.cancel("c", now=T0 + 1)
        assert [h.worker for h in store.get("a").history] == [W1]  # type: ignore[union-attr]
        assert [h.worker for h in store.get("b").history] == [W1]  # type: ignore[union-attr]
        assert [h.worker for h in store.get("c").history] == [W1]  # type: ignore[union-attr]
        assert lease_one(store, W2, now=T0 + 2, lease_seconds=5).id == "b"  # then it lapses
        store.lease("default", W1, now=T0 + 20)  # the reclaim
        lost = store.get("b")
        assert lost is not None and lost.history[-1].outcome is Outcome.LOST
        assert [h.worker for h in lost.history] == [W1, W2]


class TestOperatorActions:
    def test_make_due_makes_a_waiting_retry_due_now(self, store: Store) -> None:
        """make_due moves a PENDING task's due time to now (attempts and history kept) and
        lease takes it at once; a task already due, or not PENDING, is left alone."""
        store.create(spec(id="a", backoff=Constant(60.0)), now=T0)
        t = lease_one(store)
        store.fail(t.id, W1, RuntimeError("x"), now=T0 + 1)
        assert store.lease("default", W1, now=T0 + 2) == []  # waits for its backoff
        got = store.make_due("a", now=T0 + 2)
        assert got is not None and got.due_at == T0 + 2 and got.attempts == 1
        assert got.status is TaskStatus.PENDING and len(got.history) == 1
        assert store.make_due("a", now=T0 + 3) is None  # due already
        assert store.next_due_at("default") is not None
        assert store.next_due_at("default") <= T0 + 2  # type: ignore[operator]
        again = lease_one(store, now=T0 + 2)
        assert again.id == "a" and again.attempts == 2
        assert store.make_due("a", now=T0 + 2) is None  # DOING
        assert store.make_due("nope", now=T0) is None

    def test_make_due_of_a_delayed_task(self, store: Store) -> None:
        """A task created with a delay can be made due now; the others keep their order."""
        store.create(spec(id="later", delay=3600), now=T0)
        store.create(spec(id="first"), now=T0)
        assert store.make_due("later", now=T0 + 1) is not None
        got = store.lease("default", W1, limit=5, now=T0 + 1)
        assert sorted(t.id for t in got) == ["first", "later"]

    def test_delete_one_task_in_any_state_but_doing(self, store: Store) -> None:
        """delete removes a PENDING, DONE, FAILED or CANCELED task (get is then None, the
        counts drop); a DOING one or an unknown id answers False and nothing changes."""
        store.create_many([spec(id=i) for i in ("d", "f", "c", "p", "r")], now=T0)
        leased = {t.id: t for t in store.lease("default", W1, limit=3, now=T0)}
        assert sorted(leased) == ["c", "d", "f"]
        store.complete("d", W1, None, now=T0)
        store.fail("f", W1, RuntimeError(), permanent=True, now=T0)
        store.cancel("c", now=T0)
        running = lease_one(store, now=T0)
        assert running.id == "p"
        assert store.delete("p") is False  # DOING
        for tid in ("d", "f", "c", "r"):
            assert store.delete(tid) is True
            assert store.get(tid) is None
            assert store.delete(tid) is False
        assert store.delete("nope") is False
        assert store.counts() == {"default": {**dict.fromkeys(TaskStatus, 0), "DOING": 1}}
        assert [t.id for t in store.list()] == ["p"]
        assert store.lease("default", W2, now=T0 + 1) == []
        store.create(spec(id="r"), now=T0 + 1)  # the id may be used again
        assert store.get("r") is not None


class TestPurge:
    def _finished(self, store: Store) -> None:
        store.create_many([spec(id=i) for i in ("done", "dead", "cancel", "pending")], now=T0)
        for t in store.lease("default", W1, limit=2, now=T0):
            if t.id == "done":
                store.complete("done", W1, None, now=T0 + 10)
            else:
                store.fail("dead", W1, RuntimeError(), permanent=True, now=T0 + 20)
        store.cancel("cancel", now=T0 + 30)

    def test_purge_by_age(self, store: Store) -> None:
        """purge deletes terminal tasks finished at least older_than seconds ago."""
        self._finished(store)
        assert store.purge(100, now=T0 + 105) == 0
        assert store.purge(100, now=T0 + 120) == 2
        assert store.get("done") is None and store.get("dead") is None
        assert store.get("cancel") is not None and store.get("pending") is not None
        assert store.purge(0, now=T0 + 1000) == 1
        assert store.get("pending") is not None

    def test_purge_by_status_and_queue(self, store: Store) -> None:
        """statuses and queue narrow what purge deletes."""
        self._finished(store)
        assert store.purge(0, statuses=["FAILED"], now=T0 + 1000) == 1
        assert store.purge(0, queue="other", now=T0 + 1000) == 0
        assert store.purge(0, queue="default", now=T0 + 1000) == 2

    def test_purge_refuses_live_tasks(self, store: Store) -> None:
        """Asking to purge PENDING or DOING tasks is an error."""
        with pytest.raises(ValueError, match="PENDING"):
            store.purge(0, statuses=["PENDING"], now=T0)
        with pytest.raises(ValueError, match="older_than"):
            store.purge(-1, now=T0)


class TestNextDueAt:
    def test_earliest_due_time(self, store: Store) -> None:
        """next_due_at is the earliest due time of PENDING tasks in the queues, or None."""
        assert store.next_due_at("default") is None
        store.create(spec(id="late", delay=30), now=T0)
        store.create(spec(id="soon", delay=2.5), now=T0)
        store.create(spec(id="other", queue="other", delay=1), now=T0)
        assert store.next_due_at("default") == T0 + 2.5
        assert store.next_due_at(["default", "other"]) == T0 + 1

    def test_includes_lease_expiry(self, store: Store) -> None:
        """A lease that will lapse counts: the worker must wake to reclaim it."""
        store.create(spec(id="a"), now=T0)
        store.create(spec(id="b", delay=100), now=T0)
        lease_one(store, lease_seconds=20)
        assert store.next_due_at("default") == T0 + 20

    def test_capacity(self, store: Store) -> None:
        """Tasks this worker cannot take do not wake it."""
        store.create(spec(id="gpu", resources={"min_gpu_memory_gb": 16}, delay=1), now=T0)
        store.create(spec(id="cpu", delay=5), now=T0)
        assert store.next_due_at("default") == T0 + 1
        assert store.next_due_at("default", capacity={}) == T0 + 5
        assert store.next_due_at("default", capacity={"min_gpu_memory_gb": 24}) == T0 + 1

    def test_finished_and_canceled_do_not_count(self, store: Store) -> None:
        """Only PENDING and DOING tasks matter."""
        store.create(spec(id="a", delay=3), now=T0)
        store.cancel("a", now=T0)
        assert store.next_due_at("default") is None


class TestStateMachine:
    def test_full_life_of_a_flaky_task(self, store: Store, clock: FakeEpoch) -> None:
        """PENDING -> DOING -> PENDING -> DOING -> DONE with the store's own clock."""
        store.create(spec(id="a", backoff=Constant(3)))
        assert store.lease("default", W1)[0].attempts == 1
        store.fail("a", W1, RuntimeError("flaky"))
        assert store.lease("default", W1) == []
        clock.advance(3)
        assert store.next_due_at("default") == clock.now
        assert store.lease("default", W1)[0].attempts == 2
        t = store.complete("a", W1, "ok")
        assert t is not None and t.status is TaskStatus.DONE and t.finished_at == clock.now
        assert [h.outcome for h in t.history] == [Outcome.ERROR, Outcome.OK]


def in_status(store: Store, status: TaskStatus, task_id: str) -> None:
    """Bring a new task ``task_id`` to ``status`` through the contract."""
    store.create(spec(id=task_id, max_retries=0), now=T0)
    if status is TaskStatus.PENDING:
        return
    if status is TaskStatus.CANCELED:
        assert store.cancel(task_id, now=T0)
        return
    got = store.lease("default", W1, now=T0)
    assert [t.id for t in got] == [task_id]
    if status is TaskStatus.DONE:
        assert store.complete(task_id, W1, now=T0) is not None
    elif status is TaskStatus.FAILED:
        assert store.fail(task_id, W1, RuntimeError("x"), now=T0) is not None


# Policies whose delay is the same each time they are rebuilt (seeded or without jitter).
POLICIES: list[Backoff] = [
    Constant(3.0),
    Linear(1.0, 2.0),
    Exponential(0.5, 3.0, max_delay=100.0, jitter="full", seed=7),
    DecorrelatedJitter(1.0, 50.0, seed=11),
]


class TestAppliesTheStateMachine:
    """Each backend writes exactly what ``resile.queue._transitions`` decides."""

    @pytest.mark.parametrize("status", list(TaskStatus))
    def test_cancel_and_requeue_follow_the_allowed_sets(
        self, store: Store, status: TaskStatus
    ) -> None:
        """cancel succeeds iff can_cancel(status); requeue iff can_requeue(status)."""
        in_status(store, status, "c")
        assert store.get("c").status is status  # type: ignore[union-attr]
        assert store.cancel("c", now=T0 + 1) is tr.can_cancel(status)
        in_status(store, status, "r")
        assert (store.requeue("r", now=T0 + 1) is not None) is tr.can_requeue(status)

    @pytest.mark.parametrize("policy", POLICIES, ids=lambda p: type(p).__name__)
    def test_fail_writes_the_after_failure_decision(self, store: Store, policy: Backoff) -> None:
        """Each failed attempt stores the decision after_failure makes from the stored task."""
        store.create(spec(id="a", max_retries=3, backoff=policy), now=T0)
        now = T0
        for _ in range(5):
            got = store.lease("default", W1, now=now)
            if not got:
                break
            before = got[0]
            error = TaskError("RuntimeError", f"boom {before.attempts}")
            decision = tr.after_failure(
                attempts=before.attempts,
                max_retries=before.max_retries,
                backoff=before.backoff,
                last_delay=before.last_delay,
                error=error,
                base=now + 0.25,
            )
            after = store.fail("a", W1, error, now=now + 0.25)
            assert after is not None
            assert after.status is decision.status
            assert after.last_error == decision.error
            assert after.history[-1] == AttemptRecord(
                before.attempts, before.started_at, decision.base, Outcome.ERROR, error, W1
            )
            if decision.dead:
                assert after.finished_at == now + 0.25
                break
            assert after.due_at == decision.due_at
            assert after.last_delay == decision.delay
            now = decision.due_at
        assert store.get("a").status is TaskStatus.FAILED  # type: ignore[union-attr]

    def test_reclaim_writes_the_lease_expired_decision(self, store: Store) -> None:
        """A reclaimed lease stores what lease_expired decides, counted from the expiry."""
        policy = DecorrelatedJitter(1.0, 50.0, seed=3)
        store.create(spec(id="a", max_retries=2, backoff=policy), now=T0)
        before = lease_one(store, W1, lease_seconds=10)
        decision = tr.lease_expired(
            attempts=before.attempts,
            max_retries=before.max_retries,
            backoff=before.backoff,
            last_delay=before.last_delay,
            lease_expires_at=before.lease_expires_at,
            now=T0 + 30,
        )
        store.lease("default", W2, now=T0 + 10.5, limit=1)  # reclaims; the retry is not due
        after = store.get("a")
        assert after is not None and after.status is decision.status is TaskStatus.PENDING
        assert (after.due_at, after.last_delay, after.last_error) == (
            decision.due_at,
            decision.delay,
            decision.error,
        )
        assert after.history[-1].ended_at == decision.base == T0 + 10

    def test_release_cancel_requeue_write_their_decisions(self, store: Store) -> None:
        """release, cancel (of a running attempt) and requeue store what their functions say."""
        store.create(spec(id="a"), now=T0)
        leased = lease_one(store, W1)
        released = store.release("a", W1, now=T0 + 1)
        back = tr.release(leased.attempts, T0 + 1)
        assert released is not None
        assert (released.status, released.attempts, released.due_at) == (
            back.status,
            back.attempts,
            back.due_at,
        )
        running = lease_one(store, W1, now=T0 + 2)
        assert store.cancel("a", now=T0 + 3)
        done = tr.cancel(
            running.status, attempts=running.attempts, started_at=T0 + 2, now=T0 + 3, worker=W1
        )
        canceled = store.get("a")
        assert done is not None and canceled is not None
        assert (canceled.status, canceled.finished_at) == (done.status, done.finished_at)
        assert canceled.history[-1] == done.entry
        requeued = store.requeue("a", delay=4.0, now=T0 + 5)
        plan = tr.requeue(4.0, T0 + 5)
        assert requeued is not None
        assert (requeued.status, requeued.attempts, requeued.last_delay, requeued.due_at) == (
            plan.status,
            plan.attempts,
            plan.last_delay,
            plan.due_at,
        )


class TestConcurrency:
    def test_threads_never_lease_the_same_task(
        self, store: Store, open_another: Any, backend: str
    ) -> None:
        """8 threads leasing at once (on shared and separate handles) each get distinct tasks."""
        n = 400
        store.create_many([spec(id=f"t{i}") for i in range(n)], now=T0)
        handles = [store] * 4
        if backend in SHARED_BACKENDS:
            handles += [open_another() for _ in range(4)]
        else:
            handles += [store] * 4
        got: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(handles))

        def work(k: int, s: Store) -> None:
            barrier.wait()
            while True:
                tasks = s.lease("default", f"w{k}", limit=3, now=T0)
                if not tasks:
                    return
                for t in tasks:
                    s.complete(t.id, f"w{k}", k, now=T0)
                with lock:
                    got.extend(t.id for t in tasks)

        threads = [threading.Thread(target=work, args=(k, s)) for k, s in enumerate(handles)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert Counter(got) == Counter(f"t{i}" for i in range(n))
        assert store.stats()[TaskStatus.DONE] == n

    @pytest.mark.slow
    def test_processes_never_lease_the_same_task(
        self, store: Store, store_url: str, backend: str, tmp_path: Path
    ) -> None:
        """4 worker processes on one store lease each task exactly once."""
        if backend not in SHARED_BACKENDS:
            pytest.skip(f"{backend} is private to one process")
        n = 600
        store.create_many([spec(id=f"t{i}") for i in range(n)], now=T0)
        script = textwrap.dedent(
            """
            import sys
            from resile.queue.store import open_store
            url, worker, out = sys.argv[1:4]
            s = open_store(url)
            with open(out, "w") as f:
                while True:
                    tasks = s.lease("default", worker, limit=4)
                    if not tasks:
                        break
                    for t in tasks:
                        assert s.complete(t.id, worker, worker) is not None
                        f.write(t.id + "\\n")
            s.close()
            """
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, store_url, f"p{k}", str(tmp_path / f"p{k}.txt")]
            )
            for k in range(4)
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0
        leased = [
            line for k in range(4) for line in (tmp_path / f"p{k}.txt").read_text().splitlines()
        ]
        assert Counter(leased) == Counter(f"t{i}" for i in range(n))
        assert store.stats()[TaskStatus.DONE] == n
        assert all(t.attempts == 1 for t in store.list(limit=n))


class TestAsync:
    """The async producer and reader API: the same steps, awaited (under asyncio and trio)."""

    @pytest.mark.anyio
    async def test_create_get_cancel_stats(self, store: Store) -> None:
        """Each async method does what its sync twin does, on the same store."""
        try:
            t = await store.create_async(spec(id="a", params={"x": 1}))
            assert t.status is TaskStatus.PENDING and t.params == {"x": 1}
            assert await store.get_async("a") == store.get("a") == t
            assert await store.get_async("nope") is None
            many = await store.create_many_async([spec(id="b"), spec(id="c", queue="q")])
            assert [m.id for m in many] == ["b", "c"] and store.get("c") == many[1]
            with pytest.raises(DuplicateTask):
                await store.create_async(spec(id="a"))
            with pytest.raises(DuplicateTask):
                await store.create_many_async([spec(id="d"), spec(id="b")])
            assert store.get("d") is None  # all or nothing
            assert await store.create_async(spec(id="a"), if_exists="return") == t
            assert await store.cancel_async("b") is True
            assert await store.cancel_async("b") is False
            stats = await store.stats_async()
            assert stats == store.stats()
            assert stats[TaskStatus.PENDING] == 2 and stats[TaskStatus.CANCELED] == 1
            assert (await store.stats_async("q"))[TaskStatus.PENDING] == 1
        finally:
            await store.aclose()

    @pytest.mark.anyio
    async def test_listeners_hear_async_creates(self, store: Store) -> None:
        """An in-process worker is woken by an async enqueue as by a sync one."""
        heard: list[str] = []
        store.add_listener(lambda tasks: heard.extend(t.id for t in tasks))
        try:
            await store.create_async(spec(id="a"))
            await store.create_many_async([spec(id="b"), spec(id="c")])
            assert heard == ["a", "b", "c"]
        finally:
            await store.aclose()
