"""What a retry decorator costs: resile beside tenacity, backoff, stamina and a hand-written loop.

One process, one run, the same machine. For each scenario every contender
wraps the same function with "at most 5 attempts, no wait between them";
we time N calls, repeat, and report the median nanoseconds per call and the
ratios to the hand-written ``for``/``try`` loop (the floor) and to resile.

Scenarios:
  (a) sync success path         the function returns at once
  (b) async success path        the same, ``async def``, awaited in one event loop
  (c) sync 3 failures, success  it raises 3 times, then returns (zero waits)
  (d) async 3 failures, success

Run: ``make bench`` or ``.venv/bin/python benchmarks/retry_overhead.py [--quick]``;
``--only 'hand-written loop,resile'`` times those two alone (a before/after of
resile in a few seconds, to alternate with the baseline on a busy machine).
Logging stays at its default configuration (nothing configured). stamina logs
every retry at WARNING through the stdlib's last-resort handler, which writes to
stderr; the benchmark points stderr at /dev/null while it measures (the write
still happens, and is part of stamina's cost with default logging).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import backoff
import stamina
import tenacity

import resile

ATTEMPTS = 5


class Flaky:
    """Fails ``failures`` times, then succeeds; ``reset()`` before each measured call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.left = failures

    def reset(self) -> None:
        self.left = self.failures


def make_sync(flaky: Flaky) -> Callable[[], int]:
    def fn() -> int:
        if flaky.left:
            flaky.left -= 1
            raise ConnectionError("flaky")
        return 1

    return fn


def make_async(flaky: Flaky) -> Callable[[], Awaitable[int]]:
    async def fn() -> int:
        if flaky.left:
            flaky.left -= 1
            raise ConnectionError("flaky")
        return 1

    return fn


# -- the contenders: each takes the raw function and returns the wrapped one --------------


def hand_sync(fn: Callable[[], int]) -> Callable[[], int]:
    def wrapped() -> int:
        for attempt in range(ATTEMPTS):
            try:
                return fn()
            except ConnectionError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    return wrapped


def hand_async(fn: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    async def wrapped() -> int:
        for attempt in range(ATTEMPTS):
            try:
                return await fn()
            except ConnectionError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    return wrapped


def resile_wrap(fn: Any) -> Any:
    return resile.retry(
        on=ConnectionError,
        backoff=resile.Constant(0),
        stop=resile.after_attempts(ATTEMPTS),
    )(fn)


def tenacity_wrap(fn: Any) -> Any:
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_none(),
        reraise=True,
    )(fn)


def backoff_wrap(fn: Any) -> Any:
    return backoff.on_exception(
        backoff.constant, ConnectionError, max_tries=ATTEMPTS, interval=0, jitter=None
    )(fn)


def stamina_wrap(fn: Any) -> Any:
    return stamina.retry(
        on=ConnectionError,
        attempts=ATTEMPTS,
        timeout=None,
        wait_initial=0.0,
        wait_max=0.0,
        wait_jitter=0.0,
    )(fn)


CONTENDERS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "hand-written loop": (hand_sync, hand_async),
    "resile": (resile_wrap, resile_wrap),
    "backoff": (backoff_wrap, backoff_wrap),
    "tenacity": (tenacity_wrap, tenacity_wrap),
    "stamina": (stamina_wrap, stamina_wrap),
}


def time_sync(call: Callable[[], int], flaky: Flaky, n: int) -> float:
    reset = flaky.reset
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        if flaky.failures:
            for _ in range(n):
                reset()
                call()
        else:
            for _ in range(n):
                call()
        return (time.perf_counter_ns() - t0) / n
    finally:
        gc.enable()


async def time_async(call: Callable[[], Awaitable[int]], flaky: Flaky, n: int) -> float:
    reset = flaky.reset
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        if flaky.failures:
            for _ in range(n):
                reset()
                await call()
        else:
            for _ in range(n):
                await call()
        return (time.perf_counter_ns() - t0) / n
    finally:
        gc.enable()


def measure(name: str, kind: str, failures: int, n: int, repeats: int) -> float:
    flaky = Flaky(failures)
    wrap_sync, wrap_async = CONTENDERS[name]
    samples: list[float] = []
    if kind == "sync":
        call = wrap_sync(make_sync(flaky))
        time_sync(call, flaky, max(1, n // 10))  # warm up
        for _ in range(repeats):
            samples.append(time_sync(call, flaky, n))
    else:
        acall = wrap_async(make_async(flaky))

        async def run() -> None:
            await time_async(acall, flaky, max(1, n // 10))
            for _ in range(repeats):
                samples.append(await time_async(acall, flaky, n))

        asyncio.run(run())
    return statistics.median(samples)


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 10_000 else f"{ns / 1000:,.1f} µs"


def main() -> None:
    real_stderr = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            run()
        finally:
            sys.stderr = real_stderr


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated contenders to run (default: all), e.g. 'hand-written loop,resile' "
        "for a quick before/after of resile alone",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    scenarios = [
        ("(a) sync success", "sync", 0, 200_000 // scale),
        ("(b) async success", "async", 0, 100_000 // scale),
        ("(c) sync 3 failures then success", "sync", 3, 20_000 // scale),
        ("(d) async 3 failures then success", "async", 3, 20_000 // scale),
    ]
    print(
        f"retry overhead, median of {args.repeats} repeats; Python {sys.version.split()[0]}; "
        f"tenacity {_version('tenacity')}, backoff {_version('backoff')}, "
        f"stamina {_version('stamina')}, resile {resile.__version__}"
    )
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or "hand-written loop" not in names or "resile" not in names:
        parser.error(f"--only must name 'hand-written loop' and 'resile' among {list(CONTENDERS)}")
    header = f"{'scenario':36} " + " ".join(f"{n:>18}" for n in names)
    print(header)
    print("-" * len(header))
    for title, kind, failures, n in scenarios:
        results = {name: measure(name, kind, failures, n, args.repeats) for name in names}
        floor = results["hand-written loop"]
        ours = results["resile"]
        print(f"{title:36} " + " ".join(f"{fmt_ns(results[n]):>18}" for n in names))
        print(
            f"{'  × hand-written loop':36} "
            + " ".join(f"{results[n] / floor:>17.2f}×" for n in names)
        )
        print(f"{'  × resile':36} " + " ".join(f"{results[n] / ours:>17.2f}×" for n in names))


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
