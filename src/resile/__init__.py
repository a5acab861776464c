"""resile: make unreliable work reliable.

Retries with backoff and jitter (sync and async), deadlines, retry budgets,
circuit breakers, periodic tasks and a durable task queue; see ``docs/`` for the rest.
"""

from __future__ import annotations

import importlib
import logging
import typing

from resile import presets
from resile.backoff import Backoff, Constant, DecorrelatedJitter, Exponential, Linear
from resile.breaker import CircuitBreaker, CircuitState
from resile.budget import RetryBudget
from resile.deadline import check, current_deadline, deadline, remaining
from resile.errors import (
    CircuitOpen,
    DeadlineExceeded,
    DuplicateTask,
    Permanent,
    ResileError,
    RetryAfter,
    RetryError,
    StoreUnavailable,
)
from resile.executor import BackoffExecutor
from resile.hedge import hedge
from resile.retry import AttemptManager, Retrying, RetryState, RetryStatistics, retry
from resile.stop import Stop, after_attempts, after_elapsed, at_deadline, never
from resile.throttle import AdaptiveThrottle, Throttled

if typing.TYPE_CHECKING:
    from resile.periodic import Periodic, repeat_every
    from resile.queue import Queue, Store, Task, TaskContext, TaskStatus, connect
    from resile.queue.worker import Worker
    from resile.supervisor import Supervisor

# The queue, the worker, periodic tasks and the supervisor are most of what
# ``import resile`` would cost; they are imported on first use (PEP 562).
_LAZY = {
    "Periodic": "resile.periodic",
    "Queue": "resile.queue",
    "Store": "resile.queue",
    "Supervisor": "resile.supervisor",
    "Task": "resile.queue",
    "TaskContext": "resile.queue",
    "TaskStatus": "resile.queue",
    "Worker": "resile.queue.worker",
    "connect": "resile.queue",
    "repeat_every": "resile.periodic",
}


def __getattr__(name: str) -> typing.Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

# A library logs to its own logger and leaves output to the application.
logging.getLogger("resile").addHandler(logging.NullHandler())

__all__ = [
    "AdaptiveThrottle",
    "AttemptManager",
    "Backoff",
    "BackoffExecutor",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "Constant",
    "DeadlineExceeded",
    "DecorrelatedJitter",
    "DuplicateTask",
    "Exponential",
    "Linear",
    "Periodic",
    "Permanent",
    "Queue",
    "ResileError",
    "RetryAfter",
    "RetryBudget",
    "RetryError",
    "RetryState",
    "RetryStatistics",
    "Retrying",
    "Stop",
    "Store",
    "StoreUnavailable",
    "Supervisor",
    "Task",
    "TaskContext",
    "TaskStatus",
    "Throttled",
    "Worker",
    "__version__",
    "after_attempts",
    "after_elapsed",
    "at_deadline",
    "check",
    "connect",
    "current_deadline",
    "deadline",
    "hedge",
    "never",
    "presets",
    "remaining",
    "repeat_every",
    "retry",
]
