"""The docs examples (``docs/examples/*.py``), run the same way by every test that checks one."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    """Run a docs example in a fresh interpreter (warnings are errors); return its output.

    ``env`` adds to (or overrides) this process's environment.
    """
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else {**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load_example(name: str, *, as_main: bool = False) -> dict[str, Any]:
    """Execute a docs example in this interpreter and return its globals.

    ``as_main`` runs it as ``__main__`` (its ``if __name__ == "__main__":`` block too).
    """
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__" if as_main else None)


def assert_page_shows(page: str, example: str) -> None:
    """``docs/<page>`` names ``docs/examples/<example>`` and shows its code (its last line)."""
    text = (DOCS / page).read_text()
    assert f"examples/{example}" in text, f"docs/{page} does not name examples/{example}"
    last = (EXAMPLES / example).read_text().strip().splitlines()[-1]
    assert last in text, f"docs/{page} does not show examples/{example}: no {last!r}"
