"""The iterator forms of ``Retrying``: ``timeout=`` and the final value."""

from __future__ import annotations

import pytest

from resile import Constant, Retrying, after_attempts, never
from resile.testing import no_waits


class TestIteratorTimeout:
    def test_sync_loop_stops_before_a_wait_past_timeout(self) -> None:
        """``for attempt in Retrying(timeout=...)`` starts no wait that would end past the timeout."""
        policy = Retrying(backoff=Constant(1.0), stop=never, timeout=3.5)
        with no_waits() as clock, pytest.raises(OSError):
            for attempt in policy:
                with attempt:
                    raise OSError("down")
        assert clock.sleeps == [1.0, 1.0, 1.0]

    @pytest.mark.anyio
    async def test_async_loop_stops_before_a_wait_past_timeout(self) -> None:
        """``async for`` honours ``timeout=`` the same way."""
        policy = Retrying(backoff=Constant(1.0), stop=never, timeout=2.5)
        with no_waits() as clock, pytest.raises(OSError):
            async for attempt in policy:
                with attempt:
                    raise OSError("down")
        assert clock.sleeps == [1.0, 1.0]


class TestIteratorValue:
    def test_fallback_value_reaches_the_caller(self) -> None:
        """With ``fallback=``, the loop ends quietly and ``attempt.value`` holds the fallback."""
        policy = Retrying(
            backoff=Constant(0), stop=after_attempts(2), fallback=lambda state: "cached"
        )
        for attempt in policy:
            with attempt:
                raise OSError("down")
        assert attempt.value == "cached"

    def test_value_is_the_accepted_result(self) -> None:
        """After a success, ``attempt.value`` is the result passed to ``set_result``."""
        results = iter([0, 0, 7])
        for attempt in Retrying(
            on_result=lambda r: not r, backoff=Constant(0), stop=after_attempts(5)
        ):
            with attempt:
                attempt.set_result(next(results))
        assert attempt.value == 7
        assert attempt.number == 3


class TestCircuitOpen:
    def test_narrow_on_still_waits_for_the_probe(self) -> None:
        """``on=ConnectionError`` still waits out a ``CircuitOpen`` until its probe time."""
        from resile import CircuitOpen, retry

        outcomes: list[BaseException | str] = [CircuitOpen("db", 4.0), "ok"]

        @retry(on=ConnectionError, backoff=Constant(0.1), stop=after_attempts(3))
        def call() -> str:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        with no_waits() as clock:
            assert call() == "ok"
        assert clock.sleeps == [4.0]

    def test_refused_call_costs_no_budget_token(self) -> None:
        """A call refused by an open circuit takes no token from the retry budget."""
        from resile import CircuitOpen, RetryBudget, retry

        budget = RetryBudget(max_tokens=10, token_ratio=0.1)
        outcomes: list[BaseException | str] = [CircuitOpen("db", 1.0), CircuitOpen("db", 1.0), "ok"]

        @retry(on=ConnectionError, backoff=Constant(0), stop=after_attempts(5), budget=budget)
        def call() -> str:
            outcome = outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        with no_waits():
            assert call() == "ok"
        assert budget.tokens == 10
