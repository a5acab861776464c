"""resile.otel: producer spans, consumer spans linked to them, retry and lease events."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import resile
from _backends import BACKENDS, SHARED_BACKENDS
from resile import instrument, otel
from resile.instrument import AttemptOutcome, GiveUpReason, Kind, RetryEvent, TaskEvent
from resile.queue import TaskSpec
from resile.queue.worker import Worker


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.hook = otel.install(self.provider)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    otel.uninstall()
    t.provider.shutdown()


def _attempt(kind: Kind, attempt: int, traceparent: str | None, **fields: object) -> TaskEvent:
    return TaskEvent(
        kind, "emails", "send", "t-1", attempt=attempt, traceparent=traceparent, **fields
    )  # type: ignore[arg-type]


def _run_attempts(traceparent: str | None) -> None:
    """A first attempt that fails and is retried, then one that succeeds."""
    instrument.emit(_attempt(Kind.ATTEMPT_STARTED, 1, traceparent, worker_id="w-1"))
    instrument.emit(
        _attempt(
            Kind.ATTEMPT_FINISHED,
            1,
            traceparent,
            outcome=AttemptOutcome.RETRYING,
            delay=0.3,
            error_type="ConnectionError",
        )
    )
    instrument.emit(_attempt(Kind.ATTEMPT_STARTED, 2, traceparent, worker_id="w-2"))
    instrument.emit(
        _attempt(Kind.ATTEMPT_FINISHED, 2, traceparent, outcome=AttemptOutcome.SUCCEEDED)
    )


class TestProducer:
    def test_enqueue_makes_a_producer_span_under_the_callers_span(self, traced: Traced) -> None:
        """produce() records a PRODUCER span, child of the current span, and returns its traceparent."""
        tracer = traced.provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            carrier = instrument.produce("emails", "send")
        (producer,) = traced.spans("send emails")
        assert producer.kind is SpanKind.PRODUCER
        assert producer.parent is not None
        assert producer.parent.span_id == request.get_span_context().span_id
        assert producer.attributes is not None
        assert producer.attributes["messaging.destination.name"] == "emails"
        ctx = producer.get_span_context()
        assert carrier is not None
        assert carrier.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")


class TestConsumer:
    def test_every_attempt_is_a_consumer_span_linked_to_the_producer(self, traced: Traced) -> None:
        """Two attempts are two CONSUMER spans, each linked to the producer's span context."""
        carrier = instrument.produce("emails", "send")
        (producer,) = traced.spans("send emails")
        _run_attempts(carrier)
        first, second = traced.spans("process emails")
        for span in (first, second):
            assert span.kind is SpanKind.CONSUMER
            assert [link.context.span_id for link in span.links] == [
                producer.get_span_context().span_id
            ]
            assert span.attributes is not None
            assert span.attributes["messaging.message.id"] == "t-1"
        assert first.attributes is not None and second.attributes is not None
        assert (first.attributes["resile.attempt"], second.attributes["resile.attempt"]) == (1, 2)
        assert first.status.status_code is StatusCode.ERROR
        assert second.status.status_code is StatusCode.UNSET
        (retry,) = first.events
        assert retry.name == "resile.retry_scheduled"
        assert retry.attributes is not None and retry.attributes["resile.delay_seconds"] == 0.3

    def test_a_restarted_worker_still_links_to_the_stored_context(self, traced: Traced) -> None:
        """The link comes from the stored string alone: a new hook (a new process) links the same."""
        carrier = instrument.produce("emails", "send")
        (producer,) = traced.spans("send emails")
        otel.install(traced.provider)  # a fresh hook: nothing of the first one's state
        _run_attempts(carrier)
        links = {link.context.trace_id for s in traced.spans("process emails") for link in s.links}
        assert links == {producer.get_span_context().trace_id}

    def test_a_lost_lease_and_a_timeout_are_events_on_the_attempt(self, traced: Traced) -> None:
        """LEASE_LOST and TASK_TIMED_OUT during an attempt become events on its span."""
        instrument.emit(_attempt(Kind.ATTEMPT_STARTED, 1, None))
        instrument.emit(_attempt(Kind.TASK_TIMED_OUT, 1, None))
        instrument.emit(_attempt(Kind.LEASE_LOST, 1, None))
        instrument.emit(_attempt(Kind.ATTEMPT_FINISHED, 1, None, outcome=AttemptOutcome.DEAD))
        (span,) = traced.spans("process emails")
        assert [e.name for e in span.events] == ["resile.timed_out", "resile.lease_lost"]
        assert span.links == ()

    def test_a_reclaimed_lease_is_a_linked_span_of_its_own(self, traced: Traced) -> None:
        """A lease expired elsewhere (its worker died) is recorded as a short linked span."""
        carrier = instrument.produce("emails", "send")
        instrument.emit(_attempt(Kind.LEASE_EXPIRED, 3, carrier, outcome=AttemptOutcome.EXPIRED))
        (span,) = traced.spans("process emails")
        assert [e.name for e in span.events] == ["resile.lease_expired"]
        assert len(span.links) == 1
        assert span.status.status_code is StatusCode.ERROR

    def test_a_malformed_traceparent_gives_an_unlinked_span(self, traced: Traced) -> None:
        """A stored traceparent that does not parse is ignored: the attempt is still traced."""
        _run_attempts("not-a-traceparent")
        assert [s.links for s in traced.spans("process emails")] == [(), ()]


class TestRetryEvents:
    def test_retry_events_land_on_the_callers_span(self, traced: Traced) -> None:
        """@retry's attempt, scheduled retry and give-up are events on the current span."""
        tracer = traced.provider.get_tracer("app")
        with tracer.start_as_current_span("checkout"):
            instrument.emit(RetryEvent(Kind.RETRY_ATTEMPT, "charge", 1))
            instrument.emit(
                RetryEvent(Kind.RETRY_SCHEDULED, "charge", 1, delay=0.1, error_type="IOError")
            )
            instrument.emit(RetryEvent(Kind.RETRY_GAVE_UP, "charge", 2, reason=GiveUpReason.BUDGET))
        (span,) = traced.spans("checkout")
        assert [e.name for e in span.events] == [
            "resile.retry.attempt",
            "resile.retry.scheduled",
            "resile.retry.gave_up",
        ]
        assert span.events[2].attributes is not None
        assert span.events[2].attributes["resile.reason"] == "budget"

    def test_without_a_current_span_retry_events_are_dropped(self, traced: Traced) -> None:
        """No current span: nothing is recorded and nothing fails."""
        instrument.emit(RetryEvent(Kind.RETRY_SCHEDULED, "charge", 1, delay=0.1))
        assert traced.spans() == []


class TestLazy:
    def test_resile_otel_needs_only_the_api(self) -> None:
        """Importing resile.otel imports opentelemetry's API, not its SDK."""
        code = (
            "import sys, resile.otel\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == "[]"


class TestThroughTheQueue:
    @pytest.mark.parametrize("backend", sorted(SHARED_BACKENDS))
    def test_the_stored_traceparent_links_every_attempt(
        self, traced: Traced, backend: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """enqueue stores the producer's traceparent; a burst worker's attempts link to it."""
        q = resile.connect(BACKENDS[backend](request, tmp_path))
        calls = [0]

        @q.task(name="flaky", backoff=resile.Constant(0.0), max_retries=2)
        def flaky() -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise ConnectionError("first attempt")

        try:
            tracer = traced.provider.get_tracer("app")
            with tracer.start_as_current_span("request"):
                task = q.enqueue("flaky", {})
            stored = q.get(task.id)
            assert stored is not None and stored.traceparent == task.traceparent
            Worker(q, mode="thread", concurrency=1).run(burst=True)
        finally:
            q.close()
        (producer,) = traced.spans("send default")
        assert task.traceparent is not None
        assert task.traceparent.split("-")[2] == f"{producer.get_span_context().span_id:016x}"
        attempts = traced.spans("process default")
        assert len(attempts) == 2
        for span in attempts:
            assert [link.context.span_id for link in span.links] == [
                producer.get_span_context().span_id
            ]

    def test_a_bad_traceparent_is_refused_at_the_boundary(self) -> None:
        """TaskSpec(traceparent=...) must be a W3C traceparent; the error shows the value."""
        with pytest.raises(ValueError, match=r"traceparent must be a W3C traceparent.*'abc'"):
            TaskSpec("h", traceparent="abc")

    def test_no_tracing_hook_stores_no_traceparent(self, tmp_path: Path) -> None:
        """Without an installed tracing hook a task carries no traceparent."""
        with resile.connect(f"sqlite:///{tmp_path / 'q.db'}") as q:
            task = q.enqueue("h", {}, strict=False)
            stored = q.get(task.id)
        assert task.traceparent is None and stored is not None and stored.traceparent is None


HANDLERS = """
import asyncio

from opentelemetry import trace

import resile

queue = resile.connect({url!r})


def here():
    ctx = trace.get_current_span().get_span_context()
    return {{"trace": format(ctx.trace_id, "032x"), "span": format(ctx.span_id, "016x")}}


@queue.task(name="sync_handler", max_retries=0)
def sync_handler():
    return here()


@queue.task(name="async_handler", max_retries=0)
async def async_handler():
    await asyncio.sleep(0)
    return here()
"""


class TestCurrentSpan:
    @pytest.mark.parametrize(
        ("mode", "handler"),
        [
            ("thread", "sync_handler"),
            ("thread", "async_handler"),
            ("async", "async_handler"),
            ("async", "sync_handler"),
            ("process", "sync_handler"),
        ],
    )
    def test_the_attempts_span_is_current_in_its_handler(
        self,
        traced: Traced,
        mode: str,
        handler: str,
        tmp_path: Path,
        handler_module: Callable[[str], ModuleType],
    ) -> None:
        """While a handler runs (sync or async, in every mode) its attempt's consumer span is current."""
        module = handler_module(HANDLERS.format(url=f"sqlite:///{tmp_path / 'q.db'}"))
        try:
            task = module.queue.enqueue(handler, {})
            Worker(module.queue, mode=mode, concurrency=1).run(burst=True)
            done = module.queue.get(task.id)
        finally:
            module.queue.close()
        (span,) = traced.spans("process default")
        ctx = span.get_span_context()
        assert done is not None and done.result == {
            "trace": f"{ctx.trace_id:032x}",
            "span": f"{ctx.span_id:016x}",
        }

    def test_a_span_the_handler_starts_is_a_child_of_the_attempt(self, traced: Traced) -> None:
        """A span started inside a handler has the attempt's consumer span as its parent."""
        q = resile.connect("sqlite:///:memory:")
        tracer = traced.provider.get_tracer("app")

        @q.task(name="calls_out", max_retries=0)
        def calls_out() -> None:
            with tracer.start_as_current_span("GET /api"):
                pass

        try:
            q.enqueue("calls_out", {})
            Worker(q, mode="thread", concurrency=1).run(burst=True)
        finally:
            q.close()
        (attempt,) = traced.spans("process default")
        (call,) = traced.spans("GET /api")
        assert call.parent is not None
        assert call.parent.span_id == attempt.get_span_context().span_id
        assert call.context.trace_id == attempt.get_span_context().trace_id

    def test_without_a_tracing_hook_the_handler_sees_no_span(self, tmp_path: Path) -> None:
        """No hook installed: the handler runs with no current span (nothing is entered)."""
        q = resile.connect(f"sqlite:///{tmp_path / 'q.db'}")

        @q.task(name="look", max_retries=0)
        def look() -> bool:
            from opentelemetry import trace

            return trace.get_current_span().get_span_context().is_valid

        try:
            task = q.enqueue("look", {})
            Worker(q, mode="thread", concurrency=1).run(burst=True)
            done = q.get(task.id)
        finally:
            q.close()
        assert done is not None and done.result is False
