"""A stored task hash back to a ``Task``: the shared codec on an ``HGETALL`` reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from resile.queue.store._codec import CorruptField
from resile.queue.store._codec import decode as _codec_decode
from resile.queue.task import Task

__all__ = ["CorruptField", "decode", "pairs"]


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """A flat ``HGETALL`` reply (RESP2: field, value, field, value ...) as a dict."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def decode(flat: Sequence[Any] | Mapping[str, str], strict: bool = True) -> Task:
    """A task hash (``HGETALL``, flat or as a dict) -> Task; see ``_codec.decode``.

    Raises:
        CorruptField: as ``_codec.decode``.
    """
    return _codec_decode(flat if isinstance(flat, Mapping) else pairs(flat), strict)
