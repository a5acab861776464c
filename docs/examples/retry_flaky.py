"""A flaky call retried with exponential backoff and full jitter (docs/retry.md).

Run: ``python docs/examples/retry_flaky.py`` (it waits about a second in all).
"""

from __future__ import annotations

import asyncio

from resile import Constant, Exponential, Retrying, RetryState, after_attempts, after_elapsed, retry

failures_left = 3


def log_retry(state: RetryState) -> None:
    print(f"attempt {state.attempt} failed ({state.exception!r}); next in {state.next_delay:.3f} s")


@retry(
    on=(ConnectionError, TimeoutError),
    backoff=Exponential(0.1, max_delay=1.0, seed=7),
    stop=after_attempts(5) | after_elapsed(10),
    on_retry=log_retry,
)
def fetch(url: str) -> bytes:
    """Fail three times, then answer."""
    global failures_left
    if failures_left > 0:
        failures_left -= 1
        raise ConnectionError(f"{url} refused the connection")
    return b"hello"


answers = iter([False, False, True])


@retry(on_result=lambda ok: not ok, backoff=Constant(0.05), stop=after_attempts(3))
async def ping() -> bool:
    """A falsy result counts as a failure."""
    return next(answers)


def main() -> None:
    print("fetch ->", fetch("http://example.invalid"))
    print("stats:", fetch.statistics.as_dict())  # type: ignore[attr-defined]
    print("ping ->", asyncio.run(ping()))
    # The same policy around a block of code:
    for attempt in Retrying(backoff=Constant(0), stop=after_attempts(2)):
        with attempt:
            print("block attempt", attempt.number)
    # Give up: the last exception comes back with a note saying how many attempts were made.
    try:
        always_down()
    except ConnectionError as exc:
        print("gave up:", exc, "|", getattr(exc, "__notes__", [""])[0])


@retry(stop=after_attempts(2), backoff=Constant(0))
def always_down() -> None:
    raise ConnectionError("still down")


if __name__ == "__main__":
    main()
