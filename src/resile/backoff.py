"""Delay strategies: how long to wait before attempt ``n + 1``.

Every strategy computes a raw delay from the attempt number (counted from 1:
``delay(1)`` is the wait after the first failure), caps it at ``max_delay``
and then applies a jitter mode:

======================  ==============================================
``"none"``              ``d``
``"full"``              ``uniform(0, d)``
``"equal"``             ``d / 2 + uniform(0, d / 2)``
``r`` (a float 0..1)    ``uniform(d * (1 - r), d * (1 + r))``, capped
======================  ==============================================

Full and equal jitter come from the AWS Architecture Blog's "Exponential
Backoff And Jitter" (2015); the randomization factor ``r`` is the one of Go's
``cenkalti/backoff``. A delay is never negative, never NaN, and never above
``max_delay``.

Strategies are immutable values: they compare equal by configuration, and
``to_dict()`` / ``Backoff.from_dict()`` round-trip them through JSON so that
the durable queue can store a policy with each task.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from resile._time import seconds as _seconds

__all__ = [
    "Backoff",
    "Constant",
    "DecorrelatedJitter",
    "Exponential",
    "Jitter",
    "Linear",
]

Jitter = Literal["none", "full", "equal"] | float
Duration = float | timedelta

# Without a cap an exponential overflows; no wait is longer than this (~31.7 years).
_CEILING = 1e9


def _check_jitter(jitter: object, owner: str) -> Jitter:
    if jitter in ("none", "full", "equal"):
        return jitter  # type: ignore[return-value,unused-ignore]
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
        raise ValueError(
            f'{owner}: jitter must be "none", "full", "equal" or a randomization factor '
            f"between 0 and 1, got {jitter!r}"
        )
    if not 0.0 <= jitter <= 1.0:  # also rejects NaN
        raise ValueError(
            f"{owner}: jitter (randomization factor) must be between 0 and 1, got {jitter!r}"
        )
    return float(jitter)


class Backoff(ABC):
    """A delay strategy. Subclasses define the raw delay of attempt ``n``.

    Args (common to every strategy, keyword-only):
        max_delay: the cap in seconds (or a ``timedelta``); ``None`` for none.
        jitter: ``"none"``, ``"full"``, ``"equal"`` or a randomization factor
            in ``[0, 1]``.
        seed: seed of the strategy's own RNG, for reproducible sequences.

    Raises:
        ValueError: a negative, NaN or infinite duration, a cap below the
            initial delay, a jitter mode that does not exist; the message
            names the field and the value.
    """

    __slots__ = ("_rng", "jitter", "max_delay", "seed")
    kind: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]
    _registry: ClassVar[dict[str, type[Backoff]]] = {}

    max_delay: float | None
    jitter: Jitter
    seed: int | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Backoff._registry[cls.kind] = cls

    def _setup(self, max_delay: Duration | None, jitter: object, seed: int | None) -> None:
        owner = type(self).__name__
        self.max_delay = None if max_delay is None else _seconds(max_delay, "max_delay", owner)
        self.jitter = _check_jitter(jitter, owner)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"{owner}: seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._rng = random.Random(seed)

    def _check_cap(self, field: str, value: float) -> None:
        if self.max_delay is not None and self.max_delay < value:
            raise ValueError(
                f"{type(self).__name__}: max_delay ({self.max_delay!r}) must not be below "
                f"{field} ({value!r})"
            )

    @abstractmethod
    def _raw(self, attempt: int, previous: float | None) -> float:
        """The delay of ``attempt`` before the cap and the jitter."""

    def delay(self, attempt: int, previous: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (counted from 1).

        ``previous`` is the delay actually used last time; only
        ``DecorrelatedJitter`` needs it, and estimates it when it is missing.
        """
        if attempt < 1:
            raise ValueError(f"{type(self).__name__}.delay: attempt must be >= 1, got {attempt!r}")
        cap = _CEILING if self.max_delay is None else self.max_delay
        d = self._raw(attempt, previous)
        if not d < cap:  # also catches inf and NaN from overflow
            d = cap
        return self._jittered(d, 0.0, cap)

    def _jittered(self, d: float, low: float, cap: float) -> float:
        jitter = self.jitter
        if jitter == "none" or d <= low:
            return d
        if jitter == "full":
            return low + (d - low) * self._rng.random()
        if jitter == "equal":
            half = (d - low) / 2.0
            return low + half + half * self._rng.random()
        r = float(jitter)
        return min(cap, max(0.0, d * (1.0 - r) + 2.0 * r * d * self._rng.random()))

    def delays(self) -> Iterator[float]:
        """The endless sequence of delays for attempts 1, 2, 3, ..."""
        previous: float | None = None
        attempt = 0
        while True:
            attempt += 1
            previous = self.delay(attempt, previous)
            yield previous

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description that ``Backoff.from_dict`` turns back into an equal strategy."""
        data: dict[str, Any] = {"type": self.kind}
        for name in self._fields:
            data[name] = getattr(self, name)
        data["max_delay"] = self.max_delay
        data["jitter"] = self.jitter
        if self.seed is not None:
            data["seed"] = self.seed
        return data

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Backoff:
        """Rebuild a strategy from ``to_dict()`` output.

        Raises:
            ValueError: an unknown ``type``, a missing or invalid field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Backoff.from_dict: expected a mapping, got {data!r}")
        kind = data.get("type")
        cls = Backoff._registry.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(
                f"Backoff.from_dict: type must be one of {sorted(Backoff._registry)}, got {kind!r}"
            )
        args = {k: v for k, v in data.items() if k != "type"}
        try:
            return cls(**args)
        except TypeError as exc:
            raise ValueError(f"Backoff.from_dict: bad fields for {kind!r}: {exc}") from None

    def _key(self) -> tuple[Any, ...]:
        return (
            self.kind,
            *(getattr(self, n) for n in self._fields),
            self.max_delay,
            self.jitter,
            self.seed,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backoff):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n)!r}" for n in self._fields]
        if self.max_delay is not None:
            parts.append(f"max_delay={self.max_delay!r}")
        parts.append(f"jitter={self.jitter!r}")
        if self.seed is not None:
            parts.append(f"seed={self.seed!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class Constant(Backoff):
    """The same wait every time: ``d(n) = delay``.

    Default jitter: ``"none"``.
    """

    __slots__ = ("delay_s",)
    kind = "constant"
    _fields = ("delay_s",)

    def __init__(
        self,
        delay: Duration = 1.0,
        *,
        max_delay: Duration | None = None,
        jitter: Jitter = "none",
        seed: int | None = None,
    ) -> None:
        self.delay_s = _seconds(delay, "delay", "Constant")
        self._setup(max_delay, jitter, seed)
        self._check_cap("delay", self.delay_s)

    def _raw(self, attempt: int, previous: float | None) -> float:
        return self.delay_s

    def delay(self, attempt: int, previous: float | None = None) -> float:
        if self.jitter == "none" and attempt >= 1:  # the common case, kept cheap
            return self.delay_s
        return super().delay(attempt, previous)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["delay"] = data.pop("delay_s")
        return data

    def __repr__(self) -> str:
        return super().__repr__().replace("delay_s=", "delay=", 1)


class Linear(Backoff):
    """A wait that grows by a fixed step: ``d(n) = initial + increment * (n - 1)``.

    Default jitter: ``"none"``.
    """

    __slots__ = ("increment", "initial")
    kind = "linear"
    _fields = ("initial", "increment")

    def __init__(
        self,
        initial: Duration = 1.0,
        increment: Duration = 1.0,
        *,
        max_delay: Duration | None = None,
        jitter: Jitter = "none",
        seed: int | None = None,
    ) -> None:
        self.initial = _seconds(initial, "initial", "Linear")
        self.increment = _seconds(increment, "increment", "Linear")
        self._setup(max_delay, jitter, seed)
        self._check_cap("initial", self.initial)

    def _raw(self, attempt: int, previous: float | None) -> float:
        return self.initial + self.increment * (attempt - 1)


class Exponential(Backoff):
    """A wait that grows geometrically: ``d(n) = initial * multiplier ** (n - 1)``.

    Default jitter: ``"full"`` (the AWS analysis: full jitter does the least
    total work of the common schemes). ``multiplier`` must be >= 1.
    """

    __slots__ = ("initial", "multiplier")
    kind = "exponential"
    _fields = ("initial", "multiplier")

    def __init__(
        self,
        initial: Duration = 0.1,
        multiplier: float = 2.0,
        *,
        max_delay: Duration | None = None,
        jitter: Jitter = "full",
        seed: int | None = None,
    ) -> None:
        self.initial = _seconds(initial, "initial", "Exponential")
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, (int, float))
            or not 1.0 <= multiplier < math.inf
        ):
            raise ValueError(
                f"Exponential: multiplier must be a finite number >= 1, got {multiplier!r}"
            )
        self.multiplier = float(multiplier)
        self._setup(max_delay, jitter, seed)
        self._check_cap("initial", self.initial)

    def _raw(self, attempt: int, previous: float | None) -> float:
        try:
            return self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            # 0 * inf would be NaN; a zero initial delay stays zero however large the attempt.
            return math.inf if self.initial > 0 else 0.0


class DecorrelatedJitter(Backoff):
    """AWS "decorrelated jitter": ``d(n) = min(cap, uniform(base, d(n-1) * 3))``, ``d(0) = base``.

    The jitter mode chooses where in ``[base, 3 * previous]`` the delay falls
    before the cap: ``"full"`` (the default) is the AWS formula, ``"none"``
    the upper end. The cap applies after the draw, as in the AWS code, so
    once the delays reach the cap most of them stay there. Without
    ``previous`` (a stored task that lost it), the un-jittered previous delay
    ``min(cap, base * 3 ** (n - 1))`` stands in.
    ``cap`` and ``max_delay`` are the same setting.
    """

    __slots__ = ("base",)
    kind = "decorrelated"
    _fields = ("base",)

    def __init__(
        self,
        base: Duration = 0.1,
        cap: Duration | None = None,
        *,
        max_delay: Duration | None = None,
        jitter: Jitter = "full",
        seed: int | None = None,
    ) -> None:
        if cap is not None and max_delay is not None and cap != max_delay:
            raise ValueError(
                f"DecorrelatedJitter: cap ({cap!r}) and max_delay ({max_delay!r}) are the same "
                "setting; give one"
            )
        self.base = _seconds(base, "base", "DecorrelatedJitter")
        self._setup(cap if cap is not None else max_delay, jitter, seed)
        self._check_cap("base", self.base)

    @property
    def cap(self) -> float | None:
        """The cap; the same as ``max_delay``."""
        return self.max_delay

    def _raw(self, attempt: int, previous: float | None) -> float:
        if previous is None:
            try:
                previous = self.base * 3.0 ** (attempt - 1)
            except OverflowError:
                previous = math.inf
        return max(self.base, previous * 3.0)

    def delay(self, attempt: int, previous: float | None = None) -> float:
        if attempt < 1:
            raise ValueError(f"DecorrelatedJitter.delay: attempt must be >= 1, got {attempt!r}")
        cap = _CEILING if self.max_delay is None else self.max_delay
        upper = self._raw(attempt, previous)
        # No delay of this strategy exceeds the cap, so 3 * cap bounds the draw (and keeps it finite).
        if not upper < 3.0 * cap:
            upper = 3.0 * cap
        return min(cap, self._jittered(upper, self.base, cap))
