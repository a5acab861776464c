"""Delay strategies: formulas, jitter bounds, caps, seeding, validation, JSON round trip."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resile.backoff import Backoff, Constant, DecorrelatedJitter, Exponential, Linear

FAST = settings(max_examples=60, deadline=None)
BIG = 10**6


class TestFormulas:
    """Each strategy's raw delay, without jitter."""

    def test_constant(self) -> None:
        """Constant waits the same delay after every attempt."""
        b = Constant(2.5)
        assert [b.delay(n) for n in (1, 2, 3, 50)] == [2.5, 2.5, 2.5, 2.5]

    def test_linear(self) -> None:
        """Linear waits initial + increment * (n - 1)."""
        b = Linear(1.0, 0.5)
        assert [b.delay(n) for n in range(1, 6)] == [1.0, 1.5, 2.0, 2.5, 3.0]

    def test_exponential(self) -> None:
        """Exponential waits initial * multiplier ** (n - 1)."""
        b = Exponential(0.1, 3.0, jitter="none")
        for n in range(1, 10):
            assert b.delay(n) == pytest.approx(0.1 * 3.0 ** (n - 1))

    def test_exponential_multiplier_one_is_constant(self) -> None:
        """A multiplier of 1 keeps the initial delay."""
        b = Exponential(0.2, 1.0, jitter="none")
        assert {b.delay(n) for n in range(1, 20)} == {0.2}

    def test_decorrelated_without_jitter_takes_three_times_previous(self) -> None:
        """DecorrelatedJitter with no jitter waits min(cap, 3 * previous)."""
        b = DecorrelatedJitter(0.1, 10.0, jitter="none")
        assert b.delay(1, 0.5) == pytest.approx(1.5)
        assert b.delay(2, 5.0) == 10.0

    def test_decorrelated_without_previous_estimates_it(self) -> None:
        """Without previous, the un-jittered previous base * 3 ** (n - 1) stands in."""
        b = DecorrelatedJitter(0.1, 100.0, jitter="none")
        assert b.delay(1) == pytest.approx(0.3)
        assert b.delay(2) == pytest.approx(0.9)
        assert b.delay(3) == pytest.approx(2.7)
        assert b.delay(50) == 100.0

    def test_decorrelated_previous_never_below_base(self) -> None:
        """A tiny or zero previous delay still gives at least base."""
        b = DecorrelatedJitter(0.5, 10.0, jitter="none")
        assert b.delay(3, 0.0) == 0.5

    def test_timedelta_accepted(self) -> None:
        """Durations may be given as timedelta."""
        b = Linear(
            timedelta(milliseconds=100), timedelta(seconds=1), max_delay=timedelta(seconds=2)
        )
        assert (b.initial, b.increment, b.max_delay) == (0.1, 1.0, 2.0)

    def test_delays_iterator(self) -> None:
        """delays() yields the delays of attempts 1, 2, 3, ..."""
        it = Exponential(1.0, jitter="none").delays()
        assert [next(it) for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]

    def test_default_jitters(self) -> None:
        """Exponential and DecorrelatedJitter default to full jitter; Constant and Linear to none."""
        assert Exponential().jitter == "full"
        assert DecorrelatedJitter().jitter == "full"
        assert Constant().jitter == "none"
        assert Linear().jitter == "none"

    def test_attempt_below_one_rejected(self) -> None:
        """delay(0) raises ValueError naming the attempt."""
        for b in (Constant(1.0), DecorrelatedJitter(0.1, 1.0)):
            with pytest.raises(ValueError, match="attempt must be >= 1, got 0"):
                b.delay(0)


class TestCap:
    """max_delay caps every delay."""

    @pytest.mark.parametrize(
        "b",
        [
            Linear(1.0, 1.0, max_delay=3.0),
            Exponential(1.0, jitter="none", max_delay=3.0),
            DecorrelatedJitter(1.0, 3.0, jitter="none"),
            Constant(3.0, max_delay=3.0),
        ],
        ids=repr,
    )
    def test_cap_reached_and_held(self, b: Backoff) -> None:
        """Without jitter the delay climbs to the cap and stays there."""
        delays = [b.delay(n) for n in range(1, 30)]
        assert max(delays) == 3.0
        assert delays[-1] == 3.0

    @pytest.mark.parametrize(
        "b",
        [
            Linear(1.0, 1e300, max_delay=7.0),
            Exponential(1.0, 10.0, jitter="none", max_delay=7.0),
            Exponential(1.0, 10.0, jitter="full", max_delay=7.0),
            Exponential(1.0, 10.0, jitter=1.0, max_delay=7.0),
            Exponential(1.0, 10.0, jitter="equal", max_delay=7.0),
            DecorrelatedJitter(1.0, 7.0),
            DecorrelatedJitter(1.0, 7.0, jitter=0.5),
        ],
        ids=repr,
    )
    def test_huge_attempt_numbers_do_not_overflow(self, b: Backoff) -> None:
        """Attempt 10**6 gives a finite delay within [0, cap]."""
        d = b.delay(BIG)
        assert math.isfinite(d)
        assert 0.0 <= d <= 7.0

    def test_uncapped_exponential_stays_finite(self) -> None:
        """With no cap an exponential is still bounded by a finite ceiling, never inf or NaN."""
        b = Exponential(1.0, 2.0, jitter="none")
        assert math.isfinite(b.delay(BIG))
        assert b.delay(BIG) == b.delay(BIG + 1)

    def test_zero_initial_stays_zero_at_huge_attempts(self) -> None:
        """An exponential starting at 0 waits 0 even where multiplier ** n overflows."""
        b = Exponential(0.0, 2.0, max_delay=5.0, jitter="none")
        assert b.delay(5) == 0.0
        assert b.delay(2000) == 0.0
        assert b.delay(BIG) == 0.0

    def test_decorrelated_huge_previous(self) -> None:
        """An infinite or NaN previous delay still gives a delay within [base, cap]."""
        b = DecorrelatedJitter(0.5, 4.0, seed=1)
        for prev in (math.inf, math.nan, -1.0, 1e308):
            assert 0.5 <= b.delay(3, prev) <= 4.0


class TestJitter:
    """Each jitter mode stays within its bounds and follows its formula."""

    @staticmethod
    def _samples(jitter: Any, n: int = 2000) -> list[float]:
        b = Constant(2.0, jitter=jitter, seed=42)
        return [b.delay(1) for _ in range(n)]

    def test_none(self) -> None:
        """ "none" returns the raw delay."""
        assert set(self._samples("none", 10)) == {2.0}

    def test_full_bounds(self) -> None:
        """ "full" draws from [0, d] and spreads across it."""
        s = self._samples("full")
        assert all(0.0 <= x <= 2.0 for x in s)
        assert min(s) < 0.1 and max(s) > 1.9

    def test_equal_bounds(self) -> None:
        """ "equal" draws from [d/2, d]."""
        s = self._samples("equal")
        assert all(1.0 <= x <= 2.0 for x in s)
        assert min(s) < 1.1 and max(s) > 1.9

    def test_randomization_factor_bounds(self) -> None:
        """A factor r draws from [d(1-r), d(1+r)]."""
        s = self._samples(0.25)
        assert all(1.5 <= x <= 2.5 for x in s)
        assert min(s) < 1.6 and max(s) > 2.4

    def test_randomization_factor_capped(self) -> None:
        """A factor r never pushes a delay above the cap."""
        b = Constant(2.0, max_delay=2.0, jitter=0.5, seed=3)
        s = [b.delay(1) for _ in range(1000)]
        assert all(1.0 <= x <= 2.0 for x in s)

    def test_randomization_factor_zero_is_none(self) -> None:
        """A factor of 0 leaves the delay unchanged."""
        assert set(self._samples(0.0, 10)) == {2.0}

    def test_full_formula_with_seed(self) -> None:
        """ "full" is d * U where U comes from random.Random(seed)."""
        rng = random.Random(9)
        b = Exponential(1.0, 2.0, jitter="full", seed=9)
        for n in range(1, 8):
            assert b.delay(n) == pytest.approx(2.0 ** (n - 1) * rng.random())

    def test_equal_formula_with_seed(self) -> None:
        """ "equal" is d/2 + d/2 * U."""
        rng = random.Random(5)
        b = Linear(1.0, 1.0, jitter="equal", seed=5)
        for n in range(1, 8):
            assert b.delay(n) == pytest.approx(n / 2 + n / 2 * rng.random())

    def test_factor_formula_with_seed(self) -> None:
        """A factor r is d(1-r) + 2rd * U (cenkalti's randomized interval)."""
        rng = random.Random(11)
        b = Constant(4.0, jitter=0.5, seed=11)
        for _ in range(5):
            assert b.delay(1) == pytest.approx(2.0 + 4.0 * rng.random())

    def test_decorrelated_formula_with_seed(self) -> None:
        """Decorrelated jitter is min(cap, uniform(base, 3 * previous)), the cap applied after the draw."""
        rng = random.Random(2)
        b = DecorrelatedJitter(1.0, 5.0, seed=2)
        previous = 1.0
        for n in range(1, 30):
            expected = min(5.0, 1.0 + (3.0 * previous - 1.0) * rng.random())
            got = b.delay(n, previous)
            assert got == pytest.approx(expected)
            previous = got

    def test_decorrelated_at_cap_mostly_stays_there(self) -> None:
        """Once the previous delay is the cap, about two thirds of the draws are the cap (AWS)."""
        b = DecorrelatedJitter(0.01, 1.0, seed=4)
        s = [b.delay(2, 1.0) for _ in range(3000)]
        share = sum(x == 1.0 for x in s) / len(s)
        assert 0.6 < share < 0.73

    def test_decorrelated_bounds(self) -> None:
        """Decorrelated jitter stays within [base, cap] along a sequence."""
        b = DecorrelatedJitter(0.2, 3.0, seed=8)
        it = b.delays()
        assert all(0.2 <= next(it) <= 3.0 for _ in range(500))


class TestSeed:
    """A seeded strategy gives a reproducible sequence."""

    def test_same_seed_same_sequence(self) -> None:
        """Two strategies with one seed give the same delays."""
        a = Exponential(0.1, seed=123)
        b = Exponential(0.1, seed=123)
        assert [a.delay(n) for n in range(1, 20)] == [b.delay(n) for n in range(1, 20)]

    def test_different_seeds_differ(self) -> None:
        """Different seeds give different delays."""
        a = Exponential(0.1, seed=1)
        b = Exponential(0.1, seed=2)
        assert [a.delay(n) for n in range(1, 10)] != [b.delay(n) for n in range(1, 10)]


def _roundtrip(b: Backoff) -> Backoff:
    return Backoff.from_dict(json.loads(json.dumps(b.to_dict())))


class TestSerialisation:
    """to_dict / from_dict round-trip through JSON exactly."""

    @pytest.mark.parametrize(
        "b",
        [
            Constant(0.25),
            Constant(1, max_delay=2, jitter="full", seed=7),
            Linear(0.5, 0.25, max_delay=3.0, jitter="equal"),
            Exponential(0.1, 1.5, max_delay=60.0, jitter=0.5, seed=0),
            Exponential(),
            DecorrelatedJitter(0.1, 20.0),
            DecorrelatedJitter(0.1, jitter="none", seed=99),
        ],
        ids=repr,
    )
    def test_roundtrip(self, b: Backoff) -> None:
        """A strategy survives json.dumps/json.loads and compares equal, with equal delays."""
        again = _roundtrip(b)
        assert again == b
        assert type(again) is type(b)
        assert hash(again) == hash(b)
        if b.seed is not None:
            fresh = Backoff.from_dict(b.to_dict())
            assert [fresh.delay(n) for n in range(1, 6)] == [again.delay(n) for n in range(1, 6)]

    def test_dict_shape(self) -> None:
        """to_dict names the type and every field."""
        assert Constant(1.5).to_dict() == {
            "type": "constant",
            "delay": 1.5,
            "max_delay": None,
            "jitter": "none",
        }
        assert DecorrelatedJitter(0.1, 2.0, seed=3).to_dict() == {
            "type": "decorrelated",
            "base": 0.1,
            "max_delay": 2.0,
            "jitter": "full",
            "seed": 3,
        }

    def test_unequal_configurations(self) -> None:
        """Strategies differing in any field are not equal."""
        assert Exponential(0.1) != Exponential(0.2)
        assert Exponential(0.1) != Exponential(0.1, jitter="none")
        assert Exponential(0.1) != Exponential(0.1, seed=1)
        assert Constant(1.0) != Linear(1.0, 0.0)
        assert Constant(1.0) != "Constant(1.0)"

    def test_repr(self) -> None:
        """repr shows the configuration."""
        assert repr(Constant(1.0)) == "Constant(delay=1.0, jitter='none')"
        assert repr(Exponential(0.1, max_delay=5, seed=2)) == (
            "Exponential(initial=0.1, multiplier=2.0, max_delay=5.0, jitter='full', seed=2)"
        )

    @pytest.mark.parametrize(
        ("data", "needle"),
        [
            ({"type": "fibonacci"}, "'fibonacci'"),
            ({}, "type"),
            ({"type": 3}, "type"),
            ({"type": "constant", "colour": 1}, "colour"),
            ({"type": "constant", "delay": -1}, "delay"),
            ({"type": "exponential", "initial": "1"}, "initial"),
            ([1, 2], "mapping"),
        ],
    )
    def test_from_dict_rejects(self, data: Any, needle: str) -> None:
        """from_dict raises ValueError naming the bad type or field."""
        with pytest.raises(ValueError, match=needle):
            Backoff.from_dict(data)


class TestValidation:
    """Invalid values raise ValueError naming the field and the value."""

    @pytest.mark.parametrize(
        ("make", "field", "value"),
        [
            (lambda: Constant(-1), "delay", "-1"),
            (lambda: Constant(math.nan), "delay", "nan"),
            (lambda: Constant(math.inf), "delay", "inf"),
            (lambda: Linear(-0.5), "initial", "-0.5"),
            (lambda: Linear(1, -2), "increment", "-2"),
            (lambda: Exponential(math.nan), "initial", "nan"),
            (lambda: Exponential(0.1, 0.5), "multiplier", "0.5"),
            (lambda: Exponential(0.1, math.inf), "multiplier", "inf"),
            (lambda: Exponential(0.1, math.nan), "multiplier", "nan"),
            (lambda: Exponential(0.1, max_delay=-3), "max_delay", "-3"),
            (lambda: Exponential(0.1, max_delay=math.inf), "max_delay", "inf"),
            (lambda: Exponential(2.0, max_delay=1.0), "max_delay", "1.0"),
            (lambda: Linear(2.0, max_delay=1.0), "initial", "2.0"),
            (lambda: Constant(2.0, max_delay=1.0), "max_delay", "1.0"),
            (lambda: DecorrelatedJitter(2.0, 1.0), "max_delay", "1.0"),
            (lambda: DecorrelatedJitter(-1.0), "base", "-1"),
            (lambda: DecorrelatedJitter(0.1, 1.0, max_delay=2.0), "cap", "1.0"),
            (lambda: Exponential(jitter=1.5), "jitter", "1.5"),
            (lambda: Exponential(jitter=-0.1), "jitter", "-0.1"),
            (lambda: Exponential(jitter=math.nan), "jitter", "nan"),
            (lambda: Exponential(jitter="half"), "jitter", "half"),  # type: ignore[arg-type]
            (lambda: Exponential(jitter=True), "jitter", "True"),
            (lambda: Exponential(seed=True), "seed", "True"),
            (lambda: Exponential(seed=1.5), "seed", "1.5"),  # type: ignore[arg-type]
        ],
    )
    def test_invalid(self, make: Any, field: str, value: str) -> None:
        """The ValueError message names the field and the value."""
        with pytest.raises(ValueError) as info:
            make()
        message = str(info.value)
        assert field in message
        assert value in message

    def test_non_number_duration_is_type_error(self) -> None:
        """A duration that is not a number or timedelta raises TypeError naming the field."""
        with pytest.raises(TypeError, match="delay"):
            Constant("1")  # type: ignore[arg-type]

    def test_cap_equal_to_initial_allowed(self) -> None:
        """A cap equal to the initial delay is fine."""
        assert Exponential(1.0, max_delay=1.0, jitter="none").delay(10) == 1.0


# -- property tests -------------------------------------------------------------------------

durations = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
jitters = st.one_of(
    st.sampled_from(["none", "full", "equal"]),
    st.floats(min_value=0.0, max_value=1.0),
)
seeds = st.one_of(st.none(), st.integers(min_value=0, max_value=2**32))


@st.composite
def strategies(draw: st.DrawFn, jitter: st.SearchStrategy[Any] = jitters) -> Backoff:
    """Any valid strategy, possibly capped."""
    kind = draw(st.sampled_from(["constant", "linear", "exponential", "decorrelated"]))
    j = draw(jitter)
    seed = draw(seeds)
    first = draw(durations)
    cap = draw(st.one_of(st.none(), durations.map(lambda x: x + first)))
    if kind == "constant":
        return Constant(first, max_delay=cap, jitter=j, seed=seed)
    if kind == "linear":
        return Linear(first, draw(durations), max_delay=cap, jitter=j, seed=seed)
    if kind == "exponential":
        mult = draw(st.floats(min_value=1.0, max_value=100.0))
        return Exponential(first, mult, max_delay=cap, jitter=j, seed=seed)
    return DecorrelatedJitter(first, cap, jitter=j, seed=seed)


attempts = st.one_of(st.integers(min_value=1, max_value=100), st.integers(1, 10**7))


class TestProperties:
    """Hypothesis: bounds, monotonicity, reproducibility, JSON round trip."""

    @FAST
    @given(strategies(), attempts)
    def test_bounds(self, b: Backoff, n: int) -> None:
        """Every delay is finite, >= 0 and <= the cap."""
        d = b.delay(n)
        assert math.isfinite(d)
        assert d >= 0.0
        if b.max_delay is not None:
            assert d <= b.max_delay

    @FAST
    @given(strategies(), attempts, st.floats(allow_nan=True, allow_infinity=True))
    def test_bounds_with_any_previous(self, b: Backoff, n: int, prev: float) -> None:
        """Whatever previous delay is passed, the delay stays finite and within [0, cap]."""
        d = b.delay(n, prev)
        assert math.isfinite(d)
        assert 0.0 <= d <= (b.max_delay if b.max_delay is not None else math.inf)

    @FAST
    @given(strategies(jitter=st.sampled_from(["none", "full", "equal"])), st.integers(1, 10**4))
    def test_decorrelated_floor(self, b: Backoff, n: int) -> None:
        """Decorrelated jitter never waits less than base (for the none/full/equal modes)."""
        if isinstance(b, DecorrelatedJitter):
            assert b.delay(n) >= b.base

    @FAST
    @given(strategies(jitter=st.just("none")), st.integers(1, 2000))
    def test_monotonic_without_jitter(self, b: Backoff, n: int) -> None:
        """Without jitter the delay never shrinks from one attempt to the next."""
        assert b.delay(n) <= b.delay(n + 1)

    @FAST
    @given(strategies(), st.integers(min_value=0, max_value=2**32))
    def test_seed_reproducible(self, b: Backoff, seed: int) -> None:
        """Two copies with the same seed give the same sequence."""
        data = b.to_dict()
        data["seed"] = seed
        one, two = Backoff.from_dict(data), Backoff.from_dict(data)
        a, c = one.delays(), two.delays()
        assert [next(a) for _ in range(20)] == [next(c) for _ in range(20)]

    @FAST
    @given(strategies())
    def test_json_roundtrip(self, b: Backoff) -> None:
        """to_dict -> JSON -> from_dict gives an equal strategy with an equal dict."""
        again = _roundtrip(b)
        assert again == b
        assert again.to_dict() == b.to_dict()
