"""Client-side adaptive throttling, from the Google SRE book ("Handling Overload").

Each client remembers, over a sliding window (two minutes by default), how
many requests it attempted and how many the backend accepted. When the
backend starts refusing work, the client rejects a share of new requests
itself, before they leave the process, with probability::

    p = max(0, (requests - k * accepts) / (requests + 1))

With ``k = 2`` the client lets through about twice as many requests as the
backend accepts: enough to notice a recovery, not enough to bury it. A
request rejected locally counts as a request and not as an accept, so the
rejection rate stays up while the backend keeps failing and falls as the
window slides past the failures.

``AdaptiveThrottle`` is also a retry gate: it has the three methods of the
retry engine's budget protocol, so ``@retry(budget=AdaptiveThrottle())``
records every attempt and lets a retry through only when the throttle
admits it.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from resile import _time, _util
from resile.errors import Throttled

__all__ = ["AdaptiveThrottle", "Throttled"]

P = ParamSpec("P")
R = TypeVar("R")

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


class AdaptiveThrottle(_util.Guarded):
    """Reject requests locally while the backend refuses them (SRE book adaptive throttling).

    Args:
        k: the multiplier of accepts, ``>= 1``; 2 is the book's choice, lower
            values throttle more aggressively.
        window: the sliding window, in seconds or a ``timedelta``
            (default 120 s), kept in 20 buckets.
        max_rejection: an upper bound on the rejection probability in
            ``(0, 1]``; the default 1.0 applies the formula as published.
        rejected_on: exceptions that mean the backend refused the request
            (default ``Exception``); any other outcome counts as an accept.
            Used by the decorator and the context manager.
        seed: seed of the throttle's own random source, for reproducible tests.
        name: shown in ``Throttled`` errors.

    Formula: ``p = min(max_rejection, max(0, (requests - k * accepts) / (requests + 1)))``
    over the window, where ``requests`` counts the requests attempted
    (including the ones rejected locally) and ``accepts`` the ones the
    backend accepted.

    Use it three ways: ``allow()`` before a request and ``record(accepted)``
    after one that was allowed; as a decorator or a (sync or async) context
    manager, which raise ``Throttled`` when the request is rejected locally;
    or as ``@retry(budget=throttle)``, where it gates retries only.

    Raises:
        ValueError: ``k`` below 1 or not finite, a window that is not > 0,
            ``max_rejection`` outside ``(0, 1]``; the message names the field.
        TypeError: ``rejected_on`` that is not exception types, a ``seed`` that is not an int.
    """

    __slots__ = ("_buckets", "_lock", "_rng", "k", "max_rejection", "name", "rejected_on", "window")

    def __init__(
        self,
        k: float = 2.0,
        window: float | timedelta = 120.0,
        *,
        max_rejection: float = 1.0,
        rejected_on: ExcTypes = Exception,
        seed: int | None = None,
        name: str = "throttle",
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 1.0 <= k < math.inf:
            raise ValueError(f"AdaptiveThrottle: k must be a finite number >= 1, got {k!r}")
        seconds = _time.positive_seconds(window, "window", "AdaptiveThrottle")
        if (
            isinstance(max_rejection, bool)
            or not isinstance(max_rejection, (int, float))
            or not 0.0 < max_rejection <= 1.0
        ):
            raise ValueError(
                f"AdaptiveThrottle: max_rejection must be in (0, 1], got {max_rejection!r}"
            )
        _util.check_seed(seed, "AdaptiveThrottle")
        self.k = float(k)
        self.window = seconds
        self.max_rejection = float(max_rejection)
        self.rejected_on = _util.exception_types(rejected_on, "rejected_on", "AdaptiveThrottle")
        self.name = name
        self._rng = random.Random(seed)
        self._buckets = _time.Buckets(seconds)
        self._lock = threading.Lock()

    # -- the counters --------------------------------------------------------------------

    def _probability(self, now: float) -> float:
        requests, accepts = self._buckets.sums(now)
        p = (requests - self.k * accepts) / (requests + 1.0)
        return min(self.max_rejection, max(0.0, p))

    def probability(self) -> float:
        """The rejection probability now (see the class docstring for the formula)."""
        with self._lock:
            return self._probability(_time.clock.monotonic())

    @property
    def requests(self) -> int:
        """Requests attempted in the window, including the ones rejected locally."""
        with self._lock:
            return int(self._buckets.sums(_time.clock.monotonic())[0])

    @property
    def accepts(self) -> int:
        """Requests the backend accepted in the window."""
        with self._lock:
            return int(self._buckets.sums(_time.clock.monotonic())[1])

    def allow(self) -> bool:
        """Decide whether to send a request: False (rejected locally) with the current probability.

        A rejection is counted as a request at once. After ``True``, send the
        request and call ``record(accepted)`` with its outcome.
        """
        with self._lock:
            now = _time.clock.monotonic()
            p = self._probability(now)
            if p > 0.0 and self._rng.random() < p:
                self._buckets.add(now, 1, 0)
                return False
            return True

    def record(self, accepted: bool) -> None:
        """Count a request that was sent: ``accepted`` when the backend took it."""
        with self._lock:
            self._buckets.add(_time.clock.monotonic(), 1, 1 if accepted else 0)

    # -- the retry engine's budget protocol ----------------------------------------------

    def record_success(self) -> None:
        """Budget protocol: an attempt succeeded (``record(True)``)."""
        self.record(True)

    def record_failure(self) -> None:
        """Budget protocol: an attempt failed (``record(False)``)."""
        self.record(False)

    def can_retry(self) -> bool:
        """Budget protocol: whether a retry may be sent (``allow()``)."""
        return self.allow()

    # -- decorator and context manager ---------------------------------------------------

    def _enter(self) -> None:
        if not self.allow():
            raise Throttled(self.name, self.probability())

    def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self.record(True)
        elif isinstance(exc, Exception):
            self.record(not isinstance(exc, self.rejected_on))
        # Cancellation and interrupts say nothing about the backend: not counted.

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Wrap ``fn`` (sync or async): each call is admitted by ``allow()`` and recorded.

        Raises:
            Throttled: (from the wrapper) when the call is rejected locally.
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"AdaptiveThrottle: expected a function to wrap, got {fn!r}")
        return _util.guard(fn, self._enter, lambda _, exc: self._exit(exc))

    def __repr__(self) -> str:
        with self._lock:
            now = _time.clock.monotonic()
            requests, accepts = self._buckets.sums(now)
            p = self._probability(now)
        return (
            f"AdaptiveThrottle(name={self.name!r}, k={self.k:g}, window={self.window:g}, "
            f"requests={requests:g}, accepts={accepts:g}, probability={p:.3f})"
        )
