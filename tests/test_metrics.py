"""resile.metrics: the Prometheus series, bounded labels, the store collector, the endpoints."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resile import __version__, instrument, metrics
from resile.instrument import (
    AttemptOutcome,
    BreakerEvent,
    BudgetEvent,
    GiveUpReason,
    Kind,
    PeriodicEvent,
    RetryEvent,
    ScheduleEvent,
    SlotsEvent,
    TaskEvent,
)
from resile.queue import TaskSpec
from resile.queue.store.sqlite import SQLiteStore

# The table: name -> (type, labels).
TABLE: dict[str, tuple[str, set[str]]] = {
    "resile_tasks_enqueued": ("counter", {"queue", "task"}),
    "resile_task_attempts": ("counter", {"queue", "task", "outcome"}),
    "resile_task_duration_seconds": ("histogram", {"queue", "task", "outcome"}),
    "resile_task_start_lateness_seconds": ("histogram", {"queue"}),
    "resile_queue_tasks": ("gauge", {"queue", "status"}),
    "resile_queue_oldest_due_age_seconds": ("gauge", {"queue"}),
    "resile_worker_slots": ("gauge", {"queue"}),
    "resile_worker_slots_busy": ("gauge", {"queue"}),
    "resile_retries": ("counter", {"callable", "error_type"}),
    "resile_retry_giveups": ("counter", {"callable", "reason"}),
    "resile_breaker_state": ("gauge", {"breaker"}),
    "resile_breaker_transitions": ("counter", {"breaker", "to"}),
    "resile_budget_rejections": ("counter", {"budget"}),
    "resile_periodic_runs": ("counter", {"name", "outcome"}),
    "resile_periodic_run_duration_seconds": ("histogram", {"name", "outcome"}),
    "resile_schedule_ticks": ("counter", {"schedule", "outcome"}),
    "resile_schedule_last_fire_timestamp_seconds": ("gauge", {"schedule"}),
    "resile_schedule_next_fire_timestamp_seconds": ("gauge", {"schedule"}),
    "resile_schedule_period_seconds": ("gauge", {"schedule"}),
    "resile_schedule_paused": ("gauge", {"schedule"}),
    "resile_build_info": ("gauge", {"version"}),
}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    yield reg
    metrics.uninstall(reg)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "q.db"), clock=Clock())
    yield s
    s.close()


def _families(registry: CollectorRegistry) -> dict[str, object]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _one_of_each() -> None:
    """Events a small app produces: one of every kind the hook counts."""
    for event in [
        TaskEvent(Kind.TASK_CREATED, "emails", "send", "t-1"),
        TaskEvent(Kind.ATTEMPT_STARTED, "emails", "send", "t-1", attempt=1, lateness=0.003),
        TaskEvent(
            Kind.ATTEMPT_FINISHED,
            "emails",
            "send",
            "t-1",
            attempt=1,
            outcome=AttemptOutcome.RETRYING,
            duration=0.2,
        ),
        TaskEvent(Kind.LEASE_EXPIRED, "emails", "send", "t-1", attempt=2),
        SlotsEvent(Kind.WORKER_SLOTS, "emails", slots=4, busy=1),
        RetryEvent(Kind.RETRY_SCHEDULED, "fetch", 1, delay=0.1, error_type="TimeoutError"),
        RetryEvent(Kind.RETRY_GAVE_UP, "fetch", 5, reason=GiveUpReason.ATTEMPTS),
        BreakerEvent(Kind.BREAKER_TRANSITION, "db", "closed", "open"),
        BudgetEvent(Kind.BUDGET_REJECTED, "api"),
        PeriodicEvent(Kind.PERIODIC_RUN, "cleanup", "succeeded", 0.05),
        ScheduleEvent(Kind.SCHEDULE_TICK, "report", "default", "fired", 1, 60.0, 120.0, 60.0),
    ]:
        instrument.emit(event)


class TestSeries:
    def test_names_types_and_labels_are_the_table(
        self, registry: CollectorRegistry, store: SQLiteStore
    ) -> None:
        """Every metric of the issue's table is exposed with its type and exactly its labels."""
        store.create(TaskSpec("send", queue="emails"))
        metrics.install(registry, store=store)
        _one_of_each()
        families = _families(registry)
        found = {
            name: (
                f.type,  # type: ignore[attr-defined]
                {
                    k
                    for s in f.samples  # type: ignore[attr-defined]
                    for k in s.labels
                    if k != "le"
                },
            )
            for name, f in families.items()
            if name.startswith("resile_") and not name.endswith("_created")
        }
        assert found == TABLE

    def test_attempts_and_durations_are_counted_in_seconds(
        self, registry: CollectorRegistry
    ) -> None:
        """An attempt that took 0.2 s adds 1 to its outcome and 0.2 to the duration's sum."""
        metrics.install(registry)
        _one_of_each()
        labels = {"queue": "emails", "task": "send"}
        assert _value(registry, "resile_task_attempts_total", outcome="retrying", **labels) == 1
        assert _value(registry, "resile_task_attempts_total", outcome="expired", **labels) == 1
        assert _value(
            registry, "resile_task_duration_seconds_sum", outcome="retrying", **labels
        ) == pytest.approx(0.2)
        assert _value(registry, "resile_tasks_enqueued_total", **labels) == 1
        assert _value(registry, "resile_breaker_state", breaker="db") == 2
        assert _value(registry, "resile_retry_giveups_total", callable="fetch", reason="attempts")
        assert _value(registry, "resile_build_info", version=__version__) == 1

    def test_lateness_buckets_run_from_1_ms_to_60_s(self, registry: CollectorRegistry) -> None:
        """The lateness histogram's bounds are 1 ms ... 60 s; 3 ms falls in the 5 ms bucket."""
        metrics.install(registry)
        _one_of_each()
        family = _families(registry)["resile_task_start_lateness_seconds"]
        bounds = [
            float(s.labels["le"])
            for s in family.samples  # type: ignore[attr-defined]
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
        ]
        assert bounds[0] == 0.001
        assert bounds[-1] == 60.0
        name = "resile_task_start_lateness_seconds_bucket"
        assert _value(registry, name, queue="emails", le="0.0025") == 0
        assert _value(registry, name, queue="emails", le="0.005") == 1

    def test_the_retry_hot_path_has_no_listener(self, registry: CollectorRegistry) -> None:
        """The Prometheus hook does not listen to @retry attempts (so their cost stays nil)."""
        hook = metrics.install(registry)
        assert hook in instrument.hooks
        assert hook not in instrument.wants[Kind.RETRY_ATTEMPT]

    def test_installing_twice_is_one_hook(self, registry: CollectorRegistry) -> None:
        """install() on the same registry returns the hook it made, and counts once."""
        first = metrics.install(registry)
        assert metrics.install(registry) is first
        instrument.emit(TaskEvent(Kind.TASK_CREATED, "q", "t", "x"))
        assert _value(registry, "resile_tasks_enqueued_total", queue="q", task="t") == 1


class TestBounded:
    def test_a_label_keeps_50_values_and_counts_the_rest_as_other(
        self, registry: CollectorRegistry
    ) -> None:
        """The 51st distinct task name is counted under 'other', not as a new series."""
        metrics.install(registry)
        for i in range(80):
            instrument.emit(TaskEvent(Kind.TASK_CREATED, "q", f"task{i}", f"id-{i}"))
        samples = [
            s
            for s in _families(registry)["resile_tasks_enqueued"].samples  # type: ignore[attr-defined]
            if s.name == "resile_tasks_enqueued_total"
        ]
        assert len(samples) == 51
        assert _value(registry, "resile_tasks_enqueued_total", queue="q", task="other") == 30

    def test_a_realistic_app_stays_under_a_few_hundred_series(
        self, registry: CollectorRegistry, store: SQLiteStore
    ) -> None:
        """3 queues, 8 handlers, 6 retried callables, 2 breakers, 2 periodic jobs: < 600 series,
        and no ``_created`` series beside them."""
        metrics.install(registry, store=store)
        handlers = {"emails": ["send", "bounce"], "media": ["resize", "thumb", "transcode"]}
        handlers["reports"] = ["daily", "weekly", "export"]
        for queue, tasks in handlers.items():
            store.create(TaskSpec(tasks[0], queue=queue))
            instrument.emit(SlotsEvent(Kind.WORKER_SLOTS, queue, slots=8, busy=2))
            for n, task in enumerate(tasks * 200):
                tid = f"{task}-{n}"  # ids never become labels
                instrument.emit(TaskEvent(Kind.TASK_CREATED, queue, task, tid))
                instrument.emit(
                    TaskEvent(Kind.ATTEMPT_STARTED, queue, task, tid, attempt=1, lateness=n / 1e4)
                )
                outcome = [AttemptOutcome.SUCCEEDED, AttemptOutcome.RETRYING][n % 2]
                if n % 97 == 0:
                    outcome = AttemptOutcome.DEAD
                instrument.emit(
                    TaskEvent(
                        Kind.ATTEMPT_FINISHED,
                        queue,
                        task,
                        tid,
                        attempt=1,
                        outcome=outcome,
                        duration=n / 100,
                    )
                )
        for fn in ["fetch", "charge", "lookup", "upload", "notify", "sync"]:
            for err in ["TimeoutError", "ConnectionError"]:
                instrument.emit(RetryEvent(Kind.RETRY_SCHEDULED, fn, 1, error_type=err))
            instrument.emit(RetryEvent(Kind.RETRY_GAVE_UP, fn, 5, reason=GiveUpReason.ATTEMPTS))
        for breaker in ["db", "payments"]:
            for to in ["open", "half_open", "closed"]:
                instrument.emit(BreakerEvent(Kind.BREAKER_TRANSITION, breaker, "x", to))
        instrument.emit(BudgetEvent(Kind.BUDGET_REJECTED, "api"))
        for job in ["cleanup", "refresh"]:
            for outcome_name in ["succeeded", "failed"]:
                instrument.emit(PeriodicEvent(Kind.PERIODIC_RUN, job, outcome_name, 0.1))
        series = [
            s
            for f in _families(registry).values()
            for s in f.samples  # type: ignore[attr-defined]
            if s.name.startswith("resile_")
        ]
        assert 100 < len(series) < 600, len(series)
        assert not [s for s in series if s.name.endswith("_created")]
        assert not any("-" in v for s in series for v in s.labels.values() if v != "+Inf")


class TestQueueCollector:
    def test_counts_come_from_the_store_and_are_cached(self, store: SQLiteStore) -> None:
        """The collector reports the store's counts and reads them again only after ttl."""
        clock = Clock(0.0)
        collector = metrics.QueueCollector(store, ttl=5.0, clock=clock)
        reg = CollectorRegistry()
        reg.register(collector)
        store.create(TaskSpec("send", queue="emails"))
        store.create(TaskSpec("send", queue="emails"))
        name = "resile_queue_tasks"
        assert reg.get_sample_value(name, {"queue": "emails", "status": "PENDING"}) == 2
        store.create(TaskSpec("send", queue="emails"))
        clock.now = 4.9
        assert reg.get_sample_value(name, {"queue": "emails", "status": "PENDING"}) == 2
        clock.now = 5.0
        assert reg.get_sample_value(name, {"queue": "emails", "status": "PENDING"}) == 3
        assert reg.get_sample_value(name, {"queue": "emails", "status": "DONE"}) == 0

    def test_the_oldest_due_age_is_now_minus_the_due_time(self, store: SQLiteStore) -> None:
        """A task due 90 s ago makes the oldest due age 90 s; a queue with none due reads 0."""
        now = store.now()
        store.create(TaskSpec("send", queue="emails", due_at=now - 90))
        store.create(TaskSpec("send", queue="later", due_at=now + 600))
        reg = CollectorRegistry()
        reg.register(metrics.QueueCollector(store, ttl=0))
        name = "resile_queue_oldest_due_age_seconds"
        assert reg.get_sample_value(name, {"queue": "emails"}) == pytest.approx(90.0)
        assert reg.get_sample_value(name, {"queue": "later"}) == 0.0

    def test_a_bad_ttl_is_refused(self, store: SQLiteStore) -> None:
        """ttl < 0 raises ValueError naming the value."""
        with pytest.raises(ValueError, match="ttl must be seconds >= 0, got -1"):
            metrics.QueueCollector(store, ttl=-1)


class TestEndpoints:
    def test_serve_answers_get_metrics_on_loopback(self, registry: CollectorRegistry) -> None:
        """serve(0) binds 127.0.0.1 on a free port and serves the registry's exposition."""
        metrics.install(registry)
        instrument.emit(TaskEvent(Kind.TASK_CREATED, "q", "t", "x"))
        with metrics.serve(0, registry=registry) as server:
            assert server.host == "127.0.0.1"
            with urllib.request.urlopen(server.url, timeout=10) as reply:
                body = reply.read().decode()
        assert 'resile_tasks_enqueued_total{queue="q",task="t"} 1.0' in body

    def test_serve_refuses_a_bad_port(self) -> None:
        """A port outside 0..65535 raises ValueError naming it."""
        with pytest.raises(ValueError, match=r"port must be an int in 0\.\.65535, got 70000"):
            metrics.serve(70000)

    def test_the_asgi_app_mounts_in_fastapi(self, registry: CollectorRegistry) -> None:
        """asgi_app() mounted at /metrics in FastAPI serves the producer's counts."""
        metrics.install(registry)
        instrument.emit(TaskEvent(Kind.TASK_CREATED, "q", "web", "x"))
        app = FastAPI()
        app.mount("/metrics", metrics.asgi_app(registry))

        async def get() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return await client.get("/metrics/")

        reply = asyncio.run(get())
        assert reply.status_code == 200
        assert 'resile_tasks_enqueued_total{queue="q",task="web"} 1.0' in reply.text


class TestInstallAgain:
    def test_a_second_store_replaces_the_first_collector(
        self, registry: CollectorRegistry, store: SQLiteStore, tmp_path: Path
    ) -> None:
        """install(store=...) twice reports the second store; uninstall drops the collector."""
        other = SQLiteStore(str(tmp_path / "other.db"))
        try:
            store.create(TaskSpec("a", queue="first"))
            other.create(TaskSpec("b", queue="second"))
            metrics.install(registry, store=store, ttl=0)
            metrics.install(registry, store=other, ttl=0)
            name = "resile_queue_tasks"
            assert _value(registry, name, queue="second", status="PENDING") == 1
            assert _value(registry, name, queue="first", status="PENDING") is None
            metrics.uninstall(registry)
            assert _value(registry, name, queue="second", status="PENDING") is None
            assert metrics.PrometheusHook not in {type(h) for h in instrument.installed()}
        finally:
            other.close()


class TestScheduleSeries:
    def test_ticks_and_fire_times(self, registry: CollectorRegistry) -> None:
        """Tick events count by outcome; the gauges hold the newest fired tick, the next one,
        the period and whether the schedule is paused."""
        metrics.install(registry)
        for outcome, count, last in (("fired", 1, 120.0), ("missed", 3, 120.0), ("fired", 1, 60.0)):
            instrument.emit(
                ScheduleEvent(Kind.SCHEDULE_TICK, "report", "q", outcome, count, last, 180.0, 60.0)
            )
        s = {"schedule": "report"}
        assert _value(registry, "resile_schedule_ticks_total", outcome="fired", **s) == 2
        assert _value(registry, "resile_schedule_ticks_total", outcome="missed", **s) == 3
        assert _value(registry, "resile_schedule_last_fire_timestamp_seconds", **s) == 120.0
        assert _value(registry, "resile_schedule_next_fire_timestamp_seconds", **s) == 180.0
        assert _value(registry, "resile_schedule_period_seconds", **s) == 60.0
        assert _value(registry, "resile_schedule_paused", **s) == 0.0
        instrument.emit(ScheduleEvent(Kind.SCHEDULE_TICK, "report", "q", "paused", 0, None, 240.0))
        assert _value(registry, "resile_schedule_paused", **s) == 1.0
