"""Argument checks shared by resile's modules: each error names the owner, the field and the value.

Durations are checked by ``resile._time.seconds`` / ``positive_seconds``.
"""

from __future__ import annotations

import functools


def integer(value: object, field: str, owner: str, *, minimum: int = 0) -> int:
    """Check an ``int`` (not a ``bool``) that is at least ``minimum``; return it.

    Raises:
        ValueError: anything else, naming ``owner``, ``field`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {field} must be an int >= {minimum}, got {value!r}")
    return value


def exception_types(value: object, field: str, owner: str) -> tuple[type[BaseException], ...]:
    """Check an exception type or a tuple of them; return them as a tuple.

    Raises:
        TypeError: anything else, naming ``owner``, ``field`` and the value.
    """
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return value
    raise TypeError(f"{owner}: {field} must be an exception type or a tuple of them, got {value!r}")


def check_seed(value: object, owner: str) -> None:
    """Check an RNG seed: an ``int`` (not a ``bool``) or ``None``.

    Raises:
        TypeError: anything else, naming ``owner`` and the value.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{owner}: seed must be an int or None, got {value!r}")


def add_note(exc: BaseException, note: str) -> None:
    """Add ``note`` to ``exc.__notes__`` (tracebacks print them from Python 3.11)."""
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(note)
    else:  # pragma: no cover - Python 3.10 keeps the attribute; tracebacks show it from 3.11
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            exc.__notes__ = notes = []  # type: ignore[attr-defined]
        notes.append(note)


# What a decorator copies from the function it wraps: functools' list, plus the
# defaults, so that ``inspect`` and ``fn.__defaults__`` still tell them.
WRAPPED = (*functools.WRAPPER_ASSIGNMENTS, "__defaults__", "__kwdefaults__")
