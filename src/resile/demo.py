"""``make demo``: a flaky service, retried with exponential backoff and full jitter.

Prints each attempt's time and the delay chosen before the next one, then the
policy's statistics. Run: ``python -m resile.demo [--failures N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import time

import resile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--failures", type=int, default=4, help="failures before success")
    parser.add_argument("--seed", type=int, default=None, help="seed of the jitter RNG")
    args = parser.parse_args(argv)
    if args.failures < 0:
        parser.error(f"--failures must be >= 0, got {args.failures}")

    start = time.monotonic()
    left = args.failures

    def log_retry(state: resile.RetryState) -> None:
        print(
            f"  t={time.monotonic() - start:6.3f}s  attempt {state.attempt} failed: "
            f"{state.exception!r}; next in {state.next_delay * 1000:6.1f} ms"
        )

    @resile.retry(
        on=ConnectionError,
        backoff=resile.Exponential(0.05, max_delay=1.0, seed=args.seed),
        stop=resile.after_attempts(args.failures + 2) | resile.after_elapsed(30),
        on_retry=log_retry,
    )
    def call_flaky_service() -> str:
        nonlocal left
        if left:
            left -= 1
            raise ConnectionError("service unavailable")
        return "200 OK"

    print("resile retry demo: Exponential(0.05 s, x2, cap 1 s, full jitter)")
    result = call_flaky_service()
    print(f"  t={time.monotonic() - start:6.3f}s  succeeded: {result}")
    print(f"  statistics: {call_flaky_service.statistics}")  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
