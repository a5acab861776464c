"""resile.logs: one structured record per task transition, as text or JSON lines."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from resile import instrument, logs
from resile.instrument import AttemptOutcome, Kind, TaskEvent

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logs.configure("json", stream=out)
    hook = logs.install()
    yield out
    instrument.uninstall(hook)
    logging.getLogger("resile").removeHandler(handler)
    logging.getLogger("resile").setLevel(logging.NOTSET)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _retrying(traceparent: str | None = None) -> TaskEvent:
    return TaskEvent(
        Kind.ATTEMPT_FINISHED,
        "emails",
        "send",
        "t-7",
        attempt=2,
        worker_id="w-1",
        outcome=AttemptOutcome.RETRYING,
        delay=0.5,
        error_type="ConnectionError",
        duration=0.01,
        traceparent=traceparent,
    )


class TestRecords:
    def test_a_transition_is_one_json_line_with_every_field(self, stream: io.StringIO) -> None:
        """An attempt that will be retried logs one JSON object with the transition's fields."""
        instrument.emit(_retrying(TRACEPARENT))
        (line,) = _lines(stream)
        assert line["level"] == "INFO"
        assert line["logger"] == "resile"
        assert {k: line[k] for k in logs.FIELDS} == {
            "transition": "task.attempt_finished",
            "task_id": "t-7",
            "queue": "emails",
            "task": "send",
            "attempt": 2,
            "worker_id": "w-1",
            "outcome": "retrying",
            "delay": 0.5,
            "error_type": "ConnectionError",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        }
        assert "next attempt in 0.500 s" in str(line["message"])

    def test_no_trace_id_without_a_trace_context(self, stream: io.StringIO) -> None:
        """trace_id is left out when the task carries no traceparent."""
        instrument.emit(_retrying())
        (line,) = _lines(stream)
        assert "trace_id" not in line
        assert line["worker_id"] == "w-1"

    def test_a_dead_task_logs_a_warning(self, stream: io.StringIO) -> None:
        """An attempt that ends dead is a WARNING record."""
        instrument.emit(
            TaskEvent(
                Kind.ATTEMPT_FINISHED, "q", "t", "t-1", attempt=4, outcome=AttemptOutcome.DEAD
            )
        )
        assert _lines(stream)[0]["level"] == "WARNING"

    def test_events_that_are_not_transitions_are_not_logged(self, stream: io.StringIO) -> None:
        """An attempt starting is not a transition: no record (one record per transition)."""
        instrument.emit(TaskEvent(Kind.ATTEMPT_STARTED, "q", "t", "t-1", attempt=1))
        instrument.emit(TaskEvent(Kind.TASK_CREATED, "q", "t", "t-1"))
        assert [line["transition"] for line in _lines(stream)] == ["task.created"]

    def test_an_exception_is_formatted_into_the_line(self) -> None:
        """JsonFormatter puts a record's traceback under 'exception'."""
        try:
            raise KeyError("k")
        except KeyError:
            record = logging.LogRecord("resile", logging.ERROR, __file__, 1, "x", (), None)
            record.exc_info = sys.exc_info()
        line = json.loads(logs.JsonFormatter().format(record))
        assert "KeyError: 'k'" in line["exception"]


class TestConfigure:
    def test_an_unknown_format_is_refused(self) -> None:
        """configure(format=...) names the bad value."""
        with pytest.raises(ValueError, match="format must be 'text' or 'json', got 'xml'"):
            logs.configure("xml")  # type: ignore[arg-type]

    def test_text_is_one_readable_line(self) -> None:
        """The text format writes the message on one line."""
        out = io.StringIO()
        handler = logs.configure("text", stream=out)
        hook = logs.install()
        try:
            instrument.emit(_retrying())
        finally:
            instrument.uninstall(hook)
            logging.getLogger("resile").removeHandler(handler)
            logging.getLogger("resile").setLevel(logging.NOTSET)
        (line,) = out.getvalue().splitlines()
        assert "INFO resile: task send [t-7] on emails: attempt finished (attempt 2)" in line


class TestStructlog:
    def test_structlog_stdlib_integration_sees_the_fields(self) -> None:
        """structlog's ProcessorFormatter with ExtraAdder renders the record's fields as keys."""
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processor=structlog.processors.JSONRenderer(),
                foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
            )
        )
        logger = logging.getLogger("resile.test_structlog")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        hook = logs.install(logger)
        try:
            instrument.emit(_retrying(TRACEPARENT))
        finally:
            instrument.uninstall(hook)
            logger.removeHandler(handler)
        line = json.loads(out.getvalue())
        assert line["task_id"] == "t-7"
        assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert line["event"].startswith("task send [t-7]")
