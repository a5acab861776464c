"""Tests of resile.throttle: the SRE book's client-side adaptive throttling."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resile import (
    AdaptiveThrottle,
    CircuitBreaker,
    CircuitState,
    Constant,
    Throttled,
    after_attempts,
    retry,
)
from resile.testing import FakeClock


class TestValidation:
    @pytest.mark.parametrize("k", [0.5, 0, float("inf"), True, "2"])
    def test_k_must_be_at_least_one(self, k: object) -> None:
        """k below 1 (or not a finite number) is refused, naming the field."""
        with pytest.raises(ValueError, match="k must be a finite number >= 1, got"):
            AdaptiveThrottle(k=k)  # type: ignore[arg-type]

    def test_window_must_be_positive(self) -> None:
        """A zero window is refused."""
        with pytest.raises(ValueError, match="window must be > 0 seconds, got 0"):
            AdaptiveThrottle(window=0)

    @pytest.mark.parametrize("value", [0, 1.5, -0.1])
    def test_max_rejection_in_unit_interval(self, value: float) -> None:
        """max_rejection outside (0, 1] is refused."""
        with pytest.raises(ValueError, match=r"max_rejection must be in \(0, 1\]"):
            AdaptiveThrottle(max_rejection=value)

    def test_rejected_on_must_be_exception_types(self) -> None:
        """rejected_on=42 is refused with a TypeError."""
        with pytest.raises(TypeError, match="rejected_on must be an exception type"):
            AdaptiveThrottle(rejected_on=42)  # type: ignore[arg-type]

    def test_seed_must_be_an_int(self) -> None:
        """seed='x' is refused."""
        with pytest.raises(TypeError, match="seed must be an int or None"):
            AdaptiveThrottle(seed="x")  # type: ignore[arg-type]


class TestFormula:
    def test_no_history_means_no_rejection(self, clock: FakeClock) -> None:
        """With nothing recorded the rejection probability is 0 and every request is allowed."""
        throttle = AdaptiveThrottle(seed=1)
        assert throttle.probability() == 0.0
        assert all(throttle.allow() for _ in range(100))

    def test_all_rejected(self, clock: FakeClock) -> None:
        """10 requests, 0 accepts: p = (10 - 0) / 11."""
        throttle = AdaptiveThrottle(k=2)
        for _ in range(10):
            throttle.record(False)
        assert throttle.probability() == pytest.approx(10 / 11)

    def test_half_accepted_with_k_two(self, clock: FakeClock) -> None:
        """20 requests, 10 accepts, k=2: requests - 2 accepts = 0, so p = 0."""
        throttle = AdaptiveThrottle(k=2)
        for _ in range(10):
            throttle.record(True)
            throttle.record(False)
        assert throttle.probability() == 0.0

    def test_lower_k_is_more_aggressive(self, clock: FakeClock) -> None:
        """20 requests, 10 accepts, k=1.5: p = (20 - 15) / 21."""
        throttle = AdaptiveThrottle(k=1.5)
        for _ in range(10):
            throttle.record(True)
            throttle.record(False)
        assert throttle.probability() == pytest.approx(5 / 21)
        assert throttle.requests == 20
        assert throttle.accepts == 10

    def test_max_rejection_caps_p(self, clock: FakeClock) -> None:
        """max_rejection caps the probability."""
        throttle = AdaptiveThrottle(max_rejection=0.25)
        for _ in range(100):
            throttle.record(False)
        assert throttle.probability() == 0.25

    def test_window_slides(self, clock: FakeClock) -> None:
        """Failures older than the window no longer count."""
        throttle = AdaptiveThrottle(window=timedelta(seconds=60))
        for _ in range(50):
            throttle.record(False)
        clock.advance(30)
        assert throttle.probability() > 0.9
        clock.advance(31)
        assert throttle.probability() == 0.0
        assert throttle.requests == 0


class TestAllow:
    def test_rejection_rate_follows_p(self, clock: FakeClock) -> None:
        """With p capped at 0.5, about half of 4,000 requests are rejected locally (seeded)."""
        throttle = AdaptiveThrottle(max_rejection=0.5, seed=7)
        for _ in range(100):
            throttle.record(False)
        rejected = sum(not throttle.allow() for _ in range(4000))
        assert 1800 < rejected < 2200

    def test_rejections_count_as_requests(self, clock: FakeClock) -> None:
        """A local rejection is counted as a request without an accept."""
        throttle = AdaptiveThrottle(seed=3)
        for _ in range(10):
            throttle.record(False)
        before = throttle.requests
        rejected = sum(not throttle.allow() for _ in range(50))
        assert rejected > 0
        assert throttle.requests == before + rejected
        assert throttle.accepts == 0

    def test_same_seed_same_decisions(self, clock: FakeClock) -> None:
        """Two throttles with the same seed and history make the same decisions."""
        a, b = AdaptiveThrottle(seed=11), AdaptiveThrottle(seed=11)
        for t in (a, b):
            for _ in range(5):
                t.record(False)
                t.record(True)
                t.record(False)
        assert [a.allow() for _ in range(200)] == [b.allow() for _ in range(200)]


class TestForms:
    def test_decorator_raises_throttled_without_calling(self, clock: FakeClock) -> None:
        """Once the backend refuses everything, the decorator rejects most calls locally."""
        throttle = AdaptiveThrottle(seed=5, name="api")
        calls = 0

        @throttle
        def dep() -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("overloaded")

        outcomes: list[str] = []
        for _ in range(200):
            try:
                dep()
            except ConnectionError:
                outcomes.append("sent")
            except Throttled as exc:
                assert exc.name == "api"
                assert 0 < exc.probability <= 1
                outcomes.append("throttled")
        assert calls == outcomes.count("sent")
        assert outcomes.count("throttled") > 150

    def test_not_rejected_errors_count_as_accepts(self, clock: FakeClock) -> None:
        """An error outside rejected_on (the backend answered) counts as an accept."""
        throttle = AdaptiveThrottle(rejected_on=ConnectionError)

        @throttle
        def dep() -> None:
            raise KeyError("not found")

        for _ in range(20):
            with pytest.raises(KeyError):
                dep()
        assert throttle.accepts == 20
        assert throttle.probability() == 0.0

    def test_context_manager(self, clock: FakeClock) -> None:
        """``with throttle:`` records the block's outcome."""
        throttle = AdaptiveThrottle()
        with throttle:
            pass
        with pytest.raises(ConnectionError), throttle:
            raise ConnectionError("x")
        assert (throttle.requests, throttle.accepts) == (2, 1)

    @pytest.mark.anyio
    async def test_async_forms(self, clock: FakeClock) -> None:
        """The decorator and ``async with`` work on async code."""
        throttle = AdaptiveThrottle()

        @throttle
        async def dep() -> int:
            return 3

        assert await dep() == 3
        with pytest.raises(ConnectionError):
            async with throttle:
                raise ConnectionError("x")
        assert (throttle.requests, throttle.accepts) == (2, 1)

    def test_cancellation_is_not_counted(self, clock: FakeClock) -> None:
        """A KeyboardInterrupt says nothing about the backend: nothing is recorded."""
        throttle = AdaptiveThrottle()
        with pytest.raises(KeyboardInterrupt), throttle:
            raise KeyboardInterrupt
        assert throttle.requests == 0


class TestWithRetry:
    def test_gates_retries_as_a_budget(self, clock: FakeClock) -> None:
        """As @retry(budget=throttle), retries against a dead backend are cut far below 5 x calls."""
        throttle = AdaptiveThrottle(seed=2)
        calls = 0

        @retry(budget=throttle, stop=after_attempts(5), backoff=Constant(0.1))
        def dead() -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("down")

        for _ in range(200):
            with pytest.raises(ConnectionError):
                dead()
        # Each call makes its first attempt; retries pass only with probability 1 - p, and
        # p climbs toward 1 as failures (and local rejections) fill the window.
        assert 200 < calls < 260
        assert throttle.accepts == 0

    def test_healthy_backend_is_never_throttled(self, clock: FakeClock) -> None:
        """Through @retry, successes keep p at 0: no call is ever refused."""
        throttle = AdaptiveThrottle(seed=2)

        @retry(budget=throttle, stop=after_attempts(3))
        def ok() -> int:
            return 1

        assert sum(ok() for _ in range(100)) == 100
        assert throttle.probability() == 0.0
        assert throttle.accepts == 100


class TestWithBreaker:
    def test_breaker_sheds_load_before_opening(self, clock: FakeClock) -> None:
        """A breaker with a throttle rejects calls locally while closed, without touching the dependency."""
        throttle = AdaptiveThrottle(seed=9)
        breaker = CircuitBreaker(
            failure_threshold=None, failure_rate=0.99, minimum_calls=1000, throttle=throttle
        )
        calls = 0

        @breaker
        def dep() -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("overloaded")

        throttled = 0
        for _ in range(100):
            try:
                dep()
            except ConnectionError:
                pass
            except Throttled:
                throttled += 1
        assert breaker.state is CircuitState.CLOSED
        assert throttled > 50
        assert calls == 100 - throttled
        assert throttle.requests == 100
