"""The only module that knows asyncio from trio.

Every other module asks this one for what it needs of "the running async
library": its name, a sleep, an event, a thread offload, a way to call back
into the loop from another thread, cancel scopes, timeouts and nurseries.
trio is imported here only, lazily, when it is the library that runs.
Also the glue between the two colours: ``run_awaitable`` runs an awaitable to
completion from sync code; ``emit_sync`` / ``emit_async`` call a user's hook,
sync or async, and log its errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("resile")

ASYNCIO = "asyncio"
TRIO = "trio"


def _trio() -> ModuleType:
    import trio

    return trio


def current_async_library() -> str:
    """Name the async library running this code: ``"asyncio"`` or ``"trio"``.

    Works from a coroutine and from sync code called by one.

    Raises:
        RuntimeError: when called outside any event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return ASYNCIO
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return TRIO
    raise RuntimeError("resile: no running asyncio or trio event loop")


def running_library() -> str | None:
    """``current_async_library()``, or ``None`` when no event loop runs in this thread."""
    try:
        return current_async_library()
    except RuntimeError:
        return None


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` in the running async library."""
    if current_async_library() == TRIO:
        await _trio().sleep(seconds)
    else:
        await asyncio.sleep(seconds)


async def checkpoint() -> None:
    """Let other tasks run once (a zero sleep)."""
    if current_async_library() == TRIO:
        await _trio().lowlevel.checkpoint()
    else:
        await asyncio.sleep(0)


async def run_in_thread(fn: Callable[[], T]) -> T:
    """Run the sync ``fn()`` in a worker thread of the running async library, off its loop."""
    if current_async_library() == TRIO:
        return await _trio().to_thread.run_sync(fn)  # type: ignore[no-any-return]
    return await asyncio.to_thread(fn)


def new_event(lib: str | None = None) -> Any:
    """An event of ``lib`` (default: the running library): ``asyncio.Event`` or ``trio.Event``."""
    if (lib or current_async_library()) == TRIO:
        return _trio().Event()
    return asyncio.Event()


async def wait_event(event: Any, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` real seconds (``None``: no limit); True if it was set."""
    if event.is_set():
        return True
    if timeout is not None and timeout <= 0:
        return False
    if current_async_library() == TRIO:
        with _trio().move_on_after(math.inf if timeout is None else timeout):
            await event.wait()
        return bool(event.is_set())
    if timeout is None:
        await event.wait()
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        return bool(event.is_set())
    return True


def loop_caller() -> Callable[[Callable[[], object]], object]:
    """A thread-safe ``call(fn)`` that runs ``fn()`` soon in the running loop (or trio run).

    ``call`` raises ``RuntimeError`` once that loop is closed (the trio run has ended).
    """
    if current_async_library() == TRIO:
        return _trio().lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]
    return asyncio.get_running_loop().call_soon_threadsafe


def current_task(lib: str | None) -> object:
    """The running task of ``lib`` (trio or asyncio), or ``None`` outside any."""
    if lib == TRIO:
        return _trio().lowlevel.current_task()
    try:
        return asyncio.current_task()
    except RuntimeError:  # no loop in this thread
        return None


def spawn_system_task(fn: Callable[[], Awaitable[None]], name: str, context: Any) -> None:
    """trio only: run ``fn()`` as a system task of the current run, in ``context``."""
    _trio().lowlevel.spawn_system_task(fn, name=name, context=context)


def cancel_scope() -> Any:
    """trio only: a new ``trio.CancelScope`` (its ``cancel()`` ends the block it wraps)."""
    return _trio().CancelScope()


@contextlib.contextmanager
def shielded(seconds: float) -> Iterator[None]:
    """trio only: protect the block from outer cancellation, for at most ``seconds``."""
    trio = _trio()
    with trio.CancelScope(shield=True), trio.move_on_after(seconds):
        yield


def open_nursery() -> Any:
    """trio only: ``trio.open_nursery()``."""
    return _trio().open_nursery()


def memory_channel(size: float = math.inf) -> tuple[Any, Any]:
    """trio only: a ``(send, receive)`` memory channel pair."""
    send, receive = _trio().open_memory_channel(size)
    return send, receive


class Timeout:
    """Cancel the enclosing task ``seconds`` from now, under asyncio or trio.

    ``await enter()`` arms it; ``await exit(et, e, tb)`` disarms it and says
    whether it fired (the cancellation it caused has then been absorbed: the
    caller raises its own error). Any other exception propagates.
    """

    __slots__ = ("_cm", "_handle", "_scope", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._cm: Any = None
        self._handle: asyncio.TimerHandle | None = None
        self._scope: Any = None

    async def enter(self) -> None:
        if current_async_library() == TRIO:
            trio = _trio()
            self._scope = trio.CancelScope(deadline=trio.current_time() + self.seconds)
            self._scope.__enter__()
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + self.seconds
        if sys.version_info >= (3, 11):
            self._cm = asyncio.timeout_at(at)
            await self._cm.__aenter__()
        else:  # pragma: no cover - Python 3.10
            task = asyncio.current_task()
            assert task is not None
            self._handle = loop.call_at(at, task.cancel)

    async def exit(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._scope is not None:
            scope, self._scope = self._scope, None
            # __exit__ also returns True when the block ended without an exception.
            return bool(scope.__exit__(et, e, tb) and scope.cancelled_caught)
        if self._cm is not None:
            cm, self._cm = self._cm, None
            try:
                await cm.__aexit__(et, e, tb)
            except TimeoutError:
                if cm.expired():
                    return True
                raise
            return False
        if self._handle is not None:  # pragma: no cover - Python 3.10
            handle, self._handle = self._handle, None
            fired = handle.when() <= asyncio.get_running_loop().time()
            handle.cancel()
            return fired and et is asyncio.CancelledError
        return False


def run_awaitable(aw: Awaitable[Any]) -> Any:
    """Run an awaitable to completion from sync code and return its value.

    With no event loop in this thread it runs in a fresh asyncio loop; when
    one already runs here (the caller is sync code called from a coroutine),
    in a fresh loop in a helper thread, which this thread waits for.
    """

    async def main() -> Any:
        return await aw

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(main()))
        except BaseException as exc:  # reported below
            failure.append(exc)

    t = threading.Thread(target=target, name="resile-await")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return outcome[0]


def emit_sync(hook: Callable[..., Any], *args: Any) -> None:
    """Call a hook, sync or async, from sync code. Its errors are logged, never raised."""
    try:
        outcome = hook(*args)
        if inspect.isawaitable(outcome):
            run_awaitable(outcome)
    except Exception:
        log.exception("resile: hook %r raised; ignored", hook)


async def emit_async(hook: Callable[..., Any], *args: Any) -> None:
    """Call a hook, sync or async, from async code. Its errors are logged, never raised."""
    try:
        outcome = hook(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log.exception("resile: hook %r raised; ignored", hook)
