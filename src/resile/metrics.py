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
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from resile import __version__, instrument
from resile.instrument import (
    BreakerEvent,
    BudgetEvent,
    Kind,
    PeriodicEvent,
    RetryEvent,
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


# Labeled children kept per metric, by the raw label values (the hot path skips ``labels()``).
_CHILDREN_MAX = 10_000


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
        self.enqueued = Counter(
            "resile_tasks_enqueued", "Tasks enqueued.", ["queue", "task"], registry=reg
        )
        self.attempts = Counter(
            "resile_task_attempts",
            "Attempts of stored tasks, by how they ended.",
            ["queue", "task", "outcome"],
            registry=reg,
        )
        self.duration = Histogram(
            "resile_task_duration_seconds",
            "Run time of an attempt of a stored task.",
            ["queue", "task", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.lateness = Histogram(
            "resile_task_start_lateness_seconds",
            "Start time of an attempt minus its due time.",
            ["queue"],
            buckets=LATENESS_BUCKETS,
            registry=reg,
        )
        self.slots = Gauge(
            "resile_worker_slots", "Attempts a worker may run at once.", ["queue"], registry=reg
        )
        self.busy = Gauge(
            "resile_worker_slots_busy", "Attempts running now.", ["queue"], registry=reg
        )
        self.retries = Counter(
            "resile_retries",
            "Retries scheduled by @retry, by the error retried.",
            ["callable", "error_type"],
            registry=reg,
        )
        self.giveups = Counter(
            "resile_retry_giveups",
            "@retry calls that gave up, by why.",
            ["callable", "reason"],
            registry=reg,
        )
        self.breaker_state = Gauge(
            "resile_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=reg,
        )
        self.breaker_transitions = Counter(
            "resile_breaker_transitions",
            "Circuit breaker transitions, by the state entered.",
            ["breaker", "to"],
            registry=reg,
        )
        self.budget_rejections = Counter(
            "resile_budget_rejections",
            "Retries refused by a drained retry budget.",
            ["budget"],
            registry=reg,
        )
        self.periodic_runs = Counter(
            "resile_periodic_runs", "Runs of periodic tasks.", ["name", "outcome"], registry=reg
        )
        self.periodic_duration = Histogram(
            "resile_periodic_run_duration_seconds",
            "Run time of a periodic task.",
            ["name", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.build_info = Gauge(
            "resile_build_info", "resile's version (always 1).", ["version"], registry=reg
        )
        self.build_info.labels(__version__).set(1)
        self._children: dict[tuple[str | None, ...], Any] = {}
        self._dispatch: dict[Kind, Callable[[Any], None]] = {
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
        }

    def __call__(self, event: instrument.Event) -> None:
        handle = self._dispatch.get(event.kind)
        if handle is not None:
            handle(event)

    def _child(self, metric: Any, name: str, labels: tuple[str, ...], *values: str | None) -> Any:
        """``metric.labels(...)`` for these values, each capped, cached by the raw values.

        ``name`` is unique per metric: it keys the cache and the label caps.
        """
        key = (name, *values)
        child = self._children.get(key)
        if child is None:
            capped = [self.label(name, label, v) for label, v in zip(labels, values, strict=True)]
            child = metric.labels(*capped)
            if len(self._children) < _CHILDREN_MAX:
                self._children[key] = child
        return child

    def _created(self, event: TaskEvent) -> None:
        self._child(self.enqueued, "enqueued", _QT, event.queue, event.task).inc()

    def _started(self, event: TaskEvent) -> None:
        if event.lateness is not None:
            child = self._child(self.lateness, "lateness", _Q, event.queue)
            child.observe(max(0.0, event.lateness))

    def _finished(self, event: TaskEvent) -> None:
        outcome = "" if event.outcome is None else event.outcome.value
        values = (event.queue, event.task, outcome)
        self._child(self.attempts, "attempts", _QTO, *values).inc()
        if event.duration is not None:
            child = self._child(self.duration, "duration", _QTO, *values)
            child.observe(max(0.0, event.duration))

    def _expired(self, event: TaskEvent) -> None:
        self._child(self.attempts, "attempts", _QTO, event.queue, event.task, "expired").inc()

    def _slots(self, event: SlotsEvent) -> None:
        self._child(self.slots, "slots", _Q, event.queue).set(event.slots)
        self._child(self.busy, "busy", _Q, event.queue).set(event.busy)

    def _retry(self, event: RetryEvent) -> None:
        labels = ("callable", "error_type")
        self._child(self.retries, "retries", labels, event.callable, event.error_type).inc()

    def _giveup(self, event: RetryEvent) -> None:
        reason = "" if event.reason is None else event.reason.value
        labels = ("callable", "reason")
        self._child(self.giveups, "giveups", labels, event.callable, reason).inc()

    def _breaker(self, event: BreakerEvent) -> None:
        to = event.to_state if event.to_state in BREAKER_STATES else OTHER
        if to != OTHER:
            state = self._child(self.breaker_state, "breaker_state", ("breaker",), event.breaker)
            state.set(BREAKER_STATES[to])
        labels = ("breaker", "to")
        self._child(
            self.breaker_transitions, "breaker_transitions", labels, event.breaker, to
        ).inc()

    def _budget(self, event: BudgetEvent) -> None:
        self._child(self.budget_rejections, "budget", ("budget",), event.budget).inc()

    def _periodic(self, event: PeriodicEvent) -> None:
        values = (event.name, event.outcome)
        self._child(self.periodic_runs, "periodic_runs", _NO, *values).inc()
        child = self._child(self.periodic_duration, "periodic_duration", _NO, *values)
        child.observe(max(0.0, event.duration))

    def __repr__(self) -> str:
        return f"PrometheusHook(max_label_values={self.label.limit})"


class QueueCollector:
    """``resile_queue_tasks`` and ``resile_queue_oldest_due_age_seconds``, read from a store.

    Args:
        store: the queue's store.
        queues: the queues to report (default: every queue ``store.queues()`` names,
            at most ``max_queues`` of them).
        ttl: seconds a reading is reused before the store is asked again.
        clock: a monotonic clock (for the cache; injectable in tests).

    The oldest due age is ``now - store.oldest_due_at(queue)`` where the store
    offers that method; otherwise it is derived from ``store.next_due_at``
    (which may report a due time later than the oldest one, so the age is a
    lower bound), and 0 when nothing is due. A store error is logged and the
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
        names = list(self.queues) if self.queues is not None else self.store.queues()
        names = names[: self.max_queues]
        counts: list[tuple[str, dict[TaskStatus, int]]] = []
        ages: list[tuple[str, float]] = []
        wall = self.store.now()
        oldest = getattr(self.store, "oldest_due_at", None)
        for queue in names:
            stats = self.store.stats(queue)
            counts.append((queue, stats))
            if not stats.get(TaskStatus.PENDING):
                ages.append((queue, 0.0))
                continue
            due = oldest(queue) if callable(oldest) else self.store.next_due_at(queue)
            ages.append((queue, 0.0 if due is None else max(0.0, wall - float(due))))
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
