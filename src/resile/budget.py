"""Retry budgets: a shared limit on retries, so a failing dependency is not hit by a storm.

``RetryBudget`` is gRPC's retry throttling (gRFC A6, "Retry Throttling"): a
token bucket of ``max_tokens``; every failed attempt takes one token, every
success gives back ``token_ratio``; retries are allowed only while more than
half the bucket is left. Many calls share one budget, so when a dependency
dies the fleet of callers stops retrying after a bounded number of extra calls.
"""

from __future__ import annotations

import threading

from resile import instrument

__all__ = ["RetryBudget"]


class RetryBudget:
    """A token bucket that retries draw from (gRPC retry throttling).

    Args:
        max_tokens: the bucket size, in ``(0, 1000]`` (gRPC's range).
        token_ratio: tokens a success gives back, in ``(0, 1]``.
        name: the budget's name in metrics and logs (``resile_budget_rejections_total``).

    Formula: on failure ``tokens = max(0, tokens - 1)``; on success
    ``tokens = min(max_tokens, tokens + token_ratio)``; a retry is allowed
    when ``tokens > max_tokens / 2``.

    Raises:
        ValueError: a value outside those ranges, named in the message.
    """

    __slots__ = ("_lock", "_tokens", "max_tokens", "name", "token_ratio")

    def __init__(
        self, max_tokens: float = 10.0, token_ratio: float = 0.1, *, name: str = "default"
    ) -> None:
        if (
            isinstance(max_tokens, bool)
            or not isinstance(max_tokens, (int, float))
            or not (0 < max_tokens <= 1000)
        ):
            raise ValueError(f"RetryBudget: max_tokens must be in (0, 1000], got {max_tokens!r}")
        if (
            isinstance(token_ratio, bool)
            or not isinstance(token_ratio, (int, float))
            or not (0 < token_ratio <= 1)
        ):
            raise ValueError(f"RetryBudget: token_ratio must be in (0, 1], got {token_ratio!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"RetryBudget: name must be a non-empty string, got {name!r}")
        self.max_tokens = float(max_tokens)
        self.token_ratio = float(token_ratio)
        self.name = name
        self._tokens = self.max_tokens
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        """Tokens left now."""
        return self._tokens

    def record_success(self) -> None:
        """A call succeeded: give back ``token_ratio``."""
        with self._lock:
            self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)

    def record_failure(self) -> None:
        """An attempt failed: take one token."""
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1.0)

    def can_retry(self) -> bool:
        """True while more than half the bucket is left (a refusal is a ``budget.rejected`` event)."""
        allowed = self._tokens > self.max_tokens / 2
        if not allowed and instrument.hooks:
            instrument.emit(instrument.BudgetEvent(instrument.Kind.BUDGET_REJECTED, self.name))
        return allowed

    def __repr__(self) -> str:
        named = "" if self.name == "default" else f"name={self.name!r}, "
        return (
            f"RetryBudget({named}max_tokens={self.max_tokens:g}, "
            f"token_ratio={self.token_ratio:g}, tokens={self._tokens:g})"
        )
