"""resile.queue.task: the history record's name, old and new."""

from __future__ import annotations

import importlib

import pytest

from resile.queue.task import AttemptRecord


@pytest.mark.parametrize("module", ["resile.queue.task", "resile.queue"])
def test_attempt_is_a_deprecated_alias(module: str) -> None:
    """``Attempt`` still gives the history record, with a DeprecationWarning naming the new name."""
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=r"Attempt is deprecated; use .*AttemptRecord"):
        old = mod.Attempt
    assert old is AttemptRecord


@pytest.mark.parametrize("module", ["resile.queue.task", "resile.queue"])
def test_new_name_is_exported_and_old_one_is_not(module: str) -> None:
    """``AttemptRecord`` is in ``__all__``; the deprecated alias is not."""
    mod = importlib.import_module(module)
    assert "AttemptRecord" in mod.__all__
    assert "Attempt" not in mod.__all__


def test_unknown_names_still_raise() -> None:
    """The module-level ``__getattr__`` raises AttributeError for any other name."""
    mod = importlib.import_module("resile.queue.task")
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = mod.Nope
