"""Stop conditions: when to give up instead of waiting for another attempt.

A condition is asked after each failed attempt, with the number of attempts
made, the seconds elapsed since the first one started and the delay the engine
is about to wait. Conditions combine with ``|`` (stop when either says so) and
``&`` (stop when both do).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from resile import _time
from resile._time import seconds as _seconds

__all__ = [
    "Stop",
    "after_attempts",
    "after_elapsed",
    "at_deadline",
    "never",
]


class Stop(ABC):
    """A stop condition. Combine with ``|`` and ``&``."""

    __slots__ = ()
    # True when the condition reads the elapsed time, so the engine reads the clock at the start.
    needs_clock: bool = False

    @abstractmethod
    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        """True to give up after ``attempts`` attempts, ``elapsed`` seconds, before waiting ``next_delay``."""

    def __or__(self, other: Stop) -> Stop:
        if not isinstance(other, Stop):
            return NotImplemented
        return _Any(self, other)

    def __and__(self, other: Stop) -> Stop:
        if not isinstance(other, Stop):
            return NotImplemented
        return _All(self, other)

    def max_attempts(self) -> float:
        """The most attempts this condition ever allows (``inf`` when unbounded by count)."""
        return math.inf

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; ``Stop.from_dict`` rebuilds it."""
        raise TypeError(f"{self!r} cannot be stored: it refers to a moment in this process")

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Stop:
        """Rebuild a condition from ``to_dict()`` output.

        Raises:
            ValueError: an unknown ``type`` or invalid fields.
        """
        kind = data.get("type") if isinstance(data, Mapping) else None
        try:
            if kind == "after_attempts":
                return after_attempts(data["attempts"])
            if kind == "after_elapsed":
                return after_elapsed(data["seconds"])
            if kind == "never":
                return never
            if kind in ("any", "all"):
                parts = [Stop.from_dict(p) for p in data["of"]]
                combined = parts[0]
                for p in parts[1:]:
                    combined = (combined | p) if kind == "any" else (combined & p)
                return combined
        except (KeyError, IndexError, TypeError) as exc:
            # A missing field or a value of the wrong kind: the documented error is ValueError.
            raise ValueError(f"Stop.from_dict: bad fields in {data!r}: {exc!r}") from None
        raise ValueError(f"Stop.from_dict: unknown stop condition {data!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class _Combined(Stop):
    """``a | b`` and ``a & b``: a condition over parts, told by the subclass how to combine."""

    __slots__ = ("needs_clock", "parts")
    parts: tuple[Stop, ...]
    kind: ClassVar[str]  # the ``to_dict`` type

    def __init__(self, *parts: Stop) -> None:
        self.parts = parts
        self.needs_clock = any(p.needs_clock for p in parts)

    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        return self._combine(p.should_stop(attempts, elapsed, next_delay) for p in self.parts)

    def max_attempts(self) -> float:
        return self._bound(p.max_attempts() for p in self.parts)

    def _combine(self, outcomes: Iterator[bool]) -> bool:
        raise NotImplementedError

    def _bound(self, limits: Iterator[float]) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "of": [p.to_dict() for p in self.parts]}


class _Any(_Combined):
    __slots__ = ()
    kind = "any"

    def __init__(self, *parts: Stop) -> None:
        flat: list[Stop] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, _Any) else (p,))
        super().__init__(*flat)

    def _combine(self, outcomes: Iterator[bool]) -> bool:
        return any(outcomes)

    def _bound(self, limits: Iterator[float]) -> float:
        return min(limits)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.parts))


class _All(_Combined):
    __slots__ = ()
    kind = "all"

    def _combine(self, outcomes: Iterator[bool]) -> bool:
        return all(outcomes)

    def _bound(self, limits: Iterator[float]) -> float:
        return max(limits)

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.parts)) + ")"


class after_attempts(Stop):
    """Give up once ``attempts`` attempts have been made (the first call counts).

    Raises:
        ValueError: ``attempts`` is not an int >= 1.
    """

    __slots__ = ("attempts",)

    def __init__(self, attempts: int) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"after_attempts: attempts must be an int >= 1, got {attempts!r}")
        self.attempts = attempts

    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        return attempts >= self.attempts

    def max_attempts(self) -> float:
        return self.attempts

    def to_dict(self) -> dict[str, Any]:
        return {"type": "after_attempts", "attempts": self.attempts}

    def __repr__(self) -> str:
        return f"after_attempts({self.attempts})"


class after_elapsed(Stop):
    """Give up rather than start a wait that would end more than ``seconds`` after the first attempt began.

    This is cenkalti/backoff's ``MaxElapsedTime``: the check looks ahead by
    the next delay, so the total time never overshoots by a whole wait.

    Raises:
        ValueError: negative, NaN or infinite ``seconds``.
    """

    __slots__ = ("seconds",)
    needs_clock = True

    def __init__(self, seconds: float | timedelta) -> None:
        self.seconds = _seconds(seconds, "seconds", "after_elapsed")

    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        return elapsed + next_delay > self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"type": "after_elapsed", "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"after_elapsed({self.seconds!r})"


class at_deadline(Stop):
    """Give up rather than start a wait that would end past an absolute moment.

    Args:
        when: an instant on resile's monotonic clock (as ``resile.deadline``
            uses), or an aware ``datetime`` in wall-clock time.
    """

    __slots__ = ("when",)

    def __init__(self, when: float | datetime) -> None:
        if isinstance(when, datetime):
            if when.tzinfo is None:
                raise ValueError(
                    f"at_deadline: when must be an aware datetime (with tzinfo), got {when!r}"
                )
            left = (when - datetime.now(timezone.utc)).total_seconds()
            when = _time.clock.monotonic() + left
        elif isinstance(when, bool) or not isinstance(when, (int, float)) or math.isnan(when):
            raise ValueError(
                f"at_deadline: when must be a monotonic instant or a datetime, got {when!r}"
            )
        self.when = float(when)

    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        return _time.clock.monotonic() + next_delay > self.when

    def __repr__(self) -> str:
        return f"at_deadline({self.when!r})"


class _Never(Stop):
    __slots__ = ()

    def should_stop(self, attempts: int, elapsed: float, next_delay: float) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"type": "never"}

    def __repr__(self) -> str:
        return "never"


never: Stop = _Never()
"""Never give up (combine it with a deadline, or let a ``Permanent`` error end it)."""
