"""Presets: the documented defaults of the peers, as fresh Retrying policies."""

from __future__ import annotations

import pytest

from resile import (
    DecorrelatedJitter,
    Exponential,
    Retrying,
    after_attempts,
    after_elapsed,
    presets,
)
from resile.testing import no_waits


def _always_fails() -> None:
    raise ConnectionError


class TestGo:
    """presets.go(): cenkalti/backoff v5's NewExponentialBackOff defaults."""

    def test_defaults(self) -> None:
        """Initial 0.5 s, factor 0.5, multiplier 1.5, max interval 60 s, max elapsed 15 min."""
        p = presets.go()
        assert isinstance(p, Retrying)
        assert p.backoff == Exponential(0.5, multiplier=1.5, max_delay=60.0, jitter=0.5)
        assert p.stop == after_elapsed(900)

    def test_delays_within_randomized_interval(self) -> None:
        """Each wait lies in [d(1-0.5), d(1+0.5)] of the un-randomized interval, capped at 60 s."""
        with no_waits() as clock, pytest.raises(ConnectionError):
            presets.go()(_always_fails)()
        assert clock.total <= 900.0
        for n, wait in enumerate(clock.sleeps, start=1):
            d = min(60.0, 0.5 * 1.5 ** (n - 1))
            assert 0.5 * d <= wait <= min(60.0, 1.5 * d)
        assert len(clock.sleeps) > 10

    def test_overrides(self) -> None:
        """Keywords override any Retrying field."""
        p = presets.go(stop=after_attempts(2), name="x")
        assert p.stop == after_attempts(2)
        assert p.name == "x"
        assert p.backoff.max_delay == 60.0

    def test_fresh_policy_each_call(self) -> None:
        """Each call returns a new policy with its own statistics."""
        a, b = presets.go(), presets.go()
        assert a is not b
        assert a.statistics is not b.statistics


class TestAws:
    """presets.aws(): decorrelated jitter with the AWS SDKs' standard-mode limits."""

    def test_defaults(self) -> None:
        """DecorrelatedJitter(base=0.1, cap=20) and at most 3 attempts."""
        p = presets.aws()
        assert p.backoff == DecorrelatedJitter(0.1, 20.0)
        assert p.stop == after_attempts(3)

    def test_run(self) -> None:
        """Three attempts, two waits within [0.1, 20]."""
        with no_waits() as clock, pytest.raises(ConnectionError):
            presets.aws()(_always_fails)()
        assert len(clock.sleeps) == 2
        assert all(0.1 <= w <= 20.0 for w in clock.sleeps)

    def test_overrides(self) -> None:
        """Keywords override any field."""
        assert presets.aws(stop=after_attempts(5)).stop == after_attempts(5)
