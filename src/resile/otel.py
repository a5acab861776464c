"""OpenTelemetry traces for the queue and ``@retry`` (``pip install 'resile[otel]'``).

``install()`` adds a ``resile.instrument`` hook that follows the OpenTelemetry
messaging conventions:

* **enqueue**: a ``PRODUCER`` span ``send <queue>`` (a child of the caller's
  current span); its context, as a W3C ``traceparent`` string, is stored with
  the task (``instrument.produce``);
* **each attempt**: a ``CONSUMER`` span ``process <queue>`` *linked* to the
  producer's context, whichever worker, process or machine runs it and
  however many retries or worker restarts come between, and *current* while
  the handler runs (in thread, async and process mode), so the spans and
  logs a handler makes belong to it; a scheduled retry, a
  timeout and a lost lease are span events on it; a lease reclaimed after its
  worker died is a short span of its own, linked the same way;
* **``@retry``**: each attempt, scheduled retry and give-up is an event on the
  caller's current span.

Only ``opentelemetry-api`` is needed; the application chooses the SDK and the
exporter. Importing ``resile`` imports none of this.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from resile import __version__, instrument
from resile.instrument import AttemptOutcome, Kind, RetryEvent, TaskEvent

__all__ = ["MAX_OPEN_SPANS", "OtelHook", "install", "remote_scope", "uninstall"]

# Attempts whose end was never reported (a crashed executor) are forgotten past this many.
MAX_OPEN_SPANS = 10_000
_SYSTEM = "resile"
_propagator = TraceContextTextMapPropagator()


class OtelHook:
    """The hook ``install()`` adds.

    Args:
        tracer_provider: where spans go (default: the global provider).
    """

    kinds = frozenset(
        {
            Kind.ATTEMPT_STARTED,
            Kind.ATTEMPT_FINISHED,
            Kind.TASK_TIMED_OUT,
            Kind.LEASE_LOST,
            Kind.LEASE_EXPIRED,
            Kind.RETRY_ATTEMPT,
            Kind.RETRY_SCHEDULED,
            Kind.RETRY_GAVE_UP,
        }
    )

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("resile", __version__, tracer_provider)
        self._open: OrderedDict[tuple[str, int], Span] = OrderedDict()
        self._lock = threading.Lock()

    # -- producer ---------------------------------------------------------------------------------

    def produce(self, queue: str, task: str) -> str | None:
        """Record a producer span for a task being enqueued; return its ``traceparent``."""
        with self.tracer.start_as_current_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "send",
                "messaging.destination.name": queue,
                "resile.task": task,
            },
        ):
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
        return carrier.get("traceparent")

    # -- the running attempt ----------------------------------------------------------------------

    def scope(self, task_id: str, attempt: int) -> AbstractContextManager[Span] | None:
        """Make the attempt's consumer span current while its handler runs (not ending it)."""
        with self._lock:
            span = self._open.get((task_id, attempt))
        if span is None:
            return None
        return trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def carrier(self, task_id: str, attempt: int) -> str | None:
        """The running attempt's consumer span as a ``traceparent`` (for a process-mode child)."""
        with self._lock:
            span = self._open.get((task_id, attempt))
        if span is None:
            return None
        out: dict[str, str] = {}
        _propagator.inject(out, context=trace.set_span_in_context(span))
        return out.get("traceparent")

    # -- events -----------------------------------------------------------------------------------

    def __call__(self, event: instrument.Event) -> None:
        if isinstance(event, TaskEvent):
            self._task(event)
        elif isinstance(event, RetryEvent):
            self._retry(event)

    def _links(self, traceparent: str | None) -> list[Link]:
        if not traceparent:
            return []
        ctx = _propagator.extract({"traceparent": traceparent})
        producer = trace.get_current_span(ctx).get_span_context()
        return [Link(producer)] if producer.is_valid else []

    def _consumer(self, event: TaskEvent) -> Span:
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": event.queue,
            "messaging.message.id": event.task_id,
            "resile.task": event.task,
            "resile.attempt": event.attempt,
        }
        if event.worker_id:
            attributes["resile.worker_id"] = event.worker_id
        if event.lateness is not None:
            attributes["resile.lateness_seconds"] = event.lateness
        return self.tracer.start_span(
            f"process {event.queue}",
            kind=SpanKind.CONSUMER,
            links=self._links(event.traceparent),
            attributes=attributes,
        )

    def _task(self, event: TaskEvent) -> None:
        key = (event.task_id, event.attempt)
        kind = event.kind
        if kind is Kind.ATTEMPT_STARTED:
            span = self._consumer(event)
            with self._lock:
                self._open[key] = span
                while len(self._open) > MAX_OPEN_SPANS:
                    self._open.popitem(last=False)
            return
        if kind is Kind.LEASE_EXPIRED:
            span = self._consumer(event)
            span.add_event("resile.lease_expired", {"resile.attempt": event.attempt})
            span.set_attribute("resile.outcome", AttemptOutcome.EXPIRED.value)
            span.set_status(Status(StatusCode.ERROR, "lease expired (worker lost)"))
            span.end()
            return
        with self._lock:
            if kind is Kind.ATTEMPT_FINISHED:
                found = self._open.pop(key, None)
            else:
                found = self._open.get(key)
        if found is None:
            return
        span = found
        if kind is Kind.TASK_TIMED_OUT:
            span.add_event("resile.timed_out", {"resile.attempt": event.attempt})
        elif kind is Kind.LEASE_LOST:
            span.add_event("resile.lease_lost", {"resile.attempt": event.attempt})
        elif kind is Kind.ATTEMPT_FINISHED:
            outcome = event.outcome
            if outcome is AttemptOutcome.RETRYING:
                span.add_event(
                    "resile.retry_scheduled",
                    {
                        "resile.delay_seconds": event.delay or 0.0,
                        "resile.next_attempt": event.attempt + 1,
                    },
                )
            if outcome is not None:
                span.set_attribute("resile.outcome", outcome.value)
            if event.error_type:
                span.set_attribute("error.type", event.error_type)
                span.set_status(Status(StatusCode.ERROR, event.error_type))
            span.end()

    def _retry(self, event: RetryEvent) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            "resile.callable": event.callable,
            "resile.attempt": event.attempt,
        }
        if event.delay is not None:
            attributes["resile.delay_seconds"] = event.delay
        if event.error_type:
            attributes["error.type"] = event.error_type
        if event.reason is not None:
            attributes["resile.reason"] = event.reason.value
        name = {
            Kind.RETRY_ATTEMPT: "resile.retry.attempt",
            Kind.RETRY_SCHEDULED: "resile.retry.scheduled",
            Kind.RETRY_GAVE_UP: "resile.retry.gave_up",
        }[event.kind]
        span.add_event(name, attributes)

    def __repr__(self) -> str:
        return f"OtelHook(open_spans={len(self._open)})"


@contextmanager
def remote_scope(traceparent: str) -> Iterator[None]:
    """Make the span that ``traceparent`` names (another process's) current while a block runs.

    A process-mode child runs its handler in it, so the spans the handler
    makes are children of the attempt's consumer span in the worker.
    """
    token = otel_context.attach(_propagator.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)


_installed: OtelHook | None = None


def install(tracer_provider: TracerProvider | None = None) -> OtelHook:
    """Trace enqueues, attempts and ``@retry`` calls from now on (one hook per process).

    Installing again replaces the hook (with the new ``tracer_provider``).
    """
    global _installed
    if _installed is not None:
        instrument.uninstall(_installed)
    _installed = OtelHook(tracer_provider)
    instrument.install(_installed)
    return _installed


def uninstall() -> None:
    """Stop tracing (spans already started are not ended)."""
    global _installed
    if _installed is not None:
        instrument.uninstall(_installed)
        _installed = None
