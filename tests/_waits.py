"""Bounded waits for tests: poll a condition until it holds, never sleep to "let it work"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_for(
    cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition", step: float = 0.01
) -> None:
    """Poll ``cond`` every ``step`` seconds until it holds; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(step)
