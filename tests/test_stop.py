"""Stop conditions: attempts, elapsed time, deadlines, never, combinations, storage."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from resile import Constant, Retrying, Stop, after_attempts, after_elapsed, at_deadline, never
from resile.testing import no_waits


def _always_fails() -> None:
    raise ConnectionError("down")


class TestAfterAttempts:
    """after_attempts(n) stops once n attempts have been made."""

    def test_threshold(self) -> None:
        """It stops at the n-th attempt, not before."""
        s = after_attempts(3)
        assert not s.should_stop(1, 0.0, 1.0)
        assert not s.should_stop(2, 0.0, 1.0)
        assert s.should_stop(3, 0.0, 1.0)
        assert s.max_attempts() == 3

    def test_one_means_no_retry(self) -> None:
        """after_attempts(1) makes a single attempt through the engine."""
        calls = []

        @Retrying(stop=after_attempts(1), backoff=Constant(0))
        def f() -> None:
            calls.append(1)
            raise ConnectionError

        with pytest.raises(ConnectionError):
            f()
        assert len(calls) == 1

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
    def test_invalid(self, bad: Any) -> None:
        """Anything but an int >= 1 raises ValueError naming the field and the value."""
        with pytest.raises(ValueError, match=rf"attempts.*{bad!r}"):
            after_attempts(bad)


class TestAfterElapsed:
    """after_elapsed(s) never starts a wait that would end past s seconds (cenkalti's MaxElapsedTime)."""

    def test_looks_ahead_by_next_delay(self) -> None:
        """It stops when elapsed + next delay would exceed the limit, not only once it has."""
        s = after_elapsed(10)
        assert not s.should_stop(1, 5.0, 5.0)
        assert s.should_stop(1, 5.0, 5.01)
        assert s.should_stop(1, 10.5, 0.0)
        assert s.max_attempts() == math.inf

    def test_engine_never_waits_past_it(self) -> None:
        """Through the engine, the total time waited stays within the limit."""
        policy = Retrying(backoff=Constant(3.0), stop=after_elapsed(10))
        with no_waits() as clock:
            start = clock.now
            wrapped = policy(_always_fails)
            with pytest.raises(ConnectionError):
                wrapped()
        assert clock.sleeps == [3.0, 3.0, 3.0]
        assert clock.now - start <= 10.0
        assert wrapped.statistics.giveups == 1  # type: ignore[attr-defined]

    def test_elapsed_counts_time_spent_in_attempts(self) -> None:
        """Time spent inside attempts counts toward the limit, not only waits."""
        policy = Retrying(backoff=Constant(1.0), stop=after_elapsed(10))
        with no_waits() as clock:

            def slow() -> None:
                clock.advance(4.0)
                raise ConnectionError

            with pytest.raises(ConnectionError):
                policy(slow)()
        # attempts end at 4, 9; the wait after the second would end at 10 (allowed), the third ends at 14.
        assert clock.sleeps == [1.0, 1.0]

    def test_timedelta(self) -> None:
        """A timedelta is accepted."""
        assert after_elapsed(timedelta(minutes=1)).seconds == 60.0

    @pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
    def test_invalid(self, bad: float) -> None:
        """Negative, NaN and infinite limits raise ValueError naming the field."""
        with pytest.raises(ValueError, match="seconds"):
            after_elapsed(bad)


class TestAtDeadline:
    """at_deadline(when) stops rather than start a wait that ends past an instant."""

    def test_monotonic_instant(self) -> None:
        """A monotonic instant on resile's clock; the check looks ahead by the next delay."""
        with no_waits() as clock:
            s = at_deadline(clock.now + 5.0)
            assert not s.should_stop(1, 0.0, 4.0)
            assert s.should_stop(1, 0.0, 6.0)
            clock.advance(2.0)
            assert s.should_stop(1, 0.0, 4.0)

    def test_aware_datetime(self) -> None:
        """An aware datetime is converted to an instant on resile's clock."""
        with no_waits() as clock:
            s = at_deadline(datetime.now(timezone.utc) + timedelta(seconds=30))
            assert s.when == pytest.approx(clock.now + 30.0, abs=1.0)
            assert not s.should_stop(1, 0.0, 25.0)
            assert s.should_stop(1, 0.0, 35.0)

    def test_other_timezone(self) -> None:
        """An aware datetime in any timezone denotes the same instant."""
        tz = timezone(timedelta(hours=5))
        with no_waits() as clock:
            s = at_deadline(datetime.now(tz) + timedelta(seconds=60))
            assert s.when == pytest.approx(clock.now + 60.0, abs=1.0)

    def test_engine_stops_before_the_instant(self) -> None:
        """Through the engine, no wait ends past the instant."""
        with no_waits() as clock:
            policy = Retrying(backoff=Constant(2.0), stop=at_deadline(clock.now + 7.0))
            with pytest.raises(ConnectionError):
                policy(_always_fails)()
            assert clock.sleeps == [2.0, 2.0, 2.0]

    @pytest.mark.parametrize("bad", [datetime(2030, 1, 1), math.nan, True, "soon"])
    def test_invalid(self, bad: Any) -> None:
        """A naive datetime, NaN or a non-number raises ValueError naming when."""
        with pytest.raises(ValueError, match="when"):
            at_deadline(bad)

    def test_not_storable(self) -> None:
        """A process-local instant cannot be stored: to_dict raises TypeError."""
        with pytest.raises(TypeError, match="cannot be stored"):
            at_deadline(1.0).to_dict()


class TestNever:
    """never never stops."""

    def test_never(self) -> None:
        """It says no whatever the counts."""
        assert not never.should_stop(10**9, 1e12, 1e9)
        assert never.max_attempts() == math.inf
        assert repr(never) == "never"


class TestCombination:
    """| stops when either condition does; & when both do."""

    def test_or(self) -> None:
        """a | b stops as soon as one of them says so."""
        s = after_attempts(5) | after_elapsed(10)
        assert s.should_stop(5, 0.0, 0.0)
        assert s.should_stop(1, 9.0, 2.0)
        assert not s.should_stop(4, 1.0, 1.0)
        assert s.max_attempts() == 5
        assert s.needs_clock

    def test_and(self) -> None:
        """a & b stops only when both say so."""
        s = after_attempts(5) & after_elapsed(10)
        assert not s.should_stop(5, 0.0, 0.0)
        assert not s.should_stop(1, 9.0, 2.0)
        assert s.should_stop(5, 9.0, 2.0)
        assert s.max_attempts() == math.inf

    def test_or_flattens(self) -> None:
        """Chained | gives one flat condition."""
        s = after_attempts(3) | after_elapsed(1) | never
        assert repr(s) == "after_attempts(3) | after_elapsed(1.0) | never"
        assert s.max_attempts() == 3

    def test_needs_clock(self) -> None:
        """Only conditions that read elapsed time ask the engine for the clock."""
        assert not after_attempts(3).needs_clock
        assert not (after_attempts(3) | never).needs_clock
        assert (after_attempts(3) & after_elapsed(1)).needs_clock

    def test_with_non_stop(self) -> None:
        """Combining with something else raises TypeError."""
        with pytest.raises(TypeError):
            after_attempts(3) | 5  # type: ignore[operator]
        with pytest.raises(TypeError):
            after_attempts(3) & "x"  # type: ignore[operator]

    def test_through_engine(self) -> None:
        """The engine honours a combination: whichever limit comes first ends the call."""
        policy = Retrying(backoff=Constant(1.0), stop=after_attempts(10) | after_elapsed(2.5))
        with no_waits() as clock, pytest.raises(ConnectionError):
            policy(_always_fails)()
        assert clock.sleeps == [1.0, 1.0]


class TestStorage:
    """to_dict / Stop.from_dict round-trip through JSON."""

    @pytest.mark.parametrize(
        "s",
        [
            after_attempts(4),
            after_elapsed(2.5),
            never,
            after_attempts(3) | after_elapsed(60),
            after_attempts(3) & after_elapsed(60),
            (after_attempts(2) & after_elapsed(1)) | never,
        ],
        ids=repr,
    )
    def test_roundtrip(self, s: Stop) -> None:
        """A condition survives json.dumps/json.loads and compares equal."""
        again = Stop.from_dict(json.loads(json.dumps(s.to_dict())))
        assert again == s
        assert hash(again) == hash(s)
        assert repr(again) == repr(s)

    def test_never_roundtrip_is_the_singleton(self) -> None:
        """never comes back as the same object."""
        assert Stop.from_dict(never.to_dict()) is never

    def test_equality(self) -> None:
        """Conditions compare by configuration."""
        assert after_attempts(3) == after_attempts(3)
        assert after_attempts(3) != after_attempts(4)
        assert after_attempts(3) != after_elapsed(3)

    @pytest.mark.parametrize(
        "data",
        [
            {"type": "after_lunch"},
            {},
            "after_attempts",
            {"type": "after_attempts"},
            {"type": "after_attempts", "attempts": 0},
            {"type": "after_elapsed", "seconds": "x"},
            {"type": "any", "of": []},
        ],
    )
    def test_from_dict_rejects(self, data: Any) -> None:
        """Unknown types, missing or invalid fields raise ValueError."""
        with pytest.raises(ValueError):
            Stop.from_dict(data)
