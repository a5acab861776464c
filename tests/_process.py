"""Ending a child process the tests (or the benchmarks) started: politely, then for sure."""

from __future__ import annotations

import subprocess
from typing import Any


def end(proc: subprocess.Popen[Any] | None, grace: float) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``grace`` seconds, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
