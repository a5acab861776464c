"""Prometheus metrics for the retry engine and the queue (``pip install 'resile[metrics]'``).

``install()`` adds a ``resile.instrument`` hook that keeps these series (all
durations in seconds; ``task`` is the handler's name, never an id):

=========================================  =========  ==================================
metric                                     type       labels
=========================================  =========  ==================================
``resile_tasks_enqueued_total``            counter    queue, task
``resile_task_attempts_total``             counter    queue, task, outcome
``resile_task_duration_seconds``           histogram  queue, task, outcome
``resile_task_start_lateness_seconds``     histogram  queue (start - due, 1 ms ... 60 s)
``resile_queue_tasks``                     gauge      queue, status (from the store)
``resile_queue_oldest_due_age_seconds``    gauge      queue (from the store)
``resile_worker_slots``                    gauge      queue
``resile_worker_slots_busy``               gauge      queue
``resile_retries_total``                   counter    callable, error_type
``resile_retry_giveups_total``             counter    callable, reason
``resile_breaker_state``                   gauge      breaker (0 closed, 1 half-open, 2 open)
``resile_breaker_transitions_total``       counter    breaker, to
``resile_budget_rejections_total``         counter    budget
``resile_periodic_runs_total``             counter    name, outcome
``resile_periodic_run_duration_seconds``   histogram  name, outcome
``resile_schedule_ticks_total``             counter    schedule, outcome (fired, missed, skipped)
``resile_schedule_last_fire_timestamp_seconds``  gauge  schedule (the newest tick fired)
``resile_schedule_next_fire_timestamp_seconds``  gauge  schedule
``resile_schedule_period_seconds``          gauge      schedule (seconds between two ticks)
``resile_schedule_paused``                  gauge      schedule (1 while a worker finds it paused)
``resile_build_info``                      gauge      version
=========================================  =========  ==================================

``outcome`` of an attempt is one of ``succeeded``, ``retrying``, ``dead``,
``canceled``, ``expired``. Every label is bounded: each label of each metric
keeps at most ``max_label_values`` distinct values (default 50); later new
values are counted under ``other``.

The two queue gauges come from ``QueueCollector``, which asks the store for
its counts (``Store.stats``) when Prometheus scrapes, at most once per ``ttl``
seconds (default 5), so a scrape costs the store a few count reads however
many tasks it holds.

Expose the series with ``serve(port)`` (a small HTTP server, ``GET /metrics``,
bound to 127.0.0.1 by default) or mount ``asgi_app()`` in a Starlette or
FastAPI app (``app.mount("/metrics", resile.metrics.asgi_app())``).

Process-mode workers: each child installs ``resile.instrument.Relay`` sending
its events over the pipe it already has to the parent, and the parent hands
them to ``resile.instrument.emit``; the parent's hook counts them, so one
endpoint per worker command serves every child's counts, and nothing is lost
when a child is recycled (the counts live in the parent).

Importing this module imports ``prometheus_client``; importing ``resile``
does not import this module.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from resile import __version__, instrument
from resile.instrument import (
    AttemptOutcome,
    BreakerEvent,
    BudgetEvent,
    Kind,
    PeriodicEvent,
    RetryEvent,
    ScheduleEvent,
    SlotsEvent,
    TaskEvent,
)
from resile.queue import TaskStatus

if TYPE_CHECKING:
    from resile.queue.store.base import Store

__all__ = [
    "BREAKER_STATES",
    "DURATION_BUCKETS",
    "LATENESS_BUCKETS",
    "OTHER",
    "MetricsServer",
    "PrometheusHook",
    "QueueCollector",
    "asgi_app",
    "install",
    "serve",
    "uninstall",
]

_log = logging.getLogger("resile")

OTHER = "other"
# Run times: a few ms to a minute; coarse on purpose (one histogram per queue, task, outcome).
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Start lateness (start - due): 1 ms ... 60 s, finer near the bottom where a healthy queue is.
LATENESS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
_Q = ("queue",)
_QT = ("queue", "task")
_QTO = ("queue", "task", "outcome")
_NO = ("name", "outcome")
# Raw label keys remembered (their capped key); past this many, new ones are capped each time.
_KEYS_MAX = 10_000


class _Labels:
    """Caps the distinct values each label of each metric takes (the rest become ``other``)."""

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, metric: str, label: str, value: str | None) -> str:
        text = "" if value is None else str(value)
        seen = self._seen.get((metric, label))
        if seen is not None and text in seen:
            return text
        with self._lock:
            seen = self._seen.setdefault((metric, label), set())
            if text in seen:
                return text
            if len(seen) >= self.limit:
                return OTHER
            seen.add(text)
            return text


class _Metric:
    """One metric's series: label values -> a number, or for a histogram
    ``[bucket counts..., sum, count]`` (non-cumulative counts, one per bound and +Inf).

    The hook updates them under its one lock: a plain dict update costs a
    fraction of prometheus_client's per-child locks (docs/benchmarks.md,
    "Instrumentation"); the exposition is still prometheus_client's.
    """

    __slots__ = ("buckets", "doc", "keys", "kind", "labels", "name", "series")

    def __init__(
        self,
        name: str,
        kind: str,
        doc: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        self.labels = labels
        self.buckets = buckets
        self.series: dict[tuple[str, ...], Any] = {}
        # Raw label values -> the capped series key (a new value is capped once).
        self.keys: dict[tuple[str | None, ...], tuple[str, ...]] = {}

    def family(self) -> Metric:
        labels = list(self.labels)
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.doc, labels=labels)
            for key, value in list(self.series.items()):
                counter.add_metric(list(key), value)
            return counter
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.doc, labels=labels)
            for key, value in list(self.series.items()):
                gauge.add_metric(list(key), value)
            return gauge
        histogram = HistogramMetricFamily(self.name, self.doc, labels=labels)
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for key, cells in list(self.series.items()):
            counts, total = cells[:-2], cells[-2]
            running, cumulative = 0, []
            for bound, n in zip(bounds, counts, strict=True):
                running += n
                cumulative.append((bound, running))
            histogram.add_metric(list(key), cumulative, total)
        return histogram


class _Families:
    """A collector over the hook's metrics (what the registry scrapes)."""

    def __init__(self, metrics: Sequence[_Metric], lock: threading.Lock) -> None:
        self.metrics = metrics
        self.lock = lock

    def describe(self) -> list[Metric]:
        return [m.family() for m in _empty(self.metrics)]

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            return [m.family() for m in self.metrics]


def _empty(metrics: Sequence[_Metric]) -> list[_Metric]:
    return [_Metric(m.name, m.kind, m.doc, m.labels, m.buckets) for m in metrics]


class PrometheusHook:
    """The hook that turns events into the series above, on one registry.

    Args:
        registry: where the metrics live (default: prometheus_client's global one).
        max_label_values: distinct values kept per label of each metric (>= 1).

    Raises:
        ValueError: ``max_label_values < 1``; a registry that holds resile's
            metrics already (use ``install``, which returns the existing hook).
    """

    kinds = frozenset(
        {
            Kind.TASK_CREATED,
            Kind.ATTEMPT_STARTED,
            Kind.ATTEMPT_FINISHED,
            Kind.LEASE_EXPIRED,
            Kind.WORKER_SLOTS,
            Kind.RETRY_SCHEDULED,
            Kind.RETRY_GAVE_UP,
            Kind.BREAKER_TRANSITION,
            Kind.BUDGET_REJECTED,
            Kind.PERIODIC_RUN,
            Kind.SCHEDULE_TICK,
        }
    )

    def __init__(
        self, registry: CollectorRegistry | None = None, *, max_label_values: int = 50
    ) -> None:
        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int):
            raise TypeError(
                f"PrometheusHook: max_label_values must be an int, got {max_label_values!r}"
            )
        if max_label_values < 1:
            raise ValueError(
                f"PrometheusHook: max_label_values must be >= 1, got {max_label_values!r}"
            )
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        self.label = _Labels(max_label_values)
        self._lock = threading.Lock()
        m = _Metric
        self.enqueued = m("resile_tasks_enqueued", "counter", "Tasks enqueued.", _QT)
        self.attempts = m(
            "resile_task_attempts", "counter", "Attempts of stored tasks, by how they ended.", _QTO
        )
        self.duration = m(
            "resile_task_duration_seconds",
            "histogram",
            "Run time of an attempt of a stored task.",
            _QTO,
            DURATION_BUCKETS,
        )
        self.lateness = m(
            "resile_task_start_lateness_seconds",
            "histogram",
            "Start time of an attempt minus its due time.",
            _Q,
            LATENESS_BUCKETS,
        )
        self.slots = m("resile_worker_slots", "gauge", "Attempts a worker may run at once.", _Q)
        self.busy = m("resile_worker_slots_busy", "gauge", "Attempts running now.", _Q)
        self.retries = m(
            "resile_retries",
            "counter",
            "Retries scheduled by @retry, by the error retried.",
            ("callable", "error_type"),
        )
        self.giveups = m(
            "resile_retry_giveups",
            "counter",
            "@retry calls that gave up, by why.",
            ("callable", "reason"),
        )
        self.breaker_state = m(
            "resile_breaker_state",
            "gauge",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("breaker",),
        )
        self.breaker_transitions = m(
            "resile_breaker_transitions",
            "counter",
            "Circuit breaker transitions, by the state entered.",
            ("breaker", "to"),
        )
        self.budget_rejections = m(
            "resile_budget_rejections",
            "counter",
            "Retries refused by a drained retry budget.",
            ("budget",),
        )
        self.periodic_runs = m("resile_periodic_runs", "counter", "Runs of periodic tasks.", _NO)
        self.periodic_duration = m(
            "resile_periodic_run_duration_seconds",
            "histogram",
            "Run time of a periodic task.",
            _NO,
            DURATION_BUCKETS,
        )
        sc = ("schedule",)
        self.schedule_ticks = m(
            "resile_schedule_ticks",
            "counter",
            "Ticks of durable schedules handled, by outcome (fired, missed, skipped).",
            ("schedule", "outcome"),
        )
        self.schedule_last = m(
            "resile_schedule_last_fire_timestamp_seconds",
            "gauge",
            "The newest tick of a schedule that this worker fired (epoch seconds).",
            sc,
        )
        self.schedule_next = m(
            "resile_schedule_next_fire_timestamp_seconds",
            "gauge",
            "The next tick of a schedule (epoch seconds).",
            sc,
        )
        self.schedule_period = m(
            "resile_schedule_period_seconds", "gauge", "Seconds between two ticks.", sc
        )
        self.schedule_paused = m(
            "resile_schedule_paused", "gauge", "1 while the schedule is paused.", sc
        )
        self.build_info = m(
            "resile_build_info", "gauge", "resile's version (always 1).", ("version",)
        )
        self.build_info.series[(__version__,)] = 1.0
        self.metrics = (
            self.enqueued,
            self.attempts,
            self.duration,
            self.lateness,
            self.slots,
            self.busy,
            self.retries,
            self.giveups,
            self.breaker_state,
            self.breaker_transitions,
            self.budget_rejections,
            self.periodic_runs,
            self.periodic_duration,
            self.schedule_ticks,
            self.schedule_last,
            self.schedule_next,
            self.schedule_period,
            self.schedule_paused,
            self.build_info,
        )
        self.collector = _Families(self.metrics, self._lock)
        reg.register(self.collector)
        self.handlers: dict[Kind, Callable[[Any], None]] = {
            Kind.TASK_CREATED: self._created,
            Kind.ATTEMPT_STARTED: self._started,
            Kind.ATTEMPT_FINISHED: self._finished,
            Kind.LEASE_EXPIRED: self._expired,
            Kind.WORKER_SLOTS: self._slots,
            Kind.RETRY_SCHEDULED: self._retry,
            Kind.RETRY_GAVE_UP: self._giveup,
            Kind.BREAKER_TRANSITION: self._breaker,
            Kind.BUDGET_REJECTED: self._budget,
            Kind.PERIODIC_RUN: self._periodic,
            Kind.SCHEDULE_TICK: self._schedule,
        }

    def __call__(self, event: instrument.Event) -> None:
        # ``emit`` calls ``handlers[kind]`` directly; this serves direct calls.
        handle = self.handlers.get(event.kind)
        if handle is not None:
            handle(event)

    def _key(self, metric: _Metric, *values: str | None) -> tuple[str, ...]:
        """The series key of these label values, each capped (worked out once per raw key)."""
        key = metric.keys.get(values)
        if key is None:
            key = tuple(
                self.label(metric.name, label, v)
                for label, v in zip(metric.labels, values, strict=True)
            )
            if len(metric.keys) < _KEYS_MAX:
                metric.keys[values] = key
        return key

    def _add(self, metric: _Metric, key: tuple[str, ...], amount: float = 1.0) -> None:
        series = metric.series
        series[key] = series.get(key, 0.0) + amount

    def _observe(self, metric: _Metric, key: tuple[str, ...], value: float) -> None:
        cells = metric.series.get(key)
        if cells is None:
            cells = metric.series[key] = [0] * (len(metric.buckets) + 1) + [0.0, 0]
        cells[bisect_left(metric.buckets, value)] += 1
        cells[-2] += value
        cells[-1] += 1

    def _created(self, event: TaskEvent) -> None:
        key = self._key(self.enqueued, event.queue, event.task)
        with self._lock:
            self._add(self.enqueued, key)

    def _started(self, event: TaskEvent) -> None:
        if event.lateness is not None:
            key = self._key(self.lateness, event.queue)
            with self._lock:
                self._observe(self.lateness, key, max(0.0, event.lateness))

    def _finished(self, event: TaskEvent) -> None:
        outcome = "" if event.outcome is None else event.outcome.value
        key = self._key(self.attempts, event.queue, event.task, outcome)
        with self._lock:
            self._add(self.attempts, key)
            if event.duration is not None:
                self._observe(self.duration, key, max(0.0, event.duration))

    def _expired(self, event: TaskEvent) -> None:
        key = self._key(self.attempts, event.queue, event.task, AttemptOutcome.EXPIRED.value)
        with self._lock:
            self._add(self.attempts, key)

    def _slots(self, event: SlotsEvent) -> None:
        key = self._key(self.slots, event.queue)
        with self._lock:
            self.slots.series[key] = float(event.slots)
            self.busy.series[key] = float(event.busy)

    def _retry(self, event: RetryEvent) -> None:
        key = self._key(self.retries, event.callable, event.error_type)
        with self._lock:
            self._add(self.retries, key)

    def _giveup(self, event: RetryEvent) -> None:
        reason = None if event.reason is None else event.reason.value
        key = self._key(self.giveups, event.callable, reason)
        with self._lock:
            self._add(self.giveups, key)

    def _breaker(self, event: BreakerEvent) -> None:
        to = event.to_state if event.to_state in BREAKER_STATES else OTHER
        key = self._key(self.breaker_transitions, event.breaker, to)
        with self._lock:
            if to != OTHER:
                self.breaker_state.series[key[:1]] = float(BREAKER_STATES[to])
            self._add(self.breaker_transitions, key)

    def _budget(self, event: BudgetEvent) -> None:
        key = self._key(self.budget_rejections, event.budget)
        with self._lock:
            self._add(self.budget_rejections, key)

    def _periodic(self, event: PeriodicEvent) -> None:
        key = self._key(self.periodic_runs, event.name, event.outcome)
        with self._lock:
            self._add(self.periodic_runs, key)
            self._observe(self.periodic_duration, key, max(0.0, event.duration))

    def _schedule(self, event: ScheduleEvent) -> None:
        (name,) = self._key(self.schedule_next, event.schedule)
        with self._lock:
            self.schedule_paused.series[(name,)] = 1.0 if event.outcome == "paused" else 0.0
            if event.next_fire is not None:
                self.schedule_next.series[(name,)] = event.next_fire
            if event.period is not None:
                self.schedule_period.series[(name,)] = event.period
            if event.outcome == "paused":
                return
            key = self._key(self.schedule_ticks, event.schedule, event.outcome)
            self._add(self.schedule_ticks, key, float(event.count))
            if event.outcome == "fired" and event.last_fire is not None:
                old = self.schedule_last.series.get((name,), 0.0)
                self.schedule_last.series[(name,)] = max(old, event.last_fire)

    def __repr__(self) -> str:
        return f"PrometheusHook(max_label_values={self.label.limit})"


class QueueCollector:
    """``resile_queue_tasks`` and ``resile_queue_oldest_due_age_seconds``, read from a store.

    Args:
        store: the queue's store.
        queues: the queues to report (default: every queue ``store.counts()`` names,
            at most ``max_queues`` of them).
        ttl: seconds a reading is reused before the store is asked again.
        clock: a monotonic clock (for the cache; injectable in tests).

    The oldest due age is ``now - store.oldest_due_at(queue)`` (exact: the
    earliest due time of the queue's PENDING tasks, one indexed lookup per
    queue), and 0 when nothing is due yet. A store error is logged and the
    previous reading is served.
    """

    def __init__(
        self,
        store: Store,
        *,
        queues: Sequence[str] | None = None,
        ttl: float = 5.0,
        max_queues: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 0:
            raise ValueError(f"QueueCollector: ttl must be seconds >= 0, got {ttl!r}")
        self.store = store
        self.queues = None if queues is None else tuple(queues)
        self.ttl = float(ttl)
        self.max_queues = max_queues
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._cached: list[Metric] = []

    def describe(self) -> list[Metric]:
        """The families' names, without asking the store (prometheus_client calls it at register)."""
        return self._families([], [])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                try:
                    self._cached = self._read()
                    self._read_at = now
                except Exception:
                    _log.exception("resile.metrics: reading the queue counts from the store failed")
            return list(self._cached)

    def _read(self) -> list[Metric]:
        kept = self.store.counts()  # one read of the counts the store keeps, not a scan
        names = list(self.queues) if self.queues is not None else list(kept)
        names = names[: self.max_queues]
        counts: list[tuple[str, dict[TaskStatus, int]]] = []
        ages: list[tuple[str, float]] = []
        wall = self.store.now()
        for queue in names:
            stats = kept.get(queue) or dict.fromkeys(TaskStatus, 0)
            counts.append((queue, stats))
            if not stats.get(TaskStatus.PENDING):
                ages.append((queue, 0.0))
                continue
            due = self.store.oldest_due_at(queue)
            ages.append((queue, 0.0 if due is None else max(0.0, wall - due)))
        return self._families(counts, ages)

    @staticmethod
    def _families(
        counts: list[tuple[str, dict[TaskStatus, int]]], ages: list[tuple[str, float]]
    ) -> list[Metric]:
        tasks = GaugeMetricFamily(
            "resile_queue_tasks", "Stored tasks by queue and status.", labels=["queue", "status"]
        )
        for queue, stats in counts:
            for status in TaskStatus:
                tasks.add_metric([queue, status.value], float(stats.get(status, 0)))
        age = GaugeMetricFamily(
            "resile_queue_oldest_due_age_seconds",
            "Seconds since the oldest due PENDING task of the queue came due (0: none due).",
            labels=["queue"],
        )
        for queue, value in ages:
            age.add_metric([queue], value)
        return [tasks, age]

    def __repr__(self) -> str:
        return f"QueueCollector({self.store!r}, queues={self.queues!r}, ttl={self.ttl})"


_installed: dict[int, PrometheusHook] = {}
_collectors: dict[int, QueueCollector] = {}
_installed_lock = threading.Lock()


def install(
    registry: CollectorRegistry | None = None,
    *,
    store: Store | None = None,
    queues: Sequence[str] | None = None,
    ttl: float = 5.0,
    max_label_values: int = 50,
) -> PrometheusHook:
    """Count resile's events on ``registry`` (default: the global one) from now on.

    Args:
        registry: where the series live.
        store: when given, also report its queue depths (``QueueCollector``).
        queues: the queues of ``store`` to report (default: all).
        ttl: seconds the store's counts are reused between scrapes.
        max_label_values: distinct values kept per label (the rest: ``other``).

    Returns:
        the hook; installing again on the same registry returns the same hook
        (a store given then replaces the previous one's collector).
    """
    reg = REGISTRY if registry is None else registry
    with _installed_lock:
        hook = _installed.get(id(reg))
        if hook is None:
            hook = PrometheusHook(reg, max_label_values=max_label_values)
            _installed[id(reg)] = hook
        instrument.install(hook)
        if store is not None:
            old = _collectors.pop(id(reg), None)
            if old is not None:
                reg.unregister(old)
            collector = QueueCollector(store, queues=queues, ttl=ttl)
            reg.register(collector)
            _collectors[id(reg)] = collector
    return hook


def uninstall(registry: CollectorRegistry | None = None) -> None:
    """Stop counting on ``registry`` and drop its store collector; the counters stay, frozen."""
    reg = REGISTRY if registry is None else registry
    with _installed_lock:
        hook = _installed.get(id(reg))
        collector = _collectors.pop(id(reg), None)
    if hook is not None:
        instrument.uninstall(hook)
    if collector is not None:
        reg.unregister(collector)


def asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving ``registry`` in Prometheus's text format (mount it at ``/metrics``)."""
    return _make_asgi_app(REGISTRY if registry is None else registry)


class MetricsServer:
    """A running ``/metrics`` HTTP server (what ``serve`` returns); ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = int(server.server_port)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r})"


def serve(
    port: int, host: str = "127.0.0.1", *, registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a background thread.

    Args:
        port: the TCP port (0 picks a free one; read it from ``.port``).
        host: the address to bind; loopback by default: expose it on purpose.

    Raises:
        ValueError: a port outside 0..65535.
        OSError: the port is taken.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"metrics.serve: port must be an int in 0..65535, got {port!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"metrics.serve: host must be an address, got {host!r}")
    server, thread = _start_http_server(
        port, addr=host, registry=REGISTRY if registry is None else registry
    )
    return MetricsServer(server, thread, host)
