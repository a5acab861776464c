"""The MicroPython BackoffExecutor API keeping a flaky connection attempt going (docs/executor.md).

Run: ``python docs/examples/executor_connect.py`` (waits 0.05 + 0.1 + 0.2 s).
"""

from __future__ import annotations

import asyncio

from resile import BackoffExecutor

attempts = 0


async def connect_mqtt() -> bool:
    """Refused twice, then a falsy answer, then connected."""
    global attempts
    attempts += 1
    if attempts <= 2:
        raise ConnectionRefusedError("broker not ready")
    return attempts > 3  # the third attempt returns False: also a failure


def on_fail(exc: BaseException, retry_count: int, next_delay_ms: int) -> None:
    print(f"failure {retry_count}: {exc}; waiting {next_delay_ms} ms")


async def on_success(result: object) -> None:
    print("connected:", result)


def on_retry(last_exc: BaseException) -> None:
    print("gave up after the last failure:", repr(last_exc))


async def main() -> None:
    executor = BackoffExecutor(base_delay_ms=50, max_backoff_ms=1000, max_retry=5)
    ok = await executor.execute(
        connect_mqtt, on_success=on_success, on_fail=on_fail, on_retry=on_retry
    )
    print("execute ->", ok, "| running:", executor.running)

    # Out of retries: max_retry=1 allows two attempts, then on_retry(last_exc) and False.
    def always_down() -> bool:
        raise OSError("no route to host")

    quick = BackoffExecutor(base_delay_ms=10, max_retry=1)
    print("execute ->", await quick.execute(always_down, on_fail=on_fail, on_retry=on_retry))

    # Outside an event loop (here: a worker thread) the same call blocks and returns the bool:
    print("execute in a thread ->", await asyncio.to_thread(quick.execute, lambda: "ready"))


if __name__ == "__main__":
    asyncio.run(main())
