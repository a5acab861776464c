"""The public API: __all__ matches what each module exports, and mypy --strict accepts its use."""

from __future__ import annotations
import __future__

import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import resile

ROOT = Path(__file__).resolve().parent.parent

# The core modules must declare __all__; other modules are checked when they declare one.
CORE = [
    "resile.backoff",
    "resile.budget",
    "resile.deadline",
    "resile.errors",
    "resile.executor",
    "resile.presets",
    "resile.retry",
    "resile.stop",
    "resile.testing",
]
# Entry-point scripts are not libraries and need no __all__.
SCRIPTS = {"resile.demo", "resile.cli", "resile.__main__"}


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(resile.__path__, "resile."):
        parts = info.name.split(".")[1:]
        if any(p.startswith("_") for p in parts) or info.name in SCRIPTS:
            continue
        names.append(info.name)
    return sorted(set(names) | set(CORE))


def _defined_here(module: types.ModuleType) -> list[str]:
    """Public classes and functions whose home is ``module`` itself."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    )


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        if exc.name and not exc.name.startswith("resile"):
            pytest.skip(f"{name} needs {exc.name}, not installed")
        raise


class TestPackageAll:
    """resile.__all__ and the package's attributes agree."""

    def test_every_name_exists(self) -> None:
        """Every name in resile.__all__ is an attribute of resile."""
        missing = [n for n in resile.__all__ if not hasattr(resile, n)]
        assert missing == []

    def test_no_duplicates(self) -> None:
        """resile.__all__ lists each name once."""
        assert len(resile.__all__) == len(set(resile.__all__))

    def test_every_public_attribute_listed(self) -> None:
        """Every public, non-module attribute of resile is in __all__ (derived, not hard-coded)."""
        unlisted = [
            name
            for name, value in vars(resile).items()
            if not name.startswith("_")
            and not isinstance(value, (types.ModuleType, __future__._Feature))
            and name not in resile.__all__
        ]
        assert unlisted == []

    def test_core_names_exported(self) -> None:
        """What issue 2 names is importable from resile itself."""
        for name in (
            "retry",
            "Retrying",
            "Exponential",
            "Constant",
            "Linear",
            "DecorrelatedJitter",
            "after_attempts",
            "after_elapsed",
            "at_deadline",
            "never",
            "Permanent",
            "RetryAfter",
            "RetryError",
            "DeadlineExceeded",
            "deadline",
            "remaining",
            "BackoffExecutor",
            "presets",
        ):
            assert name in resile.__all__

    def test_reexports_are_the_originals(self) -> None:
        """A name re-exported by resile is the same object as in its home module."""
        for name in resile.__all__:
            value = getattr(resile, name)
            home = getattr(value, "__module__", None)
            if isinstance(home, str) and home.startswith("resile.") and hasattr(value, "__name__"):
                module = importlib.import_module(home)
                if hasattr(module, name):
                    assert getattr(module, name) is value, name

    def test_version(self) -> None:
        """__version__ is a string."""
        assert isinstance(resile.__version__, str)


@pytest.mark.parametrize("name", _public_modules())
def test_submodule_all(name: str) -> None:
    """A module's __all__ names only what exists and every public class or function defined there."""
    module = _import(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert name not in CORE, f"{name} must declare __all__"
        return
    assert [n for n in exported if not hasattr(module, n)] == []
    assert len(exported) == len(set(exported))
    assert [n for n in _defined_here(module) if n not in exported] == []


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_typing_usages_pass_mypy_strict() -> None:
    """tests/typing passes mypy --strict: decorated functions keep their signatures."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "tests/typing"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
