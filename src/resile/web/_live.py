"""Live pages at a bounded cost: one store read per view per refresh, however many viewers.

``SharedReads`` keeps the last answer of each read (a view's data: the
overview's counts, one filtered list page, one task) for ``refresh`` seconds.
Every page request and every event stream asks it; while an answer is fresh
it is served from memory, and when it has gone stale exactly one caller reads
the store again while the others wait for that read (single flight). So ten
open overviews cost what one costs: about ``1 / refresh`` reads a second.

``stream`` turns a view into server-sent events: it sends the rendered
fragment when it changed, then waits until the shared answer goes stale.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool

__all__ = ["SharedReads", "digest", "sse", "stream"]

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    at: float = -float("inf")
    fresh_for: float = 0.0
    value: Any = None
    error: BaseException | None = None
    loading: anyio.Event | None = None


class SharedReads:
    """A single-flight cache of store reads, fresh for ``refresh`` seconds.

    A read that takes long stays fresh longer: ``max(refresh, DUTY * its duration)``,
    so the dashboard spends at most about ``1 / DUTY`` of its time reading a view,
    however slow the store (the overview of a million SQLite tasks: a read every few
    seconds instead of one after another).

    Args:
        refresh: seconds an answer is served before the store is read again.
        clock: a monotonic clock (injectable for tests).
        max_keys: answers kept at most (the least recently used go first).
    """

    DUTY = 5.0

    def __init__(
        self,
        refresh: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 256,
    ) -> None:
        self.refresh = refresh
        self.clock = clock
        self.max_keys = max_keys
        self.reads = 0
        self._entries: OrderedDict[Hashable, _Entry[Any]] = OrderedDict()

    def _entry(self, key: Hashable) -> _Entry[Any]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    async def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The fresh answer for ``key``; when stale, ``load()`` runs once (in a thread).

        Raises:
            whatever ``load`` raised, to every caller that waited for that read.
        """
        entry = self._entry(key)
        while True:
            if entry.loading is not None:
                await entry.loading.wait()
                continue
            if self.clock() - entry.at < entry.fresh_for:
                if entry.error is not None:
                    raise entry.error
                return entry.value  # type: ignore[no-any-return]
            break
        done = entry.loading = anyio.Event()
        started = self.clock()
        try:
            self.reads += 1
            entry.value = await run_in_threadpool(load)
            entry.error = None
        except Exception as exc:
            entry.error = exc
            raise
        finally:
            entry.at = started
            entry.fresh_for = max(self.refresh, self.DUTY * (self.clock() - started))
            entry.loading = None
            done.set()
        return entry.value  # type: ignore[no-any-return]

    def expires_in(self, key: Hashable) -> float:
        """Seconds until the answer for ``key`` goes stale (0 when it is already)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.at + entry.fresh_for - self.clock())

    def clear(self) -> None:
        """Forget every answer: the next read of each view goes to the store (after an action)."""
        for entry in self._entries.values():
            entry.at = -float("inf")


def digest(html: str) -> str:
    """A short fingerprint of a rendered fragment: the page names the one it shows."""
    return hashlib.blake2b(html.encode(), digest_size=8).hexdigest()


def sse(event: str, data: str) -> str:
    """One server-sent event: ``event:`` then each line of ``data`` as a ``data:`` line."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


async def stream(
    reads: SharedReads,
    key: Hashable,
    load: Callable[[], T],
    render: Callable[[T], str],
    render_error: Callable[[Exception], str],
    *,
    shown: str | None = None,
    seconds: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """Server-sent events for one viewer of a view, for ``seconds`` (the browser reconnects).

    Sends ``update`` with the rendered fragment whenever it differs from the last one sent;
    ``shown`` is the ``digest`` of the fragment the page already shows (not sent again).
    """
    yield "retry: 1000\n\n"
    last = shown
    end = clock() + seconds
    while clock() < end:
        try:
            html = render(await reads.get(key, load))
        except Exception as exc:  # the store is down: say so on the page and keep trying
            html = render_error(exc)
        mark = digest(html)
        if mark != last:
            last = mark
            yield sse("update", html)
        else:
            yield ": tick\n\n"  # a comment: lets the server notice a viewer that left
        await anyio.sleep(max(reads.expires_in(key), 0.01))
