"""Ready-made policies with the documented defaults of the peers.

Each preset returns a fresh ``Retrying`` policy (decorate with it, iterate
over it, or read its ``backoff`` and ``stop`` for a stored task).
"""

from __future__ import annotations

from typing import Any

from resile.backoff import DecorrelatedJitter, Exponential
from resile.retry import Retrying
from resile.stop import after_attempts, after_elapsed

__all__ = ["aws", "go"]


def go(**overrides: Any) -> Retrying:
    """cenkalti/backoff v5's ``NewExponentialBackOff`` defaults.

    Initial interval 0.5 s, randomization factor 0.5, multiplier 1.5, max
    interval 60 s, max elapsed time 15 min (source: the v5 package's
    ``DefaultInitialInterval`` & co. constants). Keywords override any
    ``Retrying`` field.
    """
    fields: dict[str, Any] = {
        "backoff": Exponential(0.5, multiplier=1.5, max_delay=60.0, jitter=0.5),
        "stop": after_elapsed(15 * 60),
    }
    fields.update(overrides)
    return Retrying(**fields)


def aws(**overrides: Any) -> Retrying:
    """AWS decorrelated jitter with the AWS SDKs' "standard" retry mode limits.

    ``DecorrelatedJitter(base=0.1, cap=20)``: the 100 ms base and 20 s cap
    of the standard mode; at most 3 attempts, its default (sources: the AWS
    Architecture Blog's "Exponential Backoff And Jitter" and the AWS SDKs and
    Tools reference guide, "Retry behavior"). Keywords override any field.
    """
    fields: dict[str, Any] = {
        "backoff": DecorrelatedJitter(0.1, 20.0),
        "stop": after_attempts(3),
    }
    fields.update(overrides)
    return Retrying(**fields)
