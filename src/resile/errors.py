"""Every error resile raises on purpose, in one place.

Each message names the field, the value and what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CircuitOpen",
    "DeadlineExceeded",
    "DuplicateTask",
    "Permanent",
    "ResileError",
    "ResultFailed",
    "RetryAfter",
    "RetryError",
    "StoreConflict",
    "StoreUnavailable",
    "Throttled",
]


class ResileError(Exception):
    """Base class of the errors resile raises itself."""


class Permanent(Exception):
    """Wrap an error to stop retrying at once.

    ``raise Permanent(ValueError("bad token"))`` makes the retry engine give up
    immediately and re-raise the wrapped ``ValueError``; a stored task that
    raises it is dead-lettered without using its remaining retries.

    Args:
        error: the exception to re-raise, or a message (then ``Permanent``
            itself is raised).
    """

    def __init__(self, error: BaseException | str) -> None:
        super().__init__(error)
        self.error: BaseException | None = error if isinstance(error, BaseException) else None

    def __str__(self) -> str:
        return str(self.args[0])


class RetryAfter(Exception):
    """A retryable error that says how long to wait (HTTP 429/503 ``Retry-After``).

    Any exception with a numeric ``retry_after`` attribute is honoured the
    same way; this class is a convenience.

    Args:
        seconds: how long the server asked us to wait; finite and >= 0.
        message: optional text.
    """

    def __init__(self, seconds: float, message: str = "") -> None:
        if not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
            raise ValueError(f"RetryAfter: seconds must be a finite number >= 0, got {seconds!r}")
        super().__init__(message or f"retry after {seconds:g} s")
        self.retry_after = float(seconds)


class RetryError(ResileError):
    """Raised on give-up when ``raise_retry_error=True``.

    Attributes:
        attempts: the outcome of every attempt, oldest first: the exception it
            raised, or the result that the ``on_result`` predicate rejected.
        last: the last outcome.
    """

    def __init__(self, attempts: Sequence[Any], name: str = "call") -> None:
        self.attempts = list(attempts)
        self.last = self.attempts[-1] if self.attempts else None
        super().__init__(
            f"{name}: gave up after {len(self.attempts)} attempt(s); last outcome: {self.last!r}"
        )


class DeadlineExceeded(TimeoutError):
    """The current ``resile.deadline`` has passed.

    A subclass of ``TimeoutError``, so code that already handles timeouts
    handles this too.
    """


class CircuitOpen(ResileError):
    """A circuit breaker refused the call without touching the dependency.

    Attributes:
        name: the breaker's name.
        retry_after: seconds until the breaker lets a probe call through; the
            retry engine waits that long when it fits the deadline.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = max(0.0, retry_after)
        super().__init__(
            f"circuit {name!r} is open: calls are refused for {self.retry_after:.3f} s more; "
            "retry after that or handle CircuitOpen as a fast failure"
        )


class DuplicateTask(ResileError):
    """A task with this id already exists in the queue.

    Pass ``if_exists="return"`` to get the existing task instead.
    """

    def __init__(self, queue: str, task_id: str) -> None:
        self.queue = queue
        self.task_id = task_id
        super().__init__(
            f"task id {task_id!r} already exists in queue {queue!r}; "
            'use another id or pass if_exists="return" to get the existing task'
        )


class StoreConflict(ResileError):
    """A store write met a concurrent change of the task every time it was tried; nothing
    was written. The caller still holds what it held: try the write again later (a
    worker does, as after any store error).

    Attributes:
        task_id: the task.
        operation: the store method (``"fail"``).
        tries: how many times it was tried.
    """

    def __init__(self, task_id: str, operation: str, tries: int) -> None:
        self.task_id = task_id
        self.operation = operation
        self.tries = tries
        super().__init__(
            f"{operation} of task {task_id!r}: the task changed under the write {tries} times "
            "in a row (another writer is busy with it); nothing was written, try again later"
        )


class StoreUnavailable(ResileError, ConnectionError):
    """The task store cannot be written now: its server is down or unreachable, its disk
    is full, or its database stayed locked longer than the store waits.

    Every backend raises this one class (the driver's own error is its ``__cause__``) once
    its own ride-through (``retry_for``, ``lock_timeout``) is over. It is a
    ``ConnectionError`` too, so ``@resile.retry(on=ConnectionError)`` around a producer
    retries it. A call that raised it may still have been applied when the connection
    dropped mid-call: an ``enqueue`` with an ``id`` is safe to send again.

    Attributes:
        store: the store's URL, without its password.
        reason: what the store answered, in one line.
        advice: what to do about it.
    """

    def __init__(self, store: str, reason: str, advice: str) -> None:
        self.store = store
        self.reason = " ".join(reason.split())
        self.advice = advice
        super().__init__(f"task store {store} cannot be written now: {self.reason}; {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.store, self.reason, self.advice))

    @classmethod
    def server_down(cls, store: str, reason: str) -> StoreUnavailable:
        """The error for a server that does not answer (down, unreachable, restarting)."""
        return cls(
            store,
            reason,
            "check that the server runs and is reachable; tasks already stored are kept, "
            "and the call may be tried again (an enqueue with an id is safe to repeat)",
        )


class Throttled(ResileError):
    """An ``AdaptiveThrottle`` rejected the request locally; the dependency was not called.

    Attributes:
        name: the throttle's name.
        probability: the rejection probability when the request was refused.
    """

    def __init__(self, name: str, probability: float) -> None:
        self.name = name
        self.probability = probability
        super().__init__(
            f"throttle {name!r} rejected the request locally (rejection probability "
            f"{probability:.2f}): the backend has been refusing work; retry later or "
            "handle Throttled as a fast failure"
        )


class ResultFailed(ResileError):
    """A handler returned ``ResultEntity.fail(...)`` (or raised, and the exception
    handler described it): the attempt failed and is retried on the task's policy.

    Attributes:
        code, message, result: those of the failing ``ResultEntity``.
    """

    def __init__(self, code: int, message: str, result: Any = None) -> None:
        self.code = code
        self.message = message
        self.result = result
        text = f"[code {code}] {message}" if message else f"[code {code}]"
        if result is not None:
            text += f"; result: {json.dumps(result, ensure_ascii=False, default=repr)}"
        super().__init__(text)
