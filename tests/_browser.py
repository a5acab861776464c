"""A headless Chromium driven by Playwright: Debian's browser, never a downloaded one.

``browser()`` is a context manager yielding a Playwright ``Browser``; when
``/usr/bin/chromium`` or the ``playwright`` package is absent the test calls
``_components.missing`` (a skip on a laptop, a failure in CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _components import missing

CHROMIUM = os.environ.get("RESILE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def browser() -> Iterator[Any]:
    """A launched Chromium (``playwright.sync_api.Browser``), closed at the end."""
    if not os.path.exists(CHROMIUM):
        missing("Chromium", f"{CHROMIUM} does not exist (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "the playwright package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
