"""Stacking: total timeout -> retry -> circuit breaker -> per-attempt timeout, with a fallback.

Run: python docs/examples/composition.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from resile import (
    CircuitBreaker,
    Constant,
    RetryState,
    after_attempts,
    deadline,
    retry,
)


class Inventory:
    """Hangs on its first ``hangs`` calls (a stuck connection), then answers."""

    def __init__(self, hangs: int) -> None:
        self.hangs = hangs
        self.calls = 0

    async def stock(self, sku: str) -> int:
        self.calls += 1
        if self.calls <= self.hangs:
            await asyncio.sleep(3600)
        return 7


def cached(state: RetryState) -> int:
    """The fallback: a stale value, computed from how the call ended."""
    print(f"  fallback after {state.attempt} attempt(s) ({state.gave_up_because}): "
          f"{type(state.exception).__name__}")  # fmt: skip
    return 0


def make_client(inventory: Inventory, recovery: float) -> Callable[[str], Awaitable[int]]:
    breaker = CircuitBreaker(failure_threshold=2, recovery=Constant(recovery), name="inventory")

    @retry(  # 1. outermost: the whole call, waits included, within 1 s
        timeout=1.0,
        stop=after_attempts(8),
        backoff=Constant(0.01),
        fallback=cached,  # instead of raising on give-up
    )
    @breaker  # 2. counts every attempt's outcome, timeouts included
    async def stock(sku: str) -> int:
        async with deadline(0.05):  # 3. innermost: one attempt may take 50 ms
            return await inventory.stock(sku)

    return stock


async def main() -> None:
    # Two attempts time out -> the breaker opens -> @retry waits 0.1 s for the probe
    # (it fits the 1 s deadline) -> the probe succeeds.
    inventory = Inventory(hangs=2)
    stock = make_client(inventory, recovery=0.1)
    print("recovering service:", await stock("sku-1"), f"({inventory.calls} calls)")

    # The service stays stuck and the breaker's open period (5 s) does not fit the 1 s
    # deadline: @retry gives up at once on CircuitOpen and the fallback answers.
    inventory = Inventory(hangs=1000)
    stock = make_client(inventory, recovery=5.0)
    print("stuck service:", await stock("sku-1"), f"({inventory.calls} calls)")


asyncio.run(main())
