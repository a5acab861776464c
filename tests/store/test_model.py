"""A model of the Store contract: random sequences of operations on every backend, checked.

A hypothesis state machine drives one backend's ``Store`` (the ``store``
fixture: every entry of ``tests/_backends.py``) through create (and create of an
existing id), lease, renew, complete, complete_then_lease, fail, release,
cancel, requeue, progress, purge and the clock moving past leases (expiry), and applies each step to a small in-memory model written here from
the contract's words (``store/base.py``), not from ``_transitions``. Every
answer is compared with the model's, and after every step so is every task
(``get``), the counts (``stats``), the next wake-up (``next_due_at``) and the
oldest due time (``oldest_due_at``).

Each example runs on its own fresh queue of the one store of the test, so no
example sees another's tasks. Times are passed as ``now=`` and are multiples
of 0.5 s (exact in every backend's encoding). ``RESILE_MODEL_EXAMPLES`` sets
the examples per backend for a long run (default: a few dozen, seconds each).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resile import Constant
from resile.queue import Outcome, Store, Task, TaskError, TaskSpec, TaskStatus
from resile.queue._names import LEASE_EXPIRED_REASON

from .conftest import T0

P, D = TaskStatus.PENDING, TaskStatus.DOING
DONE, FAILED, CANCELED = TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED
WORKERS = ("w1", "w2")
RETRY_WAIT = 4.0  # every task's policy: Constant(4 s)
LEASE = 10.0  # every lease's length
# Examples per backend: quick by default (in-process SQLite gets more), any number when asked.
_ASKED = os.environ.get("RESILE_MODEL_EXAMPLES")
STEPS = 25


if _ASKED:  # a long run: no per-test timeout
    pytestmark = pytest.mark.timeout(0)


def _examples(backend: str) -> int:
    if _ASKED:
        return int(_ASKED)
    return 40 if backend.startswith("sqlite") else 15


@dataclass
class Model:
    """What the contract says one task holds."""

    id: str
    priority: int
    sequence: int  # creation order within the example
    max_retries: int
    created_at: float
    status: TaskStatus = P
    attempts: int = 0
    due_at: float = 0.0
    owner: str | None = None
    expires_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    last_delay: float | None = None
    last_error: tuple[str, str] | None = None
    result: object = None
    progress: float = 0.0
    history: list[tuple[int, float | None, float, Outcome]] = field(default_factory=list)

    def held_by(self, worker: str) -> bool:
        return self.status is D and self.owner == worker

    def after_failure(
        self, error: tuple[str, str], outcome: Outcome, at: float, now: float, *, dead: bool
    ) -> None:
        """A failed attempt ending at ``at`` (recorded at ``now``): retried or dead."""
        self.history.append((self.attempts, self.started_at, at, outcome))
        self.last_error = error
        self.expires_at = None
        self.updated_at = now
        if dead or self.attempts > self.max_retries:
            self.status, self.finished_at = FAILED, now
        else:
            self.status = P

    def retry_in(self, wait: float, base: float) -> None:
        if self.status is P:
            self.due_at, self.last_delay = base + wait, wait


class StoreModel(RuleBasedStateMachine):
    """One example: a fresh queue of ``store``, a clock, and the model of its tasks."""

    store: Store  # set on a subclass per test

    def __init__(self) -> None:
        super().__init__()
        self.queue = f"m-{uuid.uuid4().hex[:12]}"
        self.now = T0
        self.tasks: dict[str, Model] = {}
        self.gone: set[str] = set()  # purged

    # -- helpers ------------------------------------------------------------------------------

    def check(self, got: Task | None, want: Model | None) -> None:
        """The stored task says what the model says (the fields the contract defines)."""
        if want is None:
            assert got is None
            return
        assert got is not None, f"{want.id}: the store has no task, the model {want}"
        where = f"task {want.id} ({want.status.value} in the model)"
        assert got.status is want.status, f"{where}: status {got.status}"
        assert got.queue == self.queue and got.priority == want.priority, where
        assert got.attempts == want.attempts, f"{where}: attempts {got.attempts}"
        assert got.max_retries == want.max_retries, where
        assert got.created_at == pytest.approx(want.created_at), where
        assert got.updated_at == pytest.approx(want.updated_at), f"{where}: updated_at"
        assert got.last_delay == pytest.approx(want.last_delay), f"{where}: last_delay"
        error = None if got.last_error is None else (got.last_error.type, got.last_error.message)
        assert error == want.last_error, f"{where}: last_error {error}"
        assert got.progress == want.progress, f"{where}: progress {got.progress}"
        history = [(a.attempt, a.started_at, a.ended_at, a.outcome) for a in got.history]
        assert history == want.history, f"{where}: history {history}"
        if want.finished_at is None:
            assert got.finished_at is None, f"{where}: finished_at {got.finished_at}"
        else:
            assert got.finished_at == pytest.approx(want.finished_at), f"{where}: finished_at"
        if want.status is P:
            assert got.due_at == pytest.approx(want.due_at), f"{where}: due_at {got.due_at}"
        if want.status is D:
            assert got.lease_owner == want.owner, f"{where}: lease_owner {got.lease_owner}"
            assert got.lease_expires_at == pytest.approx(want.expires_at), where
            assert got.started_at == pytest.approx(want.started_at), where
        if want.status is CANCELED and want.owner is not None:
            assert got.lease_owner == want.owner, f"{where}: lease_owner kept on cancel"
        if want.status is DONE:
            assert got.result == want.result, f"{where}: result {got.result!r}"

    def ids(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.tasks))

    # -- rules --------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        """An empty queue."""
        assert self.store.stats(self.queue) == dict.fromkeys(TaskStatus, 0)

    @rule(
        priority=st.integers(0, 1),
        max_retries=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.0, 3.0]),
    )
    def create(self, priority: int, max_retries: int, delay: float) -> None:
        """create: a PENDING task due at now + delay, nothing run yet."""
        n = len(self.tasks) + len(self.gone)
        tid = f"{self.queue}-{n}"
        got = self.store.create(
            TaskSpec(
                handler="h",
                id=tid,
                queue=self.queue,
                priority=priority,
                max_retries=max_retries,
                backoff=Constant(RETRY_WAIT),
                delay=delay,
                params={"n": n},
            ),
            now=self.now,
        )
        model = Model(tid, priority, n, max_retries, self.now)
        model.due_at, model.updated_at = self.now + delay, self.now
        self.tasks[tid] = model
        self.check(got, model)
        assert got.params == {"n": model.sequence} and got.handler == "h"

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def create_again(self, data: st.DataObject) -> None:
        """create of an existing id with if_exists="return": the stored task, unchanged."""
        m = self.tasks[data.draw(self.ids())]
        got = self.store.create(
            TaskSpec(handler="other", id=m.id, queue=self.queue, priority=9),
            if_exists="return",
            now=self.now,
        )
        self.check(got, m)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def lease(self, worker: str, limit: int) -> None:
        """lease: reclaim lapsed leases, then the due tasks by (priority, creation), up to limit."""
        due = self.leased_now(worker, limit)
        got = self.store.lease(self.queue, worker, limit=limit, lease_seconds=LEASE, now=self.now)
        assert [t.id for t in got] == [m.id for m in due]
        for task, m in zip(got, due, strict=True):
            self.check(task, m)

    @precondition(lambda self: self.tasks)
    @rule(
        data=st.data(),
        worker=st.sampled_from(WORKERS),
        limit=st.integers(1, 3),
        result=st.integers(0, 9),
    )
    def complete_then_lease(
        self, data: st.DataObject, worker: str, limit: int, result: int
    ) -> None:
        """complete_then_lease: the completion's flag (the holder's only), then a lease."""
        m = self.tasks[data.draw(self.ids())]
        held = m.held_by(worker)
        if held:
            self.completed(m, {"r": result})
        due = self.leased_now(worker, limit)
        flags, got = self.store.complete_then_lease(
            [(m.id, {"r": result})],
            self.queue,
            worker,
            limit=limit,
            lease_seconds=LEASE,
            now=self.now,
        )
        assert flags == [held]
        assert [t.id for t in got] == [d.id for d in due]
        for task, d in zip(got, due, strict=True):
            self.check(task, d)

    def leased_now(self, worker: str, limit: int) -> list[Model]:
        """The model's lease at ``now``: what it reclaims, then the tasks it takes."""
        now = self.now
        for m in self.tasks.values():
            if m.status is D and m.expires_at is not None and m.expires_at < now:
                at = m.expires_at
                m.after_failure(
                    ("LeaseExpired", LEASE_EXPIRED_REASON), Outcome.LOST, at, now, dead=False
                )
                m.retry_in(RETRY_WAIT, at)
        due = sorted(
            (m for m in self.tasks.values() if m.status is P and m.due_at <= now),
            key=lambda m: (m.priority, m.sequence),
        )[:limit]
        for m in due:
            m.status, m.attempts, m.owner = D, m.attempts + 1, worker
            m.expires_at, m.started_at, m.updated_at = now + LEASE, now, now
        return due

    def completed(self, m: Model, result: object) -> None:
        m.history.append((m.attempts, m.started_at, self.now, Outcome.OK))
        m.status, m.result, m.progress = DONE, result, 100.0
        m.expires_at, m.finished_at, m.updated_at = None, self.now, self.now

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def renew(self, data: st.DataObject, worker: str) -> None:
        """renew: True, and a longer lease, while the worker holds the task (even past expiry)."""
        m = self.tasks[data.draw(self.ids())]
        held = m.held_by(worker)
        if held:
            m.expires_at, m.updated_at = self.now + LEASE, self.now
        assert self.store.renew(m.id, worker, lease_seconds=LEASE, now=self.now) is held

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS), result=st.integers(0, 9))
    def complete(self, data: st.DataObject, worker: str, result: int) -> None:
        """complete: DONE with the result for the holder; None and nothing written for others."""
        m = self.tasks[data.draw(self.ids())]
        want = None
        if m.held_by(worker):
            self.completed(m, {"r": result})
            want = m
        got = self.store.complete(m.id, worker, {"r": result}, now=self.now)
        self.check(got, want)

    @precondition(lambda self: self.tasks)
    @rule(
        data=st.data(),
        worker=st.sampled_from(WORKERS),
        permanent=st.booleans(),
        delay=st.sampled_from([None, None, 0.0, 1.5]),
        outcome=st.sampled_from([Outcome.ERROR, Outcome.TIMEOUT]),
    )
    def fail(
        self,
        data: st.DataObject,
        worker: str,
        permanent: bool,
        delay: float | None,
        outcome: Outcome,
    ) -> None:
        """fail: retried after the policy's wait (or the given delay) while retries are left,
        else (or when permanent) dead; None for anyone but the holder."""
        m = self.tasks[data.draw(self.ids())]
        want = None
        if m.held_by(worker):
            m.after_failure(
                ("Boom", f"attempt {m.attempts}"), outcome, self.now, self.now, dead=permanent
            )
            m.retry_in(RETRY_WAIT if delay is None else delay, self.now)
            want = m
        error = TaskError("Boom", f"attempt {m.attempts}")
        got = self.store.fail(
            m.id, worker, error, permanent=permanent, outcome=outcome, delay=delay, now=self.now
        )
        self.check(got, want)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def release(self, data: st.DataObject, worker: str) -> None:
        """release: PENDING due now, the attempt not counted, no history; None for others."""
        m = self.tasks[data.draw(self.ids())]
        want = None
        if m.held_by(worker):
            m.status, m.attempts, m.due_at = P, m.attempts - 1, self.now
            m.expires_at, m.updated_at = None, self.now
            want = m
        self.check(self.store.release(m.id, worker, now=self.now), want)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """cancel: PENDING or DOING -> CANCELED (a running attempt gets a canceled entry)."""
        m = self.tasks[data.draw(self.ids())]
        can = m.status in (P, D)
        if can:
            if m.status is D:
                m.history.append((m.attempts, m.started_at, self.now, Outcome.CANCELED))
            else:
                m.owner = None
            m.status, m.finished_at, m.updated_at = CANCELED, self.now, self.now
            m.expires_at = None
        assert self.store.cancel(m.id, now=self.now) is can

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), delay=st.sampled_from([0.0, 2.0]))
    def requeue(self, data: st.DataObject, delay: float) -> None:
        """requeue: FAILED or CANCELED -> PENDING due now + delay, attempts and last_delay reset."""
        m = self.tasks[data.draw(self.ids())]
        want = None
        if m.status in (FAILED, CANCELED):
            m.status, m.attempts, m.last_delay, m.due_at = P, 0, None, self.now + delay
            m.finished_at, m.owner, m.updated_at = None, None, self.now
            want = m
        self.check(self.store.requeue(m.id, delay=delay, now=self.now), want)

    @precondition(lambda self: self.tasks)
    @rule(
        data=st.data(),
        pct=st.sampled_from([10.0, 55.5]),
        worker=st.sampled_from([None, *WORKERS]),
    )
    def progress(self, data: st.DataObject, pct: float, worker: str | None) -> None:
        """progress: written on a PENDING or DOING task (only by the holder when a worker
        is named); False otherwise."""
        m = self.tasks[data.draw(self.ids())]
        ok = m.status in (P, D) and (worker is None or m.held_by(worker))
        if ok:
            m.progress, m.updated_at = pct, self.now
        assert self.store.progress(m.id, pct, worker_id=worker, now=self.now) is ok

    @rule(older_than=st.sampled_from([0.0, 20.0]))
    def purge(self, older_than: float) -> None:
        """purge: the queue's finished tasks whose finished_at <= now - older_than go."""
        cutoff = self.now - older_than
        doomed = [
            m.id
            for m in self.tasks.values()
            if m.status in (DONE, FAILED, CANCELED)
            and m.finished_at is not None
            and m.finished_at <= cutoff
        ]
        for tid in doomed:
            del self.tasks[tid]
            self.gone.add(tid)
        assert self.store.purge(older_than, queue=self.queue, now=self.now) == len(doomed)

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, 10.0, 10.5, 30.0]))
    def advance(self, seconds: float) -> None:
        """The clock moves (past due times and leases: expiry is seen by the next lease)."""
        self.now += seconds

    # -- after every step -----------------------------------------------------------------------

    @invariant()
    def every_task_as_modelled(self) -> None:
        """Every task reads back as the model holds it; the counts agree."""
        for m in self.tasks.values():
            self.check(self.store.get(m.id), m)
        for tid in self.gone:
            assert self.store.get(tid) is None, f"{tid} was purged"
        counts = dict.fromkeys(TaskStatus, 0)
        for m in self.tasks.values():
            counts[m.status] += 1
        assert self.store.stats(self.queue) == counts

    @invariant()
    def oldest_due_at_is_the_earliest_pending_due_time(self) -> None:
        """oldest_due_at: exactly the earliest due time of the queue's PENDING tasks."""
        times = [m.due_at for m in self.tasks.values() if m.status is P]
        assert self.store.oldest_due_at(self.queue) == (min(times) if times else None)

    @invariant()
    def next_due_at_is_the_next_wake_up(self) -> None:
        """next_due_at: the earliest due time or lease expiry (at most now once one has passed)."""
        times = [m.due_at for m in self.tasks.values() if m.status is P]
        times += [m.expires_at for m in self.tasks.values() if m.status is D and m.expires_at]
        got = self.store.next_due_at(self.queue)
        if not times:
            assert got is None
        elif min(times) <= self.now:
            assert got is not None and got <= self.now
        else:
            assert got == pytest.approx(min(times))


def test_the_store_behaves_as_its_model(store: Store, backend: str) -> None:
    """Random sequences of every transition leave each backend's tasks as the contract's model."""
    machine = type("StoreModelOn", (StoreModel,), {"store": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=_examples(backend),
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
