"""A deadline that travels down the call chain (docs/deadline.md).

Run: ``python docs/examples/deadline_budget.py`` (asyncio; pass ``trio`` to use trio).
"""

from __future__ import annotations

import sys

import anyio

from resile import DeadlineExceeded, deadline, remaining, retry


async def query(sql: str) -> str:
    """A database call that takes its timeout from the deadline in force."""
    left = remaining()
    print(f"query {sql!r} with a timeout of {left:.2f} s" if left is not None else "no deadline")
    await anyio.sleep(0.01)
    return "rows"


async def stuck() -> None:
    """A call that never answers."""
    await anyio.Event().wait()


async def generous_callee() -> None:
    """A callee asking for 10 s inside a caller's 2 s: the earlier deadline wins."""
    async with deadline(10.0):
        left = remaining()
        assert left is not None and left <= 2.0
        print(f"callee sees {left:.2f} s left")


@retry(on=ConnectionError, timeout=0.5)
async def handler() -> str:
    """The whole call, retries included, must end within 0.5 s."""
    return await query("select 1")


async def main() -> None:
    print("handler ->", await handler())
    async with deadline(2.0):
        await generous_callee()
    try:
        async with deadline(0.05):
            await stuck()
    except DeadlineExceeded as exc:
        print("canceled:", exc, "| a TimeoutError:", isinstance(exc, TimeoutError))


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
