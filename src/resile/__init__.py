"""resile: make unreliable work reliable.

Retries with backoff and jitter (sync and async), deadlines, retry budgets,
the seed's ``BackoffExecutor``; see ``docs/`` for the rest.
"""

from __future__ import annotations

import logging

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
)
from resile.executor import BackoffExecutor
from resile.hedge import hedge
from resile.periodic import Periodic, repeat_every
from resile.queue import Queue, Store, Task, TaskContext, TaskStatus, connect
from resile.queue.worker import Worker
from resile.retry import AttemptManager, Retrying, RetryState, RetryStatistics, retry
from resile.stop import Stop, after_attempts, after_elapsed, at_deadline, never
from resile.supervisor import Supervisor
from resile.throttle import AdaptiveThrottle, Throttled

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
