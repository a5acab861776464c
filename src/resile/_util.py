"""Helpers shared by resile's modules: argument checks (each error names the owner, the
field and the value), exception notes, deprecation warnings, and the decorators' common
wrapper.

Durations are checked by ``resile._time.seconds`` / ``positive_seconds``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


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


def deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Warn (``DeprecationWarning``) that an old name was used; ``message`` says what to use.

    ``stacklevel=3`` points at the caller of the function that calls this.
    """
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed(module: str, renames: Mapping[str, tuple[str, object]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving old names: ``{old: (new, obj)}`` -> ``obj``, with a warning.

    Any other unknown name raises ``AttributeError`` as a module does.
    """

    def __getattr__(name: str) -> Any:
        if name in renames:
            new, obj = renames[name]
            deprecated(f"{module}.{name} is deprecated; use {module}.{new} (the same object)")
            return obj
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def guard(
    fn: Callable[P, R],
    enter: Callable[[], T],
    leave: Callable[[T, BaseException | None], object],
) -> Callable[P, R]:
    """Wrap ``fn`` (sync or async; ``inspect`` tells): ``enter()`` before each call, then
    ``leave(token, error)`` after it, with ``None`` for a call that returned.

    An error ``enter`` raises refuses the call (``fn`` is not called); the call's own
    error is re-raised after ``leave``. The wrapper keeps ``fn``'s metadata (``WRAPPED``).
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn, WRAPPED)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            token = enter()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                leave(token, exc)
                raise
            leave(token, None)
            return result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn, WRAPPED)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = enter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            leave(token, exc)
            raise
        leave(token, None)
        return result

    return wrapper


G = TypeVar("G", bound="Guarded")


class Guarded:
    """``with`` and ``async with`` over ``_enter()`` and ``_exit(error)``, for the call guards.

    ``_enter`` may raise to refuse the block (it then does not run); ``_exit``
    is given the block's exception, or ``None``, and never swallows it.
    """

    __slots__ = ()

    def _enter(self) -> None:
        raise NotImplementedError

    def _exit(self, e: BaseException | None) -> None:
        raise NotImplementedError

    def __enter__(self: G) -> G:
        self._enter()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(e)

    async def __aenter__(self: G) -> G:
        self._enter()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(e)
