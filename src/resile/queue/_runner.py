"""Running one attempt: find the handler, call it, turn what happened into a result.

Shared by the three worker modes. ``run_sync`` serves thread mode and the
process-mode child (``child_main``); ``run_async`` serves async mode. Nothing
here writes the outcome to the store: the worker does, so that a late result
of an attempt it already timed out or canceled is never recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from resile import instrument
from resile.errors import Permanent
from resile.queue._names import Outcome
from resile.queue.context import TaskContext, context_parameter
from resile.queue.store.base import Store
from resile.queue.task import Task, TaskError, check_json

__all__ = ["Result", "child_main", "load_queue", "lookup_handler", "run_async", "run_sync"]

Offload = Callable[[Callable[[], Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Result:
    """How one attempt ended, before the worker records it.

    Attributes:
        ok: the handler returned ``value``.
        value: the return value (plain JSON) when ``ok``.
        error: what went wrong otherwise.
        permanent: dead-letter now (``resile.Permanent``, unknown handler,
            params that do not fit the handler).
        retry_after: the wait the error asked for (a ``retry_after``
            attribute, e.g. ``resile.RetryAfter``), overriding the backoff.
        outcome: ``ERROR`` or ``TIMEOUT`` for the history entry.
    """

    ok: bool
    value: Any = None
    error: TaskError | None = None
    permanent: bool = False
    retry_after: float | None = None
    outcome: Outcome = Outcome.ERROR

    def to_wire(self) -> tuple[Any, ...]:
        """A picklable tuple of plain values for the process-mode pipe."""
        return (
            self.ok,
            self.value,
            None if self.error is None else self.error.to_dict(),
            self.permanent,
            self.retry_after,
            self.outcome.value,
        )

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> Result:
        """Rebuild from ``to_wire()``."""
        ok, value, error, permanent, retry_after, outcome = wire
        return cls(
            ok=bool(ok),
            value=value,
            error=None if error is None else TaskError.from_dict(error),
            permanent=bool(permanent),
            retry_after=retry_after,
            outcome=Outcome(outcome),
        )


def failure(
    kind: str, message: str, *, permanent: bool = False, outcome: Outcome = Outcome.ERROR
) -> Result:
    """A failed ``Result`` that no exception stands behind (timeout, a dead child, ...)."""
    return Result(ok=False, error=TaskError(kind, message), permanent=permanent, outcome=outcome)


# -- finding things ---------------------------------------------------------------------------


def load_queue(path: str) -> Any:
    """Import the queue object named by ``"package.module:attribute"``.

    In a process-mode child, ``"__main__:queue"`` resolves to the parent's main
    script as ``multiprocessing`` re-imported it (``__mp_main__``).

    Raises:
        ValueError: ``path`` does not look like ``module:attribute``.
        ImportError: the module cannot be imported, or raised while it was (the error,
            named in the message, is chained as the cause).
        AttributeError: the module has no such attribute.
        TypeError: the attribute is not a queue (it has no ``store``).
    """
    if not isinstance(path, str):
        raise ValueError(
            f"queue import path must be a str like 'package.module:queue', got {path!r}"
        )
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"queue import path must look like 'package.module:queue', got {path!r}")
    module: Any
    if module_name == "__main__" and "__mp_main__" in sys.modules:
        module = sys.modules["__mp_main__"]
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"cannot import module {module_name!r} of queue path {path!r}: {exc}"
            ) from exc
        except Exception as exc:  # the module's own code failed while it was imported
            raise ImportError(
                f"cannot import module {module_name!r} of queue path {path!r}: importing it "
                f"raised {type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"queue path {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from None
    if not isinstance(getattr(obj, "store", None), Store):
        raise TypeError(
            f"queue path {path!r} names {type(obj).__name__} {obj!r}, not a queue "
            "(make it `queue = resile.connect(...)`)"
        )
    return obj


def lookup_handler(queue: Any, name: str) -> Callable[..., Any] | None:
    """The function registered on ``queue`` under ``name``, or ``None``."""
    registry = getattr(queue, "handlers", None)
    if registry is None:
        return None
    fn = registry.get(name)
    if fn is None:
        return None
    # A registered TaskFunction-like wrapper exposes the plain function as ``fn``.
    inner = getattr(fn, "fn", fn)
    return inner if callable(inner) else None


@functools.lru_cache(maxsize=1024)
def _shape(fn: Callable[..., Any]) -> tuple[inspect.Signature | None, str | None]:
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    return sig, context_parameter(fn)


def _prepare(
    queue: Any, store: Store, task: Task, worker_id: str, cancel_event: threading.Event | None
) -> tuple[Callable[..., Any], dict[str, Any]] | Result:
    fn = lookup_handler(queue, task.handler)
    if fn is None:
        known = sorted(getattr(queue, "handlers", {}) or {})
        return failure(
            "UnknownHandler",
            f"unknown handler {task.handler!r}: no handler of that name is registered on the "
            f"queue (registered: {known}); register it with @queue.task or requeue the task "
            "once a worker knows it",
            permanent=True,
        )
    try:
        sig, ctx_name = _shape(fn)
    except TypeError:  # unhashable callable: no cache
        sig, ctx_name = _shape.__wrapped__(fn)
    kwargs: dict[str, Any] = dict(task.params)
    if ctx_name is not None:
        kwargs[ctx_name] = TaskContext(store, task, worker_id, cancel_event=cancel_event)
    if sig is not None:
        # Binding checks names only, so its verdict holds for every call with these names.
        key = (fn, tuple(kwargs))
        try:
            verdict = _fits.get(key)
        except TypeError:  # an unhashable callable: not cached
            verdict = _bind(sig, kwargs)
        if verdict is None:
            verdict = _fits[key] = _bind(sig, kwargs)
            if len(_fits) > 4096:
                _fits.clear()
        if verdict:
            return failure(
                "BadParams",
                f"params {sorted(task.params)} do not fit handler {task.handler!r}{sig}: {verdict}",
                permanent=True,
            )
    return fn, kwargs


# (handler, parameter names in call order) -> "" when they bind, else binding's complaint.
_fits: dict[tuple[Any, tuple[str, ...]], str] = {}


def _bind(sig: inspect.Signature, kwargs: dict[str, Any]) -> str:
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        return str(exc)
    return ""


def _from_exception(exc: BaseException) -> Result:
    if isinstance(exc, Permanent):
        inner = exc.error if exc.error is not None else exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        error = TaskError(type(inner).__qualname__, str(inner), tb[-20_000:])
        return Result(ok=False, error=error, permanent=True)
    retry_after = getattr(exc, "retry_after", None)
    if (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, (int, float))
        or not 0 <= retry_after < math.inf
    ):
        retry_after = None
    return Result(
        ok=False,
        error=TaskError.from_exception(exc),
        retry_after=None if retry_after is None else float(retry_after),
    )


def _success(value: Any) -> Result:
    try:
        check_json(value, "result")
    except ValueError as exc:
        return failure(
            "ResultNotJSON",
            f"the handler returned a value that cannot be stored: {exc}",
        )
    return Result(ok=True, value=value)


# -- calling ----------------------------------------------------------------------------------


_NO_SCOPE: contextlib.AbstractContextManager[object] = contextlib.nullcontext()


def _remote_scope(carrier: str) -> contextlib.AbstractContextManager[object]:
    """The parent's attempt span, current in this process (needs opentelemetry-api)."""
    try:
        from resile.otel import remote_scope
    except ImportError:  # the parent traces; this interpreter cannot: run untraced
        return _NO_SCOPE
    return remote_scope(carrier)


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def run_sync(
    queue: Any,
    store: Store,
    task: Task,
    worker_id: str,
    cancel_event: threading.Event | None = None,
    carrier: str | None = None,
) -> Result:
    """Run ``task``'s handler in this thread and describe the outcome; never raises.

    An async handler runs to completion in a fresh event loop. ``carrier``: the
    ``traceparent`` of the attempt's span in another process (a process-mode
    child's parent), current while the handler runs.
    """
    prepared = _prepare(queue, store, task, worker_id, cancel_event)
    if isinstance(prepared, Result):
        return prepared
    fn, kwargs = prepared
    # With a scoped hook installed (tracing), the attempt's span is current around the call.
    if carrier is not None:
        scope = _remote_scope(carrier)
    elif instrument.scoped:
        scope = instrument.attempt_scope(task.id, task.attempts)
    else:
        scope = _NO_SCOPE
    with scope:
        try:
            value = fn(**kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))  # the loop's task copies this context
        except (Exception, SystemExit, asyncio.CancelledError) as exc:
            return _from_exception(exc)
    return _success(value)


async def run_async(
    queue: Any,
    store: Store,
    task: Task,
    worker_id: str,
    cancel_event: threading.Event | None,
    offload: Offload,
) -> Result:
    """Await ``task``'s handler (a sync one runs through ``offload`` in a thread).

    Cancellation of the awaiting task propagates (``CancelledError``); every
    other exception becomes a failed ``Result``.
    """
    prepared = _prepare(queue, store, task, worker_id, cancel_event)
    if isinstance(prepared, Result):
        return prepared
    fn, kwargs = prepared
    scope = instrument.attempt_scope(task.id, task.attempts) if instrument.scoped else _NO_SCOPE
    with scope:  # in this asyncio task's context; ``offload`` carries it to its thread
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(**kwargs)
            else:
                value = await offload(functools.partial(fn, **kwargs))
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:
            return _from_exception(exc)
    return _success(value)


# -- the process-mode child -------------------------------------------------------------------


class _ParentWatch:
    """Exit the child when its worker is gone (killed with -9, say), even mid-handler.

    Idle, the child notices at once: ``recv`` on the pipe raises ``EOFError``.
    Busy, a watch thread polls the pipe: nothing may arrive while a handler
    runs (the worker only sends to idle children), so a readable pipe means
    the worker closed it. The lock keeps "busy" and the poll consistent.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.busy = False
        threading.Thread(target=self._watch, name="resile-parent-watch", daemon=True).start()

    def _watch(self) -> None:
        tick = threading.Event()
        while not tick.wait(0.2):
            with self.lock:
                if self.busy and self.conn.poll(0):
                    os._exit(1)


def child_main(conn: Any, import_path: str) -> None:
    """Entry point of a process-mode child: import the queue, then run tasks until told to stop.

    Protocol on ``conn`` (a ``multiprocessing`` pipe end): the child sends
    ``("ready", pid)`` or ``("fatal", error_dict)``; then, for each
    ``{"task": Task.to_dict(), "worker_id": str, "relay": bool, "span": str | None}``
    received (``span``: the attempt's ``traceparent``, made current here), one
    ``("result", Result.to_wire())``, preceded by ``("event", event)`` for each
    instrumentation event the attempt fired (``@retry`` inside the handler)
    when ``relay`` is true (the parent has hooks installed). ``None`` asks it to exit.
    """
    # Ctrl-C reaches the whole process group; the worker decides, the child keeps working.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = _ParentWatch(conn)
    try:
        queue = load_queue(import_path)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("fatal", TaskError.from_exception(exc).to_dict()))
        return
    store: Store = queue.store
    sending = threading.Lock()  # handler threads may fire events while the result is sent

    def send(message: Any) -> None:
        with sending:
            conn.send(message)

    relay = instrument.Relay(lambda event: send(("event", event)))
    send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        with watch.lock:
            watch.busy = True
        if msg.get("relay"):
            instrument.install(relay)
        else:
            instrument.uninstall(relay)
        try:
            task = Task.from_dict(msg["task"])
            result = run_sync(queue, store, task, msg["worker_id"], carrier=msg.get("span"))
        except Exception as exc:  # a task the child cannot even decode
            result = _from_exception(exc)
        with watch.lock:
            watch.busy = False
        try:
            send(("result", result.to_wire()))
        except Exception as exc:  # an unpicklable value slipped through
            send(("result", _from_exception(exc).to_wire()))
