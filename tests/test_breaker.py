"""Tests of resile.breaker: the circuit breaker's states, rules, forms, and its use with @retry."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from _examples import assert_page_shows, run_example
from resile import (
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    Constant,
    DeadlineExceeded,
    Exponential,
    after_attempts,
    after_elapsed,
    retry,
)
from resile.breaker import (
    BreakerRecord,
    BreakerStorage,
    MemoryBreakerStorage,
    RedisBreakerStorage,
)
from resile.testing import FakeClock


class Boom(Exception):
    """The dependency failed."""


def failing(breaker: CircuitBreaker, calls: list[int] | None = None) -> object:
    """A sync dependency guarded by ``breaker`` that always raises Boom."""

    @breaker
    def dep() -> None:
        if calls is not None:
            calls.append(1)
        raise Boom("down")

    return dep


def fail_times(breaker: CircuitBreaker, n: int) -> None:
    dep = failing(breaker)
    for _ in range(n):
        with pytest.raises(Boom):
            dep()  # type: ignore[operator]


class TestValidation:
    def test_threshold_below_one_is_rejected(self) -> None:
        """A failure_threshold of 0 is refused, naming the field and the value."""
        with pytest.raises(ValueError, match=r"failure_threshold must be an int >= 1, got 0"):
            CircuitBreaker(failure_threshold=0)

    def test_rate_outside_unit_interval_is_rejected(self) -> None:
        """A failure_rate above 1 is refused."""
        with pytest.raises(ValueError, match=r"failure_rate must be in \(0, 1\] or None, got 1.5"):
            CircuitBreaker(failure_rate=1.5)

    def test_no_rule_is_rejected(self) -> None:
        """A breaker with neither rule could never open, so it is refused."""
        with pytest.raises(ValueError, match="both None"):
            CircuitBreaker(failure_threshold=None, failure_rate=None)

    def test_bad_window_type_is_rejected(self) -> None:
        """An unknown window_type is refused."""
        with pytest.raises(ValueError, match=r"window_type must be .* got 'calls'"):
            CircuitBreaker(window_type="calls")  # type: ignore[arg-type]

    def test_count_window_must_be_an_int(self) -> None:
        """A count-based window of 2.5 calls is refused."""
        with pytest.raises(ValueError, match=r"window \(a number of calls\) must be an int"):
            CircuitBreaker(failure_rate=0.5, window=2.5, window_type="count")

    def test_zero_time_window_is_rejected(self) -> None:
        """A time window of 0 seconds is refused."""
        with pytest.raises(ValueError, match="window must be > 0 seconds"):
            CircuitBreaker(window=0)

    def test_recovery_must_be_a_backoff(self) -> None:
        """recovery=30 (not a strategy) is refused with a TypeError."""
        with pytest.raises(TypeError, match=r"recovery must be a resile\.backoff strategy, got 30"):
            CircuitBreaker(recovery=30)  # type: ignore[arg-type]

    def test_exclude_must_be_types_or_predicate(self) -> None:
        """exclude='ValueError' (a string) is refused."""
        with pytest.raises(TypeError, match="exclude must be"):
            CircuitBreaker(exclude="ValueError")  # type: ignore[arg-type]

    def test_listener_must_be_callable(self) -> None:
        """A non-callable listener is refused."""
        with pytest.raises(TypeError, match="listener must be callable"):
            CircuitBreaker(listeners=[42])  # type: ignore[list-item]

    def test_wrapping_a_non_callable_is_rejected(self) -> None:
        """Decorating something that is not callable is refused."""
        with pytest.raises(TypeError, match="expected a function"):
            CircuitBreaker()(42)  # type: ignore[arg-type]


class TestConsecutiveFailures:
    def test_opens_after_threshold(self, clock: FakeClock) -> None:
        """The third consecutive failure opens a breaker with failure_threshold=3."""
        breaker = CircuitBreaker(failure_threshold=3)
        fail_times(breaker, 2)
        assert breaker.state is CircuitState.CLOSED
        assert breaker.failure_count == 2
        fail_times(breaker, 1)
        assert breaker.state is CircuitState.OPEN

    def test_success_resets_the_count(self, clock: FakeClock) -> None:
        """A success between failures resets the consecutive count, so the circuit stays closed."""
        breaker = CircuitBreaker(failure_threshold=3)
        ok = breaker(lambda: "ok")
        for _ in range(3):
            fail_times(breaker, 2)
            assert ok() == "ok"
        assert breaker.state is CircuitState.CLOSED
        assert breaker.failure_count == 0

    def test_open_circuit_does_not_touch_the_dependency(self, clock: FakeClock) -> None:
        """While open, calls raise CircuitOpen and the wrapped function is not called."""
        breaker = CircuitBreaker(failure_threshold=2, recovery=Constant(30), name="db")
        calls: list[int] = []
        dep = failing(breaker, calls)
        for _ in range(2):
            with pytest.raises(Boom):
                dep()  # type: ignore[operator]
        with pytest.raises(CircuitOpen) as info:
            dep()  # type: ignore[operator]
        assert len(calls) == 2
        assert info.value.name == "db"
        assert info.value.retry_after == 30.0

    def test_retry_after_counts_down(self, clock: FakeClock) -> None:
        """CircuitOpen.retry_after is the time left until the next probe."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(30))
        fail_times(breaker, 1)
        clock.advance(12.5)
        with pytest.raises(CircuitOpen) as info:
            breaker.call(lambda: None)
        assert info.value.retry_after == pytest.approx(17.5)
        assert breaker.retry_after == pytest.approx(17.5)


class TestRecovery:
    def test_half_open_after_the_open_period(self, clock: FakeClock) -> None:
        """Once recovery.delay(1) has passed, the circuit reads as half-open."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(10))
        fail_times(breaker, 1)
        clock.advance(9.99)
        assert breaker.state is CircuitState.OPEN
        clock.advance(0.01)
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.retry_after == 0.0

    def test_probe_success_closes(self, clock: FakeClock) -> None:
        """A successful probe closes the circuit and forgets the openings."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(10))
        fail_times(breaker, 1)
        clock.advance(10)
        assert breaker.call(lambda: 7) == 7
        assert breaker.state is CircuitState.CLOSED
        assert breaker.snapshot().opens == 0

    def test_open_period_grows_with_reopenings(self, clock: FakeClock) -> None:
        """Each failed probe re-opens for recovery.delay(k) with k = 1, 2, 3, ..."""
        breaker = CircuitBreaker(
            failure_threshold=1, recovery=Exponential(2, max_delay=5, jitter="none")
        )
        fail_times(breaker, 1)
        periods = []
        for _ in range(4):
            periods.append(breaker.retry_after)
            clock.advance(breaker.retry_after)
            fail_times(breaker, 1)  # the probe fails
        assert periods == [2.0, 4.0, 5.0, 5.0]

    def test_openings_reset_after_closing(self, clock: FakeClock) -> None:
        """After the circuit closes, the next opening uses recovery.delay(1) again."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Exponential(2, jitter="none"))
        fail_times(breaker, 1)
        clock.advance(2)
        fail_times(breaker, 1)
        assert breaker.retry_after == 4.0
        clock.advance(4)
        breaker.call(lambda: None)
        fail_times(breaker, 1)
        assert breaker.retry_after == 2.0

    def test_half_open_admits_only_max_calls(self, clock: FakeClock) -> None:
        """With half_open_max_calls=2, a third concurrent call is refused; two successes close."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(5), half_open_max_calls=2)
        fail_times(breaker, 1)
        clock.advance(5)
        with breaker:
            with breaker:
                with pytest.raises(CircuitOpen) as info:
                    breaker.call(lambda: None)
                assert info.value.retry_after == 5.0
                assert breaker.state is CircuitState.HALF_OPEN
            assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.state is CircuitState.CLOSED

    def test_probe_failure_reopens_at_once(self, clock: FakeClock) -> None:
        """One failed probe re-opens the circuit even when more probes are allowed."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(5), half_open_max_calls=3)
        fail_times(breaker, 1)
        clock.advance(5)
        breaker.call(lambda: None)
        fail_times(breaker, 1)
        assert breaker.state is CircuitState.OPEN

    def test_stale_call_does_not_count(self, clock: FakeClock) -> None:
        """A call admitted while closed that fails after the circuit opened is ignored."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Exponential(2, jitter="none"))
        with pytest.raises(Boom), breaker:
            breaker.trip()
            raise Boom("late")
        assert breaker.snapshot().opens == 1
        assert breaker.retry_after == 2.0

    def test_reset_and_trip(self, clock: FakeClock) -> None:
        """trip() opens the circuit at once and reset() closes it."""
        breaker = CircuitBreaker()
        breaker.trip()
        assert breaker.state is CircuitState.OPEN
        breaker.reset()
        assert breaker.state is CircuitState.CLOSED
        assert breaker.call(lambda: 1) == 1


class TestFailureRate:
    def test_count_window_opens_at_rate(self, clock: FakeClock) -> None:
        """Over the last 4 calls, 2 failures (50 %) open a breaker with failure_rate=0.5."""
        breaker = CircuitBreaker(
            failure_threshold=None,
            failure_rate=0.5,
            window=4,
            window_type="count",
            minimum_calls=4,
        )
        ok = breaker(lambda: None)
        ok()
        ok()
        fail_times(breaker, 1)
        assert breaker.state is CircuitState.CLOSED  # 3 calls < minimum_calls
        fail_times(breaker, 1)
        assert breaker.state is CircuitState.OPEN

    def test_count_window_forgets_old_calls(self, clock: FakeClock) -> None:
        """Failures older than the last ``window`` calls no longer count."""
        breaker = CircuitBreaker(
            failure_threshold=None, failure_rate=0.5, window=4, window_type="count", minimum_calls=4
        )
        ok = breaker(lambda: None)
        fail_times(breaker, 1)
        for _ in range(4):
            ok()
        fail_times(breaker, 1)  # window is now ok, ok, ok, fail: 25 %
        assert breaker.state is CircuitState.CLOSED
        assert breaker.snapshot().window == "0001"

    def test_time_window_slides(self, clock: FakeClock) -> None:
        """Failures that slid out of a 10 s window do not count toward the rate."""
        breaker = CircuitBreaker(
            failure_threshold=None, failure_rate=0.6, window=timedelta(seconds=10), minimum_calls=3
        )
        ok = breaker(lambda: None)
        fail_times(breaker, 2)
        clock.advance(11)
        ok()
        ok()
        fail_times(breaker, 1)  # in the window: 2 ok, 1 failure
        assert breaker.state is CircuitState.CLOSED
        fail_times(breaker, 1)  # 2 ok, 2 failures: 50 % < 60 %
        assert breaker.state is CircuitState.CLOSED
        fail_times(breaker, 1)  # 2 ok, 3 failures: 60 %
        assert breaker.state is CircuitState.OPEN

    @pytest.mark.parametrize("window_type", ["count", "time"])
    def test_rule_is_checked_after_a_success(self, clock: FakeClock, window_type: str) -> None:
        """fail, fail, fail, succeed, succeed with minimum_calls=5, rate 0.5: open at the fifth."""
        breaker = CircuitBreaker(
            failure_threshold=None,
            failure_rate=0.5,
            window=10 if window_type == "count" else 60.0,
            window_type=window_type,  # type: ignore[arg-type]
            minimum_calls=5,
        )
        ok = breaker(lambda: "fine")
        fail_times(breaker, 3)
        assert ok() == "fine"
        assert breaker.state is CircuitState.CLOSED  # 4 calls < minimum_calls
        assert ok() == "fine"  # the call itself succeeds; 3 / 5 >= 0.5 opens after it
        assert breaker.state is CircuitState.OPEN

    def test_either_rule_opens(self, clock: FakeClock) -> None:
        """With both rules, the consecutive threshold opens before the rate applies."""
        breaker = CircuitBreaker(failure_threshold=2, failure_rate=0.9, minimum_calls=100)
        fail_times(breaker, 2)
        assert breaker.state is CircuitState.OPEN


class TestCircuitOpenCause:
    """A refusal is chained to the failure that opened the circuit, where that is known."""

    def test_cause_is_the_last_failure(self, clock: FakeClock) -> None:
        """With in-memory state, CircuitOpen.__cause__ is the last recorded failure."""
        breaker = CircuitBreaker(failure_threshold=2)
        errors = iter([Boom("first"), Boom("second")])

        @breaker
        def dep() -> None:
            raise next(errors)

        for _ in range(2):
            with pytest.raises(Boom):
                dep()
        with pytest.raises(CircuitOpen) as info:
            dep()
        assert isinstance(info.value.__cause__, Boom)
        assert str(info.value.__cause__) == "second"

    def test_no_cause_after_a_close(self, clock: FakeClock) -> None:
        """Once the circuit closed, a later opening chains its own failure, not an old one."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(1))
        fail_times(breaker, 1)
        clock.advance(1)
        assert breaker.call(lambda: "up") == "up"
        assert breaker.state is CircuitState.CLOSED
        with pytest.raises(ValueError):
            breaker.call(_raise, ValueError("new"))
        with pytest.raises(CircuitOpen) as info:
            breaker.call(lambda: None)
        assert isinstance(info.value.__cause__, ValueError)

    def test_manual_trip_has_no_cause(self, clock: FakeClock) -> None:
        """A circuit opened by trip() with no failure recorded chains nothing."""
        breaker = CircuitBreaker(failure_threshold=3)
        breaker.trip()
        with pytest.raises(CircuitOpen) as info:
            breaker.call(lambda: None)
        assert info.value.__cause__ is None


def _raise(exc: BaseException) -> None:
    raise exc


class TestExclude:
    def test_excluded_types_do_not_count(self, clock: FakeClock) -> None:
        """An excluded exception propagates but never opens the circuit."""
        breaker = CircuitBreaker(failure_threshold=1, exclude=KeyError)

        @breaker
        def lookup() -> None:
            raise KeyError("missing")

        for _ in range(3):
            with pytest.raises(KeyError):
                lookup()
        assert breaker.state is CircuitState.CLOSED

    def test_excluded_error_counts_as_success_for_a_probe(self, clock: FakeClock) -> None:
        """A probe that raises an excluded error shows the dependency answered: it closes."""
        breaker = CircuitBreaker(failure_threshold=1, exclude=lambda e: isinstance(e, KeyError))
        fail_times(breaker, 1)
        clock.advance(breaker.retry_after)
        with pytest.raises(KeyError), breaker:
            raise KeyError("missing")
        assert breaker.state is CircuitState.CLOSED

    def test_predicate_error_counts_as_failure(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exclude predicate that raises is logged and the error counts as a failure."""

        def bad(exc: BaseException) -> bool:
            raise RuntimeError("bug")

        breaker = CircuitBreaker(failure_threshold=1, exclude=bad)
        with caplog.at_level(logging.ERROR, logger="resile"):
            fail_times(breaker, 1)
        assert breaker.state is CircuitState.OPEN
        assert "exclude predicate raised" in caplog.text


class TestListeners:
    def test_every_transition_is_reported(self, clock: FakeClock) -> None:
        """Listeners see closed->open->half_open->open->half_open->closed, in order."""
        seen: list[tuple[str, str]] = []
        breaker = CircuitBreaker(
            failure_threshold=1,
            recovery=Constant(1),
            listeners=[lambda old, new: seen.append((old.value, new.value))],
        )
        fail_times(breaker, 1)
        clock.advance(1)
        fail_times(breaker, 1)
        clock.advance(1)
        breaker.call(lambda: None)
        assert seen == [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]

    def test_listener_error_is_logged_and_ignored(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises does not break the call or the other listeners."""
        seen: list[CircuitState] = []

        def broken(old: CircuitState, new: CircuitState) -> None:
            raise RuntimeError("listener bug")

        breaker = CircuitBreaker(failure_threshold=1, listeners=[broken])
        breaker.add_listener(lambda old, new: seen.append(new))
        with caplog.at_level(logging.ERROR, logger="resile"):
            fail_times(breaker, 1)
        assert seen == [CircuitState.OPEN]
        assert "listener" in caplog.text

    def test_remove_listener(self, clock: FakeClock) -> None:
        """A removed listener is no longer called."""
        seen: list[CircuitState] = []

        def listener(old: CircuitState, new: CircuitState) -> None:
            seen.append(new)

        breaker = CircuitBreaker(failure_threshold=1)
        breaker.add_listener(listener)
        breaker.remove_listener(listener)
        fail_times(breaker, 1)
        assert seen == []


class TestForms:
    def test_decorator_keeps_metadata(self) -> None:
        """The decorator keeps the name and docstring and exposes the breaker."""
        breaker = CircuitBreaker()

        @breaker
        def fetch(url: str) -> str:
            """Fetch a URL."""
            return url

        assert fetch.__name__ == "fetch"
        assert fetch.__doc__ == "Fetch a URL."
        assert fetch.breaker is breaker  # type: ignore[attr-defined]
        assert fetch("x") == "x"

    def test_context_manager_counts_failures(self, clock: FakeClock) -> None:
        """``with breaker:`` counts an exception in the block as a failure and re-raises it."""
        breaker = CircuitBreaker(failure_threshold=2)
        for _ in range(2):
            with pytest.raises(Boom), breaker:
                raise Boom("x")
        assert breaker.state is CircuitState.OPEN
        ran = []
        with pytest.raises(CircuitOpen), breaker:
            ran.append(1)
        assert ran == []

    @pytest.mark.anyio
    async def test_async_decorator(self, clock: FakeClock) -> None:
        """An async function is guarded: failures open the circuit, then calls are refused."""
        breaker = CircuitBreaker(failure_threshold=2)
        calls = []

        @breaker
        async def dep() -> None:
            calls.append(1)
            raise Boom("down")

        for _ in range(2):
            with pytest.raises(Boom):
                await dep()
        with pytest.raises(CircuitOpen):
            await dep()
        assert len(calls) == 2

    @pytest.mark.anyio
    async def test_async_context_manager(self, clock: FakeClock) -> None:
        """``async with breaker:`` guards a block; a success closes a half-open circuit."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(3))
        with pytest.raises(Boom):
            async with breaker:
                raise Boom("x")
        clock.advance(3)
        async with breaker:
            pass
        assert breaker.state is CircuitState.CLOSED

    def test_interrupt_gives_the_probe_slot_back(self, clock: FakeClock) -> None:
        """A probe ended by a BaseException (cancellation) counts as nothing; its slot is free again."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(3))
        fail_times(breaker, 1)
        clock.advance(3)
        with pytest.raises(KeyboardInterrupt), breaker:
            raise KeyboardInterrupt
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.call(lambda: "probe") == "probe"
        assert breaker.state is CircuitState.CLOSED


class TestThreads:
    def test_one_probe_among_many_threads(self, clock: FakeClock) -> None:
        """Sixteen threads race a half-open circuit: exactly one probe reaches the dependency."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(1))
        fail_times(breaker, 1)
        clock.advance(1)
        release = threading.Event()
        refused = []
        calls = []
        lock = threading.Lock()

        @breaker
        def probe() -> None:
            calls.append(1)
            assert release.wait(10)

        def worker() -> None:
            try:
                probe()
            except CircuitOpen:
                with lock:
                    refused.append(1)
                    if len(refused) == 15:
                        release.set()

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(calls) == 1
        assert len(refused) == 15
        assert breaker.state is CircuitState.CLOSED

    def test_counts_are_exact_under_contention(self, clock: FakeClock) -> None:
        """Eight threads x 250 calls into a count window lose no outcome."""
        breaker = CircuitBreaker(
            failure_threshold=None, failure_rate=1.0, window=5000, window_type="count"
        )
        ok = breaker(lambda: None)

        def worker() -> None:
            for _ in range(250):
                ok()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert breaker.snapshot().window == "0" * 2000


class TestWithRetry:
    def test_retry_waits_for_the_probe_when_it_fits(self, clock: FakeClock) -> None:
        """@retry outside @breaker waits exactly retry_after, then the probe succeeds."""
        breaker = CircuitBreaker(failure_threshold=2, recovery=Constant(10))
        outcomes = [Boom("a"), Boom("b"), "ok"]
        calls = []

        @retry(backoff=Constant(0), stop=after_attempts(10), timeout=60)
        @breaker
        def dep() -> str:
            calls.append(clock.now)
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert dep() == "ok"
        # two failures open the circuit; the third attempt is refused without a call and the
        # engine waits the probe time, once.
        assert clock.sleeps == [10.0]
        assert calls == [1000.0, 1000.0, 1010.0]

    def test_retry_gives_up_at_once_when_the_probe_is_past_the_deadline(
        self, clock: FakeClock
    ) -> None:
        """When retry_after does not fit the deadline, @retry raises CircuitOpen without waiting."""
        breaker = CircuitBreaker(failure_threshold=2, recovery=Constant(10))
        calls = []

        @retry(backoff=Constant(0), stop=after_attempts(10), timeout=5)
        @breaker
        def dep() -> None:
            calls.append(1)
            raise Boom("down")

        with pytest.raises(CircuitOpen) as info:
            dep()
        assert clock.sleeps == []
        assert len(calls) == 2
        assert info.value.retry_after == 10.0

    def test_wait_is_the_time_left_not_the_whole_period(self, clock: FakeClock) -> None:
        """A call 4 s into a 10 s open period waits exactly the 6 s left (retry_after)."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(10))
        fail_times(breaker, 1)
        clock.advance(4)

        @retry(backoff=Constant(0), stop=after_attempts(3), timeout=60)
        @breaker
        def dep() -> str:
            return "probe ok"

        assert dep() == "probe ok"
        assert clock.sleeps == [6.0]

    def test_retry_gives_up_when_the_probe_is_past_the_stop_condition(
        self, clock: FakeClock
    ) -> None:
        """With after_elapsed(5) and a 10 s open period, @retry gives up without waiting."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(10))
        fail_times(breaker, 1)

        @retry(backoff=Constant(0), stop=after_elapsed(5))
        @breaker
        def dep() -> None:
            raise AssertionError("an open circuit must not call the dependency")

        with pytest.raises(CircuitOpen):
            dep()
        assert clock.sleeps == []

    @pytest.mark.anyio
    async def test_async_retry_waits_for_the_probe(self, clock: FakeClock) -> None:
        """The async engine also waits the probe time: the wait equals retry_after."""
        breaker = CircuitBreaker(failure_threshold=1, recovery=Constant(7))
        outcomes: list[object] = [Boom("a"), "ok"]

        @retry(backoff=Constant(0), stop=after_attempts(5))
        @breaker
        async def dep() -> object:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert await dep() == "ok"
        assert clock.sleeps == [7.0]

    def test_deadline_error_is_a_failure(self, clock: FakeClock) -> None:
        """A DeadlineExceeded raised inside the breaker counts as a failure (a timeout is one)."""
        breaker = CircuitBreaker(failure_threshold=1)
        with pytest.raises(DeadlineExceeded), breaker:
            raise DeadlineExceeded("slow")
        assert breaker.state is CircuitState.OPEN


class TestRecord:
    def test_round_trip(self) -> None:
        """A record survives to_dict/from_dict unchanged."""
        rec = BreakerRecord()
        rec.state = CircuitState.HALF_OPEN
        rec.opens = 3
        rec.window = [[5, 2, 1]]
        again = BreakerRecord.from_dict(rec.to_dict())
        assert again.to_dict() == rec.to_dict()

    def test_bad_record_is_rejected(self) -> None:
        """A record with an unknown state is refused, naming the record."""
        with pytest.raises(ValueError, match="bad record"):
            BreakerRecord.from_dict({"state": "melted"})

    def test_memory_storage_is_the_default(self) -> None:
        """Without storage=, the state lives in a MemoryBreakerStorage."""
        assert isinstance(CircuitBreaker().storage, MemoryBreakerStorage)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_key(redis_client: Any) -> Iterator[str]:
    key = f"resile:test:breaker:{uuid.uuid4().hex}"
    yield key
    redis_client.delete(key)


class TestRedisStorage:
    @pytest.fixture
    def pair(
        self, redis_url: str, redis_key: str, clock: FakeClock
    ) -> Iterator[Callable[..., tuple[CircuitBreaker, CircuitBreaker]]]:
        """Make two breakers with their own connections (two "processes") on one key."""
        import redis

        clients: list[Any] = []

        def make(**options: Any) -> tuple[CircuitBreaker, CircuitBreaker]:
            made = []
            for _ in range(2):
                client = redis.Redis.from_url(redis_url)
                clients.append(client)
                storage = RedisBreakerStorage(client, redis_key, clock=clock.monotonic)
                made.append(CircuitBreaker(storage=storage, **options))
            return made[0], made[1]

        yield make
        for client in clients:
            client.close()

    def test_failures_through_one_open_the_other(
        self, pair: Callable[..., tuple[CircuitBreaker, CircuitBreaker]]
    ) -> None:
        """Three failures through breaker A open breaker B, which then refuses without calling."""
        a, b = pair(failure_threshold=3, recovery=Constant(20))
        seen: list[tuple[CircuitState, CircuitState]] = []
        b.add_listener(lambda old, new: seen.append((old, new)))
        assert b.state is CircuitState.CLOSED
        fail_times(a, 3)
        calls: list[int] = []
        with pytest.raises(CircuitOpen) as info:
            failing(b, calls)()  # type: ignore[operator]
        assert calls == []
        assert info.value.retry_after == 20.0
        assert info.value.__cause__ is None  # shared state: the failure is not known here
        assert seen == [(CircuitState.CLOSED, CircuitState.OPEN)]

    def test_probe_through_one_closes_both(
        self, pair: Callable[..., tuple[CircuitBreaker, CircuitBreaker]], clock: FakeClock
    ) -> None:
        """After the open period, a probe through B closes the circuit for A too."""
        a, b = pair(failure_threshold=1, recovery=Constant(5))
        fail_times(a, 1)
        clock.advance(5)
        assert b.call(lambda: "up") == "up"
        assert a.state is CircuitState.CLOSED
        assert a.call(lambda: 1) == 1

    def test_one_probe_across_processes(
        self, pair: Callable[..., tuple[CircuitBreaker, CircuitBreaker]], clock: FakeClock
    ) -> None:
        """While B's probe runs, A is refused: the half-open slot is shared."""
        a, b = pair(failure_threshold=1, recovery=Constant(5))
        fail_times(a, 1)
        clock.advance(5)
        with b, pytest.raises(CircuitOpen):
            a.call(lambda: None)
        assert a.state is CircuitState.CLOSED

    def test_no_update_is_lost_under_contention(
        self, redis_url: str, redis_key: str, clock: FakeClock
    ) -> None:
        """Four threads, each with its own breaker and connection, record 4 x 50 outcomes exactly."""
        import redis

        clients = [redis.Redis.from_url(redis_url) for _ in range(4)]
        breakers = [
            CircuitBreaker(
                failure_threshold=None,
                failure_rate=1.0,
                window=1000,
                window_type="count",
                storage=RedisBreakerStorage(c, redis_key, clock=clock.monotonic),
            )
            for c in clients
        ]

        def worker(breaker: CircuitBreaker) -> None:
            ok = breaker(lambda: None)
            for _ in range(50):
                ok()

        threads = [threading.Thread(target=worker, args=(br,)) for br in breakers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert breakers[0].snapshot().window == "0" * 200
        for c in clients:
            c.close()

    def test_wall_clock_by_default(self, redis_client: Any, redis_key: str) -> None:
        """Without a clock, open_until is wall-clock time, so every machine reads the same instant."""
        before = time.time()
        breaker = CircuitBreaker(
            failure_threshold=1,
            recovery=Constant(30),
            storage=RedisBreakerStorage(redis_client, redis_key),
        )
        fail_times(breaker, 1)
        rec = breaker.snapshot()
        assert before + 30 <= rec.open_until <= time.time() + 30
        assert 29 < breaker.retry_after <= 30

    def test_record_is_json_in_redis(
        self, redis_client: Any, redis_key: str, clock: FakeClock
    ) -> None:
        """The stored value is the record as JSON, readable by any tool."""
        breaker = CircuitBreaker(
            failure_threshold=1,
            storage=RedisBreakerStorage(redis_client, redis_key, clock=clock.monotonic),
        )
        fail_times(breaker, 1)
        stored = json.loads(redis_client.get(redis_key))
        assert stored["state"] == "open"
        assert stored["opens"] == 1

    def test_bad_key_is_rejected(self) -> None:
        """An empty key is refused, naming the field."""
        with pytest.raises(TypeError, match="key must be a non-empty string"):
            RedisBreakerStorage(object(), "")


class TestExamples:
    def test_breaker_example(self) -> None:
        """docs/examples/breaker.py opens after 3 failures, refuses fast, then recovers via @retry."""
        out = run_example("breaker.py")
        assert "refused without a call: retry after 0.05 s" in out
        assert "service calls so far: 3" in out
        assert "circuit: half_open -> closed" in out
        assert out.rstrip().endswith("charged 250 cents\nstate: closed")

    def test_composition_example(self) -> None:
        """docs/examples/composition.py recovers through a probe, and falls back when it can't fit."""
        out = run_example("composition.py")
        assert "recovering service: 7 (3 calls)" in out
        assert "fallback after 3 attempt(s) (deadline): CircuitOpen" in out
        assert "stuck service: 0 (2 calls)" in out

    @pytest.mark.parametrize(
        ("page", "example"),
        [("breaker.md", "breaker.py"), ("composition.md", "composition.py")],
    )
    def test_page_carries_its_example(self, page: str, example: str) -> None:
        """Each docs page names its runnable example and shows its code."""
        assert_page_shows(page, example)


class FlakyStorage(BreakerStorage):
    """A custom storage (the protocol) whose transactions fail while ``down`` is set."""

    def __init__(self) -> None:
        self.inner = MemoryBreakerStorage()
        self.down = False

    def transact(self, fn: Callable[[BreakerRecord, float], Any]) -> Any:
        if self.down:
            raise ConnectionError("storage unreachable")
        return self.inner.transact(fn)


class TestStorageErrors:
    def test_admission_error_propagates_without_calling(self) -> None:
        """When the storage cannot admit a call, its error is raised and the call is not made."""
        storage = FlakyStorage()
        breaker = CircuitBreaker(storage=storage)
        calls: list[int] = []
        storage.down = True
        with pytest.raises(ConnectionError, match="storage unreachable"):
            breaker.call(calls.append, 1)
        assert calls == []

    def test_recording_error_keeps_the_result(self, caplog: pytest.LogCaptureFixture) -> None:
        """An error while recording the outcome is logged; the caller still gets the result."""
        storage = FlakyStorage()
        breaker = CircuitBreaker(storage=storage)

        @breaker
        def work() -> str:
            storage.down = True
            return "done"

        with caplog.at_level(logging.ERROR, logger="resile"):
            assert work() == "done"
        assert "could not record an outcome" in caplog.text

    def test_recording_error_keeps_the_original_error(self) -> None:
        """If recording a failure fails, the caller still sees the call's own exception."""
        storage = FlakyStorage()
        breaker = CircuitBreaker(storage=storage)

        @breaker
        def work() -> None:
            storage.down = True
            raise Boom("the real error")

        with pytest.raises(Boom, match="the real error"):
            work()
