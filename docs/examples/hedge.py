"""Hedged requests: a slow replica does not make the caller slow.

Run: python docs/examples/hedge.py
"""

from __future__ import annotations

import asyncio
import time

from resile import RetryBudget, hedge

# The first copy hits a stuck replica (2 s); later copies answer in 10 ms.
LATENCIES = [2.0, 0.01, 0.01]
started: list[int] = []
canceled: list[int] = []


@hedge(delay=0.05, max_attempts=3, budget=RetryBudget(max_tokens=10))
async def lookup(user_id: int) -> str:
    """An idempotent read: safe to send twice."""
    copy = len(started) + 1
    started.append(copy)
    try:
        await asyncio.sleep(LATENCIES[copy - 1])
    except asyncio.CancelledError:
        canceled.append(copy)
        raise
    return f"user {user_id} (answered by copy {copy})"


async def main() -> None:
    start = time.perf_counter()
    print(await lookup(42))
    elapsed = time.perf_counter() - start
    print(f"copies started: {started}; canceled: {canceled}")
    print(f"fast: {elapsed < 1.0} (took {elapsed:.2f} s, the stuck replica needs 2 s)")


asyncio.run(main())
