"""What a test does when a real component it needs is absent: skip on a laptop, fail in CI.

A user's machine may lack a server binary (Redis, PostgreSQL, MariaDB,
Prometheus) or a browser; such a test skips and says why. When ``CI`` is set
the same absence is a failure, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but empty, 0 or false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(component: str, why: str) -> NoReturn:
    """Skip the test (``component`` is absent, ``why``), or fail it when running in CI."""
    message = f"no {component}: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: a needed component must be installed, not skipped)")
    pytest.skip(message)
