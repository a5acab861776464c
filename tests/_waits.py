"""Bounded waits for tests: poll a condition until it holds, never sleep to "let it work"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition", step: float = 0.01
) -> None:
    """Poll ``cond`` every ``step`` seconds until it holds; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(step)


def returns_within(call: Callable[[], T], timeout: float, what: str) -> T:
    """``call()`` run in a daemon thread; its result, or fail when it has not returned after
    ``timeout`` seconds (a hung call is left behind, never waited for)."""
    done = threading.Event()
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="returns-within").start()
    if not done.wait(timeout):
        raise AssertionError(f"{what} did not return within {timeout} s")
    if errors:
        raise errors[0]
    return box[0]
