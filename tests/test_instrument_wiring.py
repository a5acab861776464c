"""Each emission point fires its event: the retry loop, breaker, budget, periodic, the worker."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import resile
from resile import instrument, logs, metrics
from resile.instrument import AttemptOutcome, GiveUpReason, Kind
from resile.queue import TaskStatus
from resile.queue.worker import Worker
from resile.testing import no_waits

pytestmark = pytest.mark.usefixtures("no_hooks_left")


def _flaky(failures: int, exc: type[BaseException] = ConnectionError) -> Any:
    left = [failures]

    def fn() -> str:
        if left[0]:
            left[0] -= 1
            raise exc("flaky")
        return "ok"

    return fn


class TestRetryEngine:
    def test_retries_are_scheduled_and_attempted_events(self) -> None:
        """Two failures then a success: two retry.scheduled (with delay), two retry.attempt."""
        fn = resile.retry(stop=resile.after_attempts(5), backoff=resile.Constant(0.0))(_flaky(2))
        with instrument.recording() as events:
            assert fn() == "ok"
        kinds = [(e.kind, e.attempt) for e in events]  # type: ignore[union-attr]
        assert kinds == [
            (Kind.RETRY_SCHEDULED, 1),
            (Kind.RETRY_ATTEMPT, 2),
            (Kind.RETRY_SCHEDULED, 2),
            (Kind.RETRY_ATTEMPT, 3),
        ]
        assert events[0].error_type == "ConnectionError"  # type: ignore[union-attr]
        assert events[0].delay == 0.0  # type: ignore[union-attr]
        assert events[0].callable.endswith("_flaky.<locals>.fn")  # type: ignore[union-attr]

    def test_a_first_attempt_that_succeeds_emits_nothing(self) -> None:
        """The success path stays a bare try/except: no event, even with a hook listening."""
        fn = resile.retry(_flaky(0))
        with instrument.recording() as events:
            fn()
        assert events == []

    @pytest.mark.parametrize(
        ("policy", "raises", "reason"),
        [
            ({"stop": resile.after_attempts(2)}, ConnectionError, GiveUpReason.ATTEMPTS),
            (
                {"stop": resile.after_elapsed(1.0), "backoff": resile.Constant(5.0)},
                ConnectionError,
                GiveUpReason.ELAPSED,
            ),
            ({"permanent_on": (KeyError,)}, KeyError, GiveUpReason.PERMANENT),
            (
                {"budget": resile.RetryBudget(max_tokens=1, name="api")},
                ConnectionError,
                GiveUpReason.BUDGET,
            ),
        ],
    )
    def test_a_give_up_says_why(
        self, policy: dict[str, Any], raises: type[BaseException], reason: GiveUpReason
    ) -> None:
        """retry.gave_up carries the reason: attempts, elapsed, permanent, budget."""
        policy.setdefault("backoff", resile.Constant(0.0))
        fn = resile.retry(on=(ConnectionError, KeyError), **policy)(_flaky(99, raises))
        with no_waits(), instrument.recording(Kind.RETRY_GAVE_UP) as events, pytest.raises(raises):
            fn()
        assert [e.reason for e in events] == [reason]  # type: ignore[union-attr]

    def test_a_deadline_give_up_says_deadline(self) -> None:
        """A retry that would overrun the current deadline gives up with reason 'deadline'."""
        fn = resile.retry(backoff=resile.Constant(10.0))(_flaky(99))
        with (
            no_waits(),
            instrument.recording(Kind.RETRY_GAVE_UP) as events,
            resile.deadline(1.0),
            pytest.raises(ConnectionError),
        ):
            fn()
        assert [e.reason for e in events] == [GiveUpReason.DEADLINE]  # type: ignore[union-attr]


class TestPatterns:
    def test_a_breaker_transition_is_an_event(self) -> None:
        """A breaker that opens fires breaker.transition closed -> open with its name."""
        breaker = resile.CircuitBreaker(failure_threshold=1, name="db")
        with (
            instrument.recording(Kind.BREAKER_TRANSITION) as events,
            pytest.raises(ConnectionError),
        ):
            breaker(_flaky(1))()
        assert [(e.breaker, e.from_state, e.to_state) for e in events] == [  # type: ignore[union-attr]
            ("db", "closed", "open")
        ]

    def test_a_drained_budget_rejects_with_its_name(self) -> None:
        """RetryBudget.can_retry() refusing fires budget.rejected with the budget's name."""
        budget = resile.RetryBudget(max_tokens=2, name="payments")
        budget.record_failure()
        budget.record_failure()
        with instrument.recording(Kind.BUDGET_REJECTED) as events:
            assert not budget.can_retry()
        assert [e.budget for e in events] == ["payments"]  # type: ignore[union-attr]

    def test_the_budget_name_is_checked(self) -> None:
        """An empty budget name is refused, naming the value."""
        with pytest.raises(ValueError, match="name must be a non-empty string, got ''"):
            resile.RetryBudget(name="")

    def test_a_periodic_run_is_an_event(self) -> None:
        """Each run of a Periodic fires periodic.run with its outcome and duration."""
        boom = _flaky(1, RuntimeError)
        job = resile.Periodic(
            boom, seconds=1.0, max_repetitions=2, name="cleanup", wait_first=False
        )
        with no_waits(), instrument.recording(Kind.PERIODIC_RUN) as events:
            job.run()
        assert [(e.name, e.outcome) for e in events] == [  # type: ignore[union-attr]
            ("cleanup", "failed"),
            ("cleanup", "succeeded"),
        ]
        assert all(e.duration >= 0 for e in events)  # type: ignore[union-attr]


def _queue(path: Path) -> Any:
    q = resile.connect(f"sqlite:///{path}")
    calls: dict[str, int] = {"flaky": 0}

    @q.task(name="flaky", backoff=resile.Constant(0.0), max_retries=3)
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    @q.task(name="doomed", max_retries=0)
    def doomed() -> None:
        raise ValueError("always")

    return q


class TestWorker:
    def test_a_burst_worker_fires_one_event_per_transition(self, tmp_path: Path) -> None:
        """Create, lease, start, finish (retrying, then succeeded), dead: events in order."""
        q = _queue(tmp_path / "q.db")
        try:
            with instrument.recording() as events:
                t = q.enqueue("flaky", {})
                d = q.enqueue("doomed", {})
                Worker(q, mode="thread", concurrency=1).run(burst=True)
            assert q.get(t.id).status is TaskStatus.DONE
            assert q.get(d.id).status is TaskStatus.FAILED
        finally:
            q.close()
        mine = [e for e in events if getattr(e, "task_id", None) == t.id]
        assert [(e.kind, e.attempt, e.outcome) for e in mine] == [  # type: ignore[union-attr]
            (Kind.TASK_CREATED, 0, None),
            (Kind.TASK_LEASED, 1, None),
            (Kind.ATTEMPT_STARTED, 1, None),
            (Kind.ATTEMPT_FINISHED, 1, AttemptOutcome.RETRYING),
            (Kind.TASK_RETRY_SCHEDULED, 1, AttemptOutcome.RETRYING),
            (Kind.TASK_LEASED, 2, None),
            (Kind.ATTEMPT_STARTED, 2, None),
            (Kind.ATTEMPT_FINISHED, 2, AttemptOutcome.SUCCEEDED),
        ]
        finished = [e for e in mine if e.kind is Kind.ATTEMPT_FINISHED]
        assert finished[0].error_type == "ConnectionError"  # type: ignore[union-attr]
        assert all(e.duration is not None and e.duration >= 0 for e in finished)  # type: ignore[union-attr]
        started = [e for e in mine if e.kind is Kind.ATTEMPT_STARTED]
        assert all(e.lateness is not None and e.lateness >= 0 for e in started)  # type: ignore[union-attr]
        dead = [e.kind for e in events if getattr(e, "task_id", None) == d.id]
        assert dead[-2:] == [Kind.ATTEMPT_FINISHED, Kind.TASK_DEAD]
        slots = [e for e in events if e.kind is Kind.WORKER_SLOTS]
        assert slots[0].slots == 1 and slots[-1].slots == 0  # type: ignore[union-attr]

    def test_busy_slots_are_reported_while_an_attempt_runs(self, tmp_path: Path) -> None:
        """While a handler runs, the worker reports one busy slot of two; at the end none."""
        q = resile.connect(f"sqlite:///{tmp_path / 'q.db'}")
        busy_seen = threading.Event()

        @q.task(name="waits", max_retries=0)
        def waits() -> bool:
            return busy_seen.wait(30)  # released by the slots event below

        def on_slots(event: Any) -> None:
            if event.busy == 1:
                busy_seen.set()

        on_slots.kinds = (Kind.WORKER_SLOTS,)  # type: ignore[attr-defined]
        try:
            with instrument.recording(Kind.WORKER_SLOTS) as events:
                instrument.install(on_slots)
                task = q.enqueue("waits", {})
                Worker(q, mode="thread", concurrency=2).run(burst=True)
            done = q.get(task.id)
        finally:
            instrument.uninstall(on_slots)
            q.close()
        assert done is not None and done.result is True
        seen = [(e.slots, e.busy) for e in events]  # type: ignore[union-attr]
        assert seen[0] == (2, 0) and (2, 1) in seen and seen[-1] == (0, 0)

    def test_the_worker_counts_reach_prometheus_and_the_logs(self, tmp_path: Path) -> None:
        """A burst run shows in the registry's counters and as JSON log lines."""
        registry = CollectorRegistry()
        q = _queue(tmp_path / "q.db")
        out = io.StringIO()
        handler = logs.configure("json", stream=out)
        try:
            metrics.install(registry, store=q.store, ttl=0)
            logs.install()
            q.enqueue("flaky", {})
            q.enqueue("doomed", {})
            Worker(q, mode="thread", concurrency=2).run(burst=True)
        finally:
            q.close()
            metrics.uninstall(registry)
            logging.getLogger("resile").removeHandler(handler)
            logging.getLogger("resile").setLevel(logging.NOTSET)
        value = registry.get_sample_value
        name = "resile_task_attempts_total"
        assert value(name, {"queue": "default", "task": "flaky", "outcome": "retrying"}) == 1
        assert value(name, {"queue": "default", "task": "flaky", "outcome": "succeeded"}) == 1
        assert value(name, {"queue": "default", "task": "doomed", "outcome": "dead"}) == 1
        assert value("resile_tasks_enqueued_total", {"queue": "default", "task": "flaky"}) == 1
        assert value("resile_task_start_lateness_seconds_count", {"queue": "default"}) == 3
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        transitions = [line for line in lines if "transition" in line]
        assert {line["transition"] for line in transitions} >= {
            "task.created",
            "task.leased",
            "task.attempt_finished",
        }
        assert all(line["queue"] == "default" for line in transitions)


CHILD_HANDLERS = """
import resile

queue = resile.connect({url!r})
calls = [0]


@resile.retry(backoff=resile.Constant(0.0), stop=resile.after_attempts(3))
def fetch() -> str:
    calls[0] += 1
    if calls[0] == 1:
        raise TimeoutError("the first fetch times out")
    return "ok"


@queue.task(name="uses_retry", max_retries=0)
def uses_retry() -> str:
    return fetch()
"""


class TestProcessMode:
    def test_a_childs_retry_events_reach_the_parents_hooks(
        self, tmp_path: Path, handler_module: Callable[[str], ModuleType]
    ) -> None:
        """In process mode @retry inside a handler (in a child) is counted by the parent's hooks."""
        module = handler_module(CHILD_HANDLERS.format(url=f"sqlite:///{tmp_path / 'q.db'}"))
        try:
            task = module.queue.enqueue("uses_retry", {})
            with instrument.recording(Kind.RETRY_SCHEDULED, Kind.ATTEMPT_FINISHED) as events:
                Worker(module.queue, mode="process", concurrency=1).run(burst=True)
            done = module.queue.get(task.id)
        finally:
            module.queue.close()
        assert done is not None and done.status is TaskStatus.DONE
        assert [e.kind for e in events] == [Kind.RETRY_SCHEDULED, Kind.ATTEMPT_FINISHED]
        assert events[0].error_type == "TimeoutError"  # type: ignore[union-attr]
        assert events[0].callable == "fetch"  # type: ignore[union-attr]
