"""resile.instrument: the hook layer the engine and the queue fire events through."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import subprocess
import sys

import pytest

from resile import instrument
from resile.instrument import (
    AttemptOutcome,
    BreakerEvent,
    GiveUpReason,
    Kind,
    RetryEvent,
    TaskEvent,
)

pytestmark = pytest.mark.usefixtures("no_hooks_left")


def _finished(outcome: AttemptOutcome = AttemptOutcome.SUCCEEDED) -> TaskEvent:
    return TaskEvent(
        Kind.ATTEMPT_FINISHED, "emails", "send", "t-1", attempt=1, outcome=outcome, duration=0.2
    )


def _child(conn: multiprocessing.connection.Connection) -> None:
    instrument.install(instrument.Relay(conn.send))
    instrument.emit(_finished(AttemptOutcome.RETRYING))
    instrument.emit(RetryEvent(Kind.RETRY_GAVE_UP, "fetch", 3, reason=GiveUpReason.ATTEMPTS))
    conn.send(None)
    conn.close()


class TestInstall:
    def test_an_installed_hook_receives_events_until_uninstalled(self) -> None:
        """install() routes events to the hook; the function it returns stops them."""
        seen: list[object] = []
        before = instrument.installed()
        stop = instrument.install(seen.append)
        instrument.emit(_finished())
        stop()
        instrument.emit(_finished())
        assert seen == [_finished()]
        assert instrument.hooks == before

    def test_installing_twice_sends_each_event_once(self) -> None:
        """A hook installed twice is one hook."""
        seen: list[object] = []
        before = len(instrument.installed())
        instrument.install(seen.append)
        instrument.install(seen.append)
        instrument.emit(_finished())
        assert len(seen) == 1
        assert len(instrument.installed()) == before + 1

    def test_kinds_narrow_what_a_hook_is_sent(self) -> None:
        """A hook with a kinds attribute gets those kinds only; wants[] shows who listens."""

        class OnlyBreakers:
            kinds = (Kind.BREAKER_TRANSITION,)

            def __init__(self) -> None:
                self.seen: list[object] = []

            def __call__(self, event: object) -> None:
                self.seen.append(event)

        hook = OnlyBreakers()
        instrument.install(hook)
        instrument.emit(_finished())
        flip = BreakerEvent(Kind.BREAKER_TRANSITION, "db", "closed", "open")
        instrument.emit(flip)
        assert hook.seen == [flip]
        assert hook not in instrument.wants[Kind.RETRY_ATTEMPT]
        assert hook in instrument.wants[Kind.BREAKER_TRANSITION]

    def test_a_hook_that_is_not_callable_is_refused(self) -> None:
        """install(non-callable) raises TypeError naming the value."""
        with pytest.raises(TypeError, match="hook must be callable, got 42"):
            instrument.install(42)  # type: ignore[arg-type]

    def test_bad_kinds_are_refused_with_the_value(self) -> None:
        """A kinds attribute with an unknown kind raises ValueError naming it."""

        def hook(event: object) -> None:
            pass

        hook.kinds = ["task.exploded"]  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match=r"kinds=\['task.exploded'\]"):
            instrument.install(hook)
        assert hook not in instrument.installed()

    def test_uninstalling_an_unknown_hook_is_ignored(self) -> None:
        """uninstall() of a hook that was never installed does nothing."""
        instrument.uninstall(print)
        assert print not in instrument.installed()


class TestFailingHooks:
    def test_a_failing_hook_is_logged_once_and_others_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hook's exception never reaches the caller; it is logged once; later hooks run."""
        seen: list[object] = []

        def broken(event: object) -> None:
            raise RuntimeError("boom")

        instrument.install(broken)
        instrument.install(seen.append)
        with caplog.at_level(logging.ERROR, logger="resile"):
            instrument.emit(_finished())
            instrument.emit(_finished())
        assert len(seen) == 2
        failures = [r for r in caplog.records if "instrumentation hook" in r.getMessage()]
        assert len(failures) == 1
        assert failures[0].exc_info is not None

    def test_a_failing_produce_is_skipped(self, caplog: pytest.LogCaptureFixture) -> None:
        """produce() asks the next hook when one raises, and returns the first string."""

        class Broken:
            def __call__(self, event: object) -> None:
                pass

            def produce(self, queue: str, task: str) -> str:
                raise RuntimeError("no tracer")

        class Tracer:
            def __call__(self, event: object) -> None:
                pass

            def produce(self, queue: str, task: str) -> str:
                return f"00-{'1' * 32}-{'2' * 16}-01 {queue}/{task}"

        instrument.install(Broken())
        instrument.install(Tracer())
        with caplog.at_level(logging.ERROR, logger="resile"):
            assert instrument.produce("q", "t") == f"00-{'1' * 32}-{'2' * 16}-01 q/t"
        assert any("failed" in r.getMessage() for r in caplog.records)

    def test_produce_without_a_tracing_hook_is_none(self) -> None:
        """With hooks that have no produce method, there is no trace context."""
        instrument.install(lambda event: None)
        assert instrument.produce("q", "t") is None


class TestRecording:
    def test_recording_collects_the_kinds_asked_for(self) -> None:
        """recording(kind) lists only those events and uninstalls itself."""
        before = instrument.installed()
        with instrument.recording(Kind.RETRY_GAVE_UP) as events:
            instrument.emit(_finished())
            instrument.emit(RetryEvent(Kind.RETRY_GAVE_UP, "f", 2, reason=GiveUpReason.BUDGET))
        assert [e.kind for e in events] == [Kind.RETRY_GAVE_UP]
        assert instrument.hooks == before


class TestAcrossProcesses:
    def test_events_pickle(self) -> None:
        """Every event kind survives pickle (they cross the pipe to a parent worker)."""
        event = _finished(AttemptOutcome.DEAD)
        assert pickle.loads(pickle.dumps(event)) == event

    def test_a_child_process_relays_its_events_to_the_parent(self) -> None:
        """A Relay in a child process delivers its events to the parent's hooks through a pipe."""
        parent, child = multiprocessing.get_context("spawn").Pipe()
        proc = multiprocessing.get_context("spawn").Process(target=_child, args=(child,))
        proc.start()
        with instrument.recording() as events:
            while parent.poll(30):
                event = parent.recv()
                if event is None:
                    break
                instrument.emit(event)
        proc.join(30)
        assert proc.exitcode == 0
        assert [e.kind for e in events] == [Kind.ATTEMPT_FINISHED, Kind.RETRY_GAVE_UP]
        assert events[0] == _finished(AttemptOutcome.RETRYING)


class TestLazy:
    def test_importing_resile_imports_no_exporter(self) -> None:
        """import resile (and the queue) imports neither prometheus_client nor opentelemetry."""
        code = (
            "import sys, resile, resile.queue, resile.instrument\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry')))\n"
            "print(bad)\n"
            "assert resile.instrument.hooks == ()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == "[]"


class TestForTask:
    def test_for_task_reads_the_task_record(self) -> None:
        """for_task() fills queue, task name, id, attempt and traceparent from a task."""

        class Leased:
            queue, handler, id, attempts = "emails", "send", "t-9", 3
            traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

        event = instrument.for_task(Kind.ATTEMPT_STARTED, Leased(), worker_id="w", lateness=0.5)
        assert event == TaskEvent(
            Kind.ATTEMPT_STARTED,
            "emails",
            "send",
            "t-9",
            attempt=3,
            worker_id="w",
            lateness=0.5,
            traceparent=Leased.traceparent,
        )
