"""Deadlines that travel down a call chain, as Go's ``context.WithDeadline`` does.

``with deadline(2.0):`` sets an absolute instant (on resile's monotonic clock)
in a ``contextvar``. Everything called inside sees it: ``remaining()`` gives
the time left to pass on as an HTTP or database timeout, the retry engine
never starts a wait it cannot finish in time, and nested deadlines take the
earlier of the two (an inner block can shorten the time, never extend it).

``async with deadline(2.0):`` also cancels the block when the time is up,
under asyncio or trio, and raises ``DeadlineExceeded`` (a ``TimeoutError``).
A sync block cannot be interrupted; it sees the deadline and ``check()``.
"""

from __future__ import annotations

from contextvars import Token
from datetime import timedelta
from types import TracebackType

from resile import _aio, _time
from resile.errors import DeadlineExceeded

__all__ = ["check", "current_deadline", "deadline", "remaining"]

_DEADLINE = _time.DEADLINE


def current_deadline() -> float | None:
    """The instant (resile's monotonic clock) the current deadline falls at, or ``None`` for none."""
    return _DEADLINE.get()


def remaining() -> float | None:
    """Seconds left before the current deadline (never negative), or ``None`` when there is none."""
    when = _DEADLINE.get()
    if when is None:
        return None
    return max(0.0, when - _time.clock.monotonic())


def check() -> None:
    """Raise ``DeadlineExceeded`` if the current deadline has passed; for sync code's checkpoints."""
    when = _DEADLINE.get()
    if when is not None and _time.clock.monotonic() >= when:
        raise DeadlineExceeded(f"deadline passed {_time.clock.monotonic() - when:.3f} s ago")


class deadline:
    """Run a block under a deadline ``seconds`` from now (or ``at`` an instant).

    Args:
        seconds: time allowed, as seconds or a ``timedelta``; ``None`` for no
            limit of its own (the enclosing deadline, if any, still holds).
        at: an absolute instant on resile's monotonic clock instead.

    Raises:
        ValueError: negative, NaN or infinite ``seconds``; both or neither of
            ``seconds`` and ``at`` given.
        DeadlineExceeded: (``async with`` only) when the block is canceled
            because this deadline passed.
    """

    __slots__ = ("_at", "_seconds", "_timeout", "_token", "when")

    def __init__(
        self, seconds: float | timedelta | None = None, *, at: float | None = None
    ) -> None:
        if seconds is not None and at is not None:
            raise ValueError(f"deadline: give seconds or at, not both (got {seconds!r}, {at!r})")
        self._seconds = None if seconds is None else _time.seconds(seconds, "seconds", "deadline")
        if at is not None and (
            isinstance(at, bool) or not isinstance(at, (int, float)) or at != at
        ):
            raise ValueError(f"deadline: at must be a monotonic instant, got {at!r}")
        self._at = at
        self.when: float | None = None
        self._token: Token[float | None] | None = None
        self._timeout: _aio.Timeout | None = None

    @property
    def remaining(self) -> float | None:
        """Seconds left in this block (``None`` when unlimited)."""
        if self.when is None:
            return None
        return max(0.0, self.when - _time.clock.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.when is not None and _time.clock.monotonic() >= self.when

    def _enter(self) -> bool:
        """Set the contextvar; True when this block tightened the deadline (so it must enforce it)."""
        outer = _DEADLINE.get()
        mine = self._at
        if self._seconds is not None:
            mine = _time.clock.monotonic() + self._seconds
        when = outer if mine is None or (outer is not None and outer <= mine) else mine
        self.when = when
        self._token = _DEADLINE.set(when)
        return when is not None and when != outer

    def _exit(self) -> None:
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None

    def __enter__(self) -> deadline:
        self._enter()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()

    async def __aenter__(self) -> deadline:
        if not self._enter() or self.when is None:
            return self
        self._timeout = _aio.Timeout(self.when - _time.clock.monotonic())
        await self._timeout.enter()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            timeout, self._timeout = self._timeout, None
            if timeout is not None and await timeout.exit(et, e, tb):
                raise DeadlineExceeded(self._message()) from None
        finally:
            self._exit()

    def _message(self) -> str:
        span = f"{self._seconds:g} s" if self._seconds is not None else "its deadline"
        return f"deadline exceeded: the block did not finish within {span}"

    def __repr__(self) -> str:
        return f"deadline(seconds={self._seconds!r}, when={self.when!r})"
