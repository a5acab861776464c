"""``Closing``: ``with`` and ``async with`` for any object that has ``close`` and ``aclose``.

One home for the four context-manager methods that a queue, a store and
anything else holding connections would otherwise each write out.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_C = TypeVar("_C", bound="Closing")


class Closing:
    """Mixin: ``with obj`` / ``async with obj`` give ``obj`` and then close it.

    A subclass defines ``close()`` (run by ``__exit__``) and ``aclose()``
    (awaited by ``__aexit__``). An exception inside the block is not
    suppressed.
    """

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds (a subclass defines it)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """``close`` for async code (a subclass defines it)."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
