"""A retry storm cut by a shared RetryBudget, and an AdaptiveThrottle shedding load.

Run: python docs/examples/budget.py
"""

from __future__ import annotations

import asyncio

from resile import AdaptiveThrottle, Constant, RetryBudget, Throttled, after_attempts, retry

calls = 0


async def dead_dependency() -> None:
    global calls
    calls += 1
    await asyncio.sleep(0)
    raise ConnectionError("connection refused")


async def storm(budget: RetryBudget | None) -> int:
    """500 callers at once, each allowed 5 attempts, against a dependency that is down."""
    global calls
    calls = 0
    policy = retry(stop=after_attempts(5), backoff=Constant(0.001), budget=budget)
    call = policy(dead_dependency)
    results = await asyncio.gather(*(call() for _ in range(500)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    return calls


print("without a budget:", asyncio.run(storm(None)), "calls")
# One budget shared by every caller: retries stop once half the 10 tokens are spent.
print(
    "with RetryBudget(10, 0.1):",
    asyncio.run(storm(RetryBudget(max_tokens=10, token_ratio=0.1))),
    "calls",
)

# AdaptiveThrottle: after the backend refused everything, most requests never leave.
throttle = AdaptiveThrottle(k=2.0, window=120, seed=1)


@throttle
def send() -> None:
    raise ConnectionError("503 overloaded")


sent = rejected = 0
for _ in range(100):
    try:
        send()
    except ConnectionError:
        sent += 1
    except Throttled:
        rejected += 1
print(f"throttle: {sent} sent, {rejected} rejected locally, p = {throttle.probability():.2f}")
