"""The seed framework's API (``maas-task-backoff-framework``) on resile's durable queue.

Code written for the seed keeps working with two changes: the import line and
the storage config::

    from resile.compat import (
        TaskBackoffScheduler, TaskBackoffConfig, TaskEntity, TaskConfig,
        StorageConfig, ThreadPoolConfig, SchedulerConfig, ResultEntity,
    )

    config = TaskBackoffConfig()
    config.storage = StorageConfig(type="sqlite", path="tasks.db")   # or "redis", "postgresql", "mysql"
    config.task = TaskConfig(biz_prefix="my_service", backoff_strategy="exponential")
    scheduler = TaskBackoffScheduler(config)
    scheduler.set_custom_task_handler(lambda task: ResultEntity.ok(result={}, task_id=task.task_id))
    scheduler.start()

Everything runs on the same parts as the native API: ``resile.connect`` opens
the store, one handler is registered on a ``resile.Queue``, and a
``resile.Worker`` runs it (thread or process mode). There is no second queue
here. What differs from the seed, and why, is in ``docs/compat.md``.
"""

from __future__ import annotations

import atexit
import base64
import importlib
import importlib.util
import json
import logging
import math
import multiprocessing
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from resile import _util
from resile.backoff import Backoff, Constant, Exponential, Linear
from resile.errors import DuplicateTask, Permanent, ResultFailed
from resile.queue._names import DEFAULT_QUEUE, TaskStatus
from resile.queue.api import Queue, connect
from resile.queue.context import TaskContext
from resile.queue.task import Task

__all__ = [
    "HANDLER_NAME",
    "ResultEntity",
    "ResultFailed",
    "SchedulerConfig",
    "StorageConfig",
    "TaskBackoffConfig",
    "TaskBackoffScheduler",
    "TaskConfig",
    "TaskEntity",
    "ThreadPoolConfig",
    "backoff_for",
]

logger = logging.getLogger("resile.compat")

#: The handler name every task created through this API is stored with.
HANDLER_NAME = "resile.compat"
#: The strategies of the seed, in its spelling.
STRATEGIES = ("fixed", "linear", "exponential")
# The name resile's process-mode worker gives its children (resile.queue.worker).
_CHILD_PROCESS_NAME = "resile-worker-child"
# How long shutdown() lets running attempts finish before handing them back.
_SHUTDOWN_GRACE = 10.0

TaskHandler = Callable[["TaskEntity"], Any]


def _number(owner: str, name: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{owner}: {name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


# -- configuration ----------------------------------------------------------------------------


# type -> (URL scheme, default port); "postgres" and "mariadb" are accepted spellings.
_SQL_TYPES = {"postgresql": ("postgresql", 5432), "mysql": ("mysql", 3306)}
_TYPE_ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}
_TYPES = ("sqlite", "redis", *_SQL_TYPES)


@dataclass
class StorageConfig:
    """Where the tasks live: ``type="sqlite"``, ``"redis"``, ``"postgresql"`` or ``"mysql"``.

    Args:
        type: ``"redis"`` (the seed's default), ``"sqlite"`` (one file),
            ``"postgresql"`` (or ``"postgres"``) or ``"mysql"`` (or ``"mariadb"``:
            MySQL 8 / MariaDB 10.6+), the databases the seed's roadmap announced.
        host, port, database, password: the server. Redis: ``database`` is the
            db number, mapped to ``redis://[:password@]host:port/database``.
            PostgreSQL / MySQL: ``database`` is the database's name, mapped to
            ``postgresql://user:password@host:port/database`` (or ``mysql://``).
            ``port=None`` is the type's usual port (6379, 5432, 3306).
        user: the login of a PostgreSQL or MySQL server (resile's addition).
        path: the SQLite file (default ``resile.db``), mapped to ``sqlite:///path``.
        url: any store URL ``resile.connect`` accepts; overrides the fields above.

    Raises:
        ValueError: an unknown type or a bad field, named with its value.
    """

    type: str = "redis"
    host: str = "localhost"
    port: int | None = None
    database: int | str = 0
    password: str = ""
    path: str | None = None
    url: str | None = None
    user: str = ""

    def __post_init__(self) -> None:
        kind = self.type.lower() if isinstance(self.type, str) else self.type
        kind = _TYPE_ALIASES.get(kind, kind)
        if kind not in _TYPES:
            raise ValueError(
                f"StorageConfig: type must be one of {list(_TYPES)}, got {self.type!r}"
            )
        self.type = kind
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"StorageConfig: host must be a non-empty str, got {self.host!r}")
        if self.port is not None:
            _util.integer(self.port, "port", "StorageConfig", minimum=1)
            if self.port > 65535:
                raise ValueError(f"StorageConfig: port must be <= 65535, got {self.port!r}")
        if kind in _SQL_TYPES:
            if self.url is None and (not isinstance(self.database, str) or not self.database):
                raise ValueError(
                    f"StorageConfig: database must name the {kind} database (a non-empty str), "
                    f"got {self.database!r}"
                )
        else:
            _util.integer(self.database, "database", "StorageConfig")
        for name in ("password", "user"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(
                    f"StorageConfig: {name} must be a str, got {getattr(self, name)!r}"
                )
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"StorageConfig: path must be a non-empty str, got {self.path!r}")
        if self.url is not None and (not isinstance(self.url, str) or "://" not in self.url):
            raise ValueError(
                f"StorageConfig: url must look like 'sqlite:///tasks.db', got {self.url!r}"
            )

    def to_url(self) -> str:
        """The store URL ``resile.connect`` opens for this config."""
        if self.url is not None:
            return self.url
        if self.type == "sqlite":
            return f"sqlite:///{self.path or 'resile.db'}"
        if self.type in _SQL_TYPES:
            scheme, default_port = _SQL_TYPES[self.type]
            auth = quote(self.user, safe="")
            if self.password:
                auth += f":{quote(self.password, safe='')}"
            login = f"{auth}@" if auth else ""
            port = self.port or default_port
            return f"{scheme}://{login}{self.host}:{port}/{quote(str(self.database), safe='')}"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port or 6379}/{self.database}"


def backoff_for(strategy: str, interval: float, multiplier: float = 2.0) -> Backoff:
    """The resile strategy for one of the seed's: ``fixed``, ``linear``, ``exponential``.

    * ``fixed`` -> ``Constant(interval)``: ``d(n) = interval``;
    * ``linear`` -> ``Linear(interval, interval)``: ``d(n) = interval * n``;
    * ``exponential`` -> ``Exponential(interval, multiplier, jitter="none")``:
      ``d(n) = interval * multiplier ** (n - 1)`` (the seed has no jitter).

    ``n`` counts the failed attempts from 1.

    Raises:
        ValueError: an unknown strategy, a negative interval, a multiplier below 1.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"TaskConfig: backoff_strategy must be one of {list(STRATEGIES)}, got {strategy!r}"
        )
    seconds = _number("TaskConfig", "backoff_interval", interval)
    if strategy == "fixed":
        return Constant(seconds)
    if strategy == "linear":
        return Linear(seconds, seconds)
    factor = _number("TaskConfig", "backoff_multiplier", multiplier, minimum=1.0)
    return Exponential(seconds, factor, jitter="none")


@dataclass
class TaskConfig:
    """The tasks of one business prefix (a resile queue) and their retry policy.

    Args:
        biz_prefix: the queue name.
        batch_size: accepted for compatibility; a resile worker leases as many
            due tasks as it has free slots, so it is not used.
        max_retry_count: retries after the first attempt.
        backoff_strategy: ``"fixed"``, ``"linear"`` or ``"exponential"``.
        backoff_interval: the first wait, seconds.
        backoff_multiplier: growth factor of ``"exponential"`` (>= 1).
        min_gpu_memory_gb, min_gpu_utilization: what a worker must offer to
            run the tasks (see ``resile.Worker``'s ``probe``).

    Raises:
        ValueError: any bad field, named with its value.
    """

    biz_prefix: str = DEFAULT_QUEUE
    batch_size: int = 100
    max_retry_count: int = 3
    backoff_strategy: str = "exponential"
    backoff_interval: float = 30
    backoff_multiplier: float = 2.0
    min_gpu_memory_gb: float = 0
    min_gpu_utilization: float = 0

    def __post_init__(self) -> None:
        if not isinstance(self.biz_prefix, str) or not self.biz_prefix:
            raise ValueError(
                f"TaskConfig: biz_prefix must be a non-empty str, got {self.biz_prefix!r}"
            )
        _util.integer(self.batch_size, "batch_size", "TaskConfig", minimum=1)
        _util.integer(self.max_retry_count, "max_retry_count", "TaskConfig")
        _number("TaskConfig", "min_gpu_memory_gb", self.min_gpu_memory_gb)
        _number("TaskConfig", "min_gpu_utilization", self.min_gpu_utilization)
        if self.min_gpu_utilization > 100:
            raise ValueError(
                f"TaskConfig: min_gpu_utilization must be <= 100, got {self.min_gpu_utilization!r}"
            )
        self.backoff()  # checks strategy, interval and multiplier

    def backoff(self) -> Backoff:
        """The resile strategy for this config (see ``backoff_for``)."""
        return backoff_for(self.backoff_strategy, self.backoff_interval, self.backoff_multiplier)

    def resources(self) -> dict[str, float]:
        """The resource needs stored with each task (only the non-zero ones)."""
        needs = {
            "min_gpu_memory_gb": float(self.min_gpu_memory_gb),
            "min_gpu_utilization": float(self.min_gpu_utilization),
        }
        return {k: v for k, v in needs.items() if v > 0}


@dataclass
class ThreadPoolConfig:
    """How tasks run: ``concurrency`` at once, in threads or child processes.

    Args:
        concurrency: attempts at once.
        exec_timeout: seconds one attempt may run; process mode kills the
            child, thread mode abandons the thread (it cannot be killed).
        proc_mode: ``"process"`` (the seed's default) or ``"thread"``.

    Raises:
        ValueError: any bad field, named with its value.
    """

    concurrency: int = 10
    exec_timeout: float = 300
    proc_mode: str = "process"

    def __post_init__(self) -> None:
        _util.integer(self.concurrency, "concurrency", "ThreadPoolConfig", minimum=1)
        if _number("ThreadPoolConfig", "exec_timeout", self.exec_timeout) <= 0:
            raise ValueError(
                f"ThreadPoolConfig: exec_timeout must be > 0, got {self.exec_timeout!r}"
            )
        if self.proc_mode not in ("thread", "process"):
            raise ValueError(
                f"ThreadPoolConfig: proc_mode must be 'thread' or 'process', got {self.proc_mode!r}"
            )


@dataclass
class SchedulerConfig:
    """Accepted for compatibility: ``interval`` was the seed's poll period.

    resile does not poll on a period: a worker sleeps until the next task is
    due and an enqueue wakes it, so ``interval`` is checked and kept but not used.

    Raises:
        ValueError: ``interval`` is not a number > 0.
    """

    interval: float = 10

    def __post_init__(self) -> None:
        if _number("SchedulerConfig", "interval", self.interval) <= 0:
            raise ValueError(f"SchedulerConfig: interval must be > 0, got {self.interval!r}")


@dataclass
class TaskBackoffConfig:
    """The four parts of a scheduler's configuration; assign them as attributes."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    threadpool: ThreadPoolConfig = field(default_factory=ThreadPoolConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


# -- entities ---------------------------------------------------------------------------------

_STRATEGY_NAMES = {"constant": "fixed", "linear": "linear", "exponential": "exponential"}


@dataclass
class TaskEntity:
    """A task as the seed described it; built from a stored ``resile.Task``.

    Attributes:
        task_id: the id.
        biz_prefix: the queue.
        process: progress, 0..100 (the seed's name).
        status: a ``resile.TaskStatus`` (a ``str``: ``"PENDING"``, ``"DOING"``,
            ``"DONE"``, ``"FAILED"``, ``"CANCELED"``).
        result: ``DONE``: the handler's result; ``FAILED``: the last error's
            message; otherwise ``""``.
        param: the task's params as a JSON string (``params`` has the dict).
        retry_count: retries made or scheduled so far.
        next_execution_time: epoch seconds when a ``PENDING`` task is due; 0 otherwise.
        create_time, update_time: epoch seconds.
        max_retry_count: retries allowed after the first attempt.
        backoff_strategy, backoff_interval, backoff_multiplier: the stored
            policy in the seed's terms (another resile strategy keeps its own
            name, e.g. ``"decorrelated"``).
        min_gpu_memory_gb, min_gpu_utilization: the task's resource needs.
    """

    task_id: str
    biz_prefix: str
    process: int = 0
    status: str = TaskStatus.PENDING
    result: Any = ""
    param: str = "{}"
    retry_count: int = 0
    next_execution_time: int = 0
    create_time: int = 0
    update_time: int = 0
    max_retry_count: int = 3
    backoff_strategy: str = "exponential"
    backoff_interval: float = 30
    backoff_multiplier: float = 2.0
    min_gpu_memory_gb: float = 0
    min_gpu_utilization: float = 0

    @classmethod
    def from_task(cls, task: Task) -> TaskEntity:
        """The seed's view of a stored task."""
        b = task.backoff
        kind = str(b.get("type", ""))
        interval = b.get("delay", b.get("initial", b.get("base", 0.0)))
        if task.status is TaskStatus.DONE:
            result: Any = task.result
        elif task.status is TaskStatus.FAILED and task.last_error is not None:
            result = task.last_error.message
        else:
            result = ""
        pending = task.status is TaskStatus.PENDING
        return cls(
            task_id=task.id,
            biz_prefix=task.queue,
            process=int(task.progress),
            status=task.status,
            result=result,
            param=json.dumps(task.params, ensure_ascii=False),
            retry_count=task.attempts if pending else max(0, task.attempts - 1),
            next_execution_time=int(task.due_at) if pending else 0,
            create_time=int(task.created_at),
            update_time=int(task.updated_at),
            max_retry_count=task.max_retries,
            backoff_strategy=_STRATEGY_NAMES.get(kind, kind),
            backoff_interval=float(interval),
            backoff_multiplier=float(b.get("multiplier", 1.0)),
            min_gpu_memory_gb=task.resources.get("min_gpu_memory_gb", 0.0),
            min_gpu_utilization=task.resources.get("min_gpu_utilization", 0.0),
        )

    @property
    def params(self) -> dict[str, Any]:
        """``param`` decoded: the task's params as a dict."""
        value = json.loads(self.param)
        return value if isinstance(value, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """The seed's task record as a dict (``status`` as its string value)."""
        data = asdict(self)
        data["status"] = str(self.status)
        return data


@dataclass
class ResultEntity:
    """What a task handler returns: ``ResultEntity.ok(...)`` or ``ResultEntity.fail(...)``.

    Attributes:
        success: the attempt succeeded.
        code: 0 on success; the handler's error code otherwise.
        message: a human-readable outcome.
        result: a JSON value: stored as the task's result on success, kept in
            the error message on failure.
        task_id: the task it is about (informative).
    """

    success: bool
    code: int = 0
    message: str = ""
    result: Any = None
    task_id: str | None = None

    @classmethod
    def ok(
        cls, result: Any = None, task_id: str | None = None, message: str = "success"
    ) -> ResultEntity:
        """A successful outcome carrying ``result`` (plain JSON)."""
        return cls(success=True, code=0, message=message, result=result, task_id=task_id)

    @classmethod
    def fail(
        cls,
        code: int = -1,
        message: str = "",
        result: Any = None,
        task_id: str | None = None,
    ) -> ResultEntity:
        """A failed outcome: the attempt counts as failed and is retried on the task's policy."""
        return cls(success=False, code=code, message=message, result=result, task_id=task_id)

    @classmethod
    def res(
        cls,
        success: bool,
        code: int,
        result: Any = None,
        task_id: str | None = None,
        message: str = "",
    ) -> ResultEntity:
        """Any outcome, spelled out (the seed's general constructor)."""
        return cls(success=success, code=code, message=message, result=result, task_id=task_id)


# -- running one task (in the worker's thread or its child process) ------------------------------


class _Handlers:
    """The user's two handlers, read at call time."""

    def __init__(self) -> None:
        self.task_handler: TaskHandler | None = None
        self.exception_handler: TaskHandler | None = None


def _run_entity(handlers: _Handlers, task: Task) -> Any:
    entity = TaskEntity.from_task(task)
    handler = handlers.task_handler
    if handler is None:
        raise ResultFailed(-1, "no task handler is set: call set_custom_task_handler(fn)")
    try:
        outcome = handler(entity)
    except Exception as exc:
        described = _call_exception_handler(handlers, entity)
        if isinstance(exc, Permanent):
            raise
        if described is not None and not described.success:
            raise ResultFailed(
                described.code,
                f"{type(exc).__name__}: {exc} ({described.message})"
                if described.message
                else f"{type(exc).__name__}: {exc}",
                described.result,
            ) from exc
        raise
    if isinstance(outcome, ResultEntity):
        if outcome.success:
            return outcome.result
        raise ResultFailed(outcome.code, outcome.message, outcome.result)
    return outcome


def _call_exception_handler(handlers: _Handlers, entity: TaskEntity) -> ResultEntity | None:
    fn = handlers.exception_handler
    if fn is None:
        return None
    try:
        described = fn(entity)
    except Exception:
        logger.exception("resile.compat: the exception handler failed on task %s", entity.task_id)
        return None
    return described if isinstance(described, ResultEntity) else None


def _register(queue: Queue, handlers: _Handlers, policy: Mapping[str, Any]) -> None:
    """Register the one compat handler on ``queue``; it calls the user's handlers."""

    def run_compat_task(ctx: TaskContext, **params: Any) -> Any:
        return _run_entity(handlers, ctx.task)

    queue.task(
        name=HANDLER_NAME,
        queue=str(policy["queue"]),
        backoff=dict(policy["backoff"]),
        max_retries=int(policy["max_retries"]),
        timeout=policy["timeout"],
        resources=dict(policy["resources"]),
    )(run_compat_task)


def _reference(fn: Callable[..., Any], what: str) -> dict[str, str | None]:
    """Where a process-mode child finds a module-level function.

    ``module`` and ``qualname``, plus ``root`` (the directory to put on
    ``sys.path``: a fork server keeps the ``sys.path`` it started with) and,
    for a function of the main script, ``main_file`` (a fork server's children
    have no ``__mp_main__``; the script is loaded under that name, so its
    ``if __name__ == "__main__":`` block does not run).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(
            f"proc_mode='process' needs the {what} to be a module-level function that child "
            f"processes can import, got {fn!r}; define it at module level or use "
            "proc_mode='thread'"
        )
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    root: str | None = None
    if isinstance(file, str):
        path = Path(file).resolve()
        depth = module.count(".") + (1 if path.name == "__init__.py" else 0)
        root = str(path.parents[depth])
    main_file = file if module in ("__main__", "__mp_main__") and isinstance(file, str) else None
    return {"module": module, "qualname": qualname, "root": root, "main_file": main_file}


def _resolve(ref: Mapping[str, Any]) -> TaskHandler:
    module_name = str(ref["module"])
    root = ref.get("root")
    if root and root not in sys.path:
        sys.path.append(root)
    obj: Any
    if module_name in ("__main__", "__mp_main__"):
        obj = sys.modules.get("__mp_main__")
        if obj is None and ref.get("main_file"):
            spec = importlib.util.spec_from_file_location("__mp_main__", ref["main_file"])
            if spec is None or spec.loader is None:
                raise ImportError(
                    f"resile.compat: cannot load the main script {ref['main_file']!r}"
                )
            obj = importlib.util.module_from_spec(spec)
            sys.modules["__mp_main__"] = obj
            spec.loader.exec_module(obj)
        if obj is None:
            raise ImportError("resile.compat: the handler is in __main__, which cannot be loaded")
    else:
        obj = importlib.import_module(module_name)
    for part in str(ref["qualname"]).split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"resile.compat: {module_name}:{ref['qualname']} is not callable")
    return obj  # type: ignore[no-any-return]


class _ProcessQueues:
    """``resile.compat:_process_queues.<token>``: the queue a process-mode child imports.

    The token encodes the store URL, the policy and the handlers' import
    references, so a child rebuilds the scheduler's queue without the parent's
    objects. Built once per token and process.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Queue] = {}
        self._lock = threading.Lock()

    @staticmethod
    def token(spec: Mapping[str, Any]) -> str:
        raw = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
        return "q" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def __getattr__(self, token: str) -> Queue:
        if not token.startswith("q"):
            raise AttributeError(token)
        with self._lock:
            queue = self._cache.get(token)
            if queue is None:
                body = token[1:]
                spec = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
                handlers = _Handlers()
                handlers.task_handler = _resolve(spec["handler"])
                if spec.get("exception_handler"):
                    handlers.exception_handler = _resolve(spec["exception_handler"])
                queue = connect(spec["url"], queue=spec["policy"]["queue"])
                _register(queue, handlers, spec["policy"])
                self._cache[token] = queue
            return queue


_process_queues = _ProcessQueues()


def _in_worker_child() -> bool:
    return multiprocessing.current_process().name == _CHILD_PROCESS_NAME


# -- the scheduler ----------------------------------------------------------------------------


class TaskBackoffScheduler:
    """The seed's scheduler: a task API, and (after ``start()``) a worker in the background.

    Args:
        config: the configuration (storage, task policy, pool, scheduler).

    Attributes:
        config: the configuration.
        queue: the ``resile.Queue`` it uses (``resile worker module:scheduler.queue``
            runs its tasks from the command line, in thread mode).
        worker: the running ``resile.Worker`` after ``start()``, else ``None``.

    Raises:
        TypeError: ``config`` is not a ``TaskBackoffConfig`` (or a part has the wrong type).
        ValueError: a bad configuration value, a store URL that cannot be opened.
        NotImplementedError: a store backend that is not part of this version.
    """

    def __init__(self, config: TaskBackoffConfig) -> None:
        if not isinstance(config, TaskBackoffConfig):
            raise TypeError(
                f"TaskBackoffScheduler: config must be a TaskBackoffConfig, got {config!r}"
            )
        for name, kind in (
            ("storage", StorageConfig),
            ("task", TaskConfig),
            ("threadpool", ThreadPoolConfig),
            ("scheduler", SchedulerConfig),
        ):
            part = getattr(config, name)
            if not isinstance(part, kind):
                raise TypeError(
                    f"TaskBackoffScheduler: config.{name} must be a {kind.__name__}, got {part!r}"
                )
        self.config = config
        self.url = config.storage.to_url()
        self.biz_prefix = config.task.biz_prefix
        self._policy: dict[str, Any] = {
            "queue": self.biz_prefix,
            "backoff": config.task.backoff().to_dict(),
            "max_retries": config.task.max_retry_count,
            "timeout": float(config.threadpool.exec_timeout),
            "resources": config.task.resources(),
        }
        self.queue: Queue = connect(self.url, queue=self.biz_prefix)
        self._handlers = _Handlers()
        _register(self.queue, self._handlers, self._policy)
        self.worker: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TaskBackoffScheduler({self.url!r}, biz_prefix={self.biz_prefix!r}, {state})"

    # -- handlers ---------------------------------------------------------------------------------

    def set_custom_task_handler(self, handler: TaskHandler) -> None:
        """Set the function that runs each task: ``handler(TaskEntity) -> ResultEntity``.

        ``ResultEntity.ok(result=...)`` completes the task (``result`` is
        stored); ``ResultEntity.fail(...)`` or an exception fails the attempt,
        which is retried on the task's backoff until ``max_retry_count``
        retries are spent, then the task is ``FAILED``. A plain return value
        counts as success and is stored as the result.

        Raises:
            TypeError: ``handler`` is not callable.
            RuntimeError: in process mode while started (children already
                imported the handlers; set them before ``start()``).
        """
        self._set_handler("task_handler", handler)

    def set_custom_task_exception_handler(self, handler: TaskHandler) -> None:
        """Set the function called with the ``TaskEntity`` when the task handler raises.

        It runs where the handler ran, right after the exception; a
        ``ResultEntity.fail(code=..., message=...)`` it returns is recorded
        with the exception in the task's last error. The attempt fails either
        way; an exception of its own is logged and ignored.

        Raises:
            TypeError, RuntimeError: as ``set_custom_task_handler``.
        """
        self._set_handler("exception_handler", handler)

    def _set_handler(self, slot: str, handler: TaskHandler) -> None:
        if not callable(handler):
            raise TypeError(f"TaskBackoffScheduler: the {slot} must be callable, got {handler!r}")
        if self.running and self.config.threadpool.proc_mode == "process":
            raise RuntimeError(
                f"TaskBackoffScheduler: set the {slot} before start() in process mode "
                "(the worker's child processes have already imported the handlers)"
            )
        setattr(self._handlers, slot, handler)

    # -- tasks ------------------------------------------------------------------------------------

    def create_task(
        self,
        task_params: Mapping[str, Any],
        task_id: str | None = None,
        priority: int | None = None,
    ) -> tuple[bool, str]:
        """Store a ``PENDING`` task that runs the handler with ``task_params``.

        Args:
            task_params: the task's params (a dict of plain JSON).
            task_id: the id, unique in the store; ``None`` generates one.
            priority: lower runs first. ``None`` uses the creation time in
                epoch seconds, as the seed did: tasks without a priority run
                first in, first out, after any task given a smaller number.

        Returns:
            ``(True, task_id)`` when stored; ``(False, reason)`` when refused
            (a duplicate id, params that are not plain JSON, a bad id or
            priority): the reason names the field and the value, and nothing
            is stored.
        """
        if not isinstance(task_params, Mapping):
            return False, f"create_task: task_params must be a dict, got {task_params!r}"
        if priority is None:
            priority = int(time.time())
        try:
            task = self.queue.enqueue(
                HANDLER_NAME, dict(task_params), id=task_id, priority=priority
            )
        except DuplicateTask:
            return False, f"create_task: task_id {task_id!r} already exists"
        except (TypeError, ValueError) as exc:
            return False, f"create_task: {exc}"
        return True, task.id

    def get_task(self, task_id: str) -> TaskEntity | None:
        """The task with this id in the seed's shape, or ``None`` when there is none."""
        task = self.queue.get(task_id)
        return None if task is None else TaskEntity.from_task(task)

    def cancel_task(self, task_id: str) -> tuple[bool, str]:
        """Cancel a pending or running task.

        A pending task never runs. A running one is stopped at the worker's
        next heartbeat: process mode kills its child; thread mode sets
        ``TaskContext.canceled`` and drops its result.

        Returns:
            ``(True, message)`` when canceled now or already canceled;
            ``(False, message)`` when the task does not exist or has finished.
        """
        task = self.queue.get(task_id)
        if task is None:
            return False, f"task {task_id!r} does not exist"
        if task.status is TaskStatus.CANCELED:
            return True, f"task {task_id!r} was already canceled"
        if task.terminal:
            return False, f"task {task_id!r} is {task.status.value} and cannot be canceled"
        if self.queue.cancel(task_id):
            return True, f"task {task_id!r} canceled"
        after = self.queue.get(task_id)
        state = "gone" if after is None else after.status.value
        return False, f"task {task_id!r} finished meanwhile ({state}) and cannot be canceled"

    def get_queue_statistics(self, *, limit: int | None = None) -> dict[str, Any]:
        """Counts and ids of this prefix's tasks per state, in the seed's shape.

        ``{"system_status": {"update_time": "YYYY-mm-dd HH:MM:SS"},
        "tasks": {"PENDING": {"total": n, "queue": [ids]}, "DOING": ...,
        "DONE": ..., "FAILED": ..., "CANCELED": ...}}``. ``CANCELED`` is
        resile's addition; ids are listed oldest first.

        Args:
            limit: list at most this many ids per state (``None``: all of them,
                as the seed did; ``total`` is always the full count).
        """
        if limit is not None:
            _util.integer(limit, "limit", "get_queue_statistics")
        counts = self.queue.stats(self.biz_prefix)
        tasks: dict[str, dict[str, Any]] = {}
        for status in TaskStatus:
            ids: list[str] = []
            after: int | None = None
            while limit is None or len(ids) < limit:
                want = 500 if limit is None else min(500, limit - len(ids))
                if want <= 0:
                    break
                page = self.queue.list(
                    queue=self.biz_prefix, status=status, limit=want, after=after
                )
                ids.extend(t.id for t in page)
                if len(page) < want:
                    break
                after = page[-1].sequence
            tasks[status.value] = {"total": counts[status], "queue": ids}
        return {
            "system_status": {"update_time": time.strftime("%Y-%m-%d %H:%M:%S")},
            "tasks": tasks,
        }

    def update_task_progress(self, task_id: str, progress: float) -> bool:
        """Set a pending or running task's progress (0..100).

        Returns:
            ``True`` when stored; ``False`` when the task does not exist or has finished.

        Raises:
            ValueError: ``progress`` is not a number from 0 to 100.
        """
        return self.queue.store.progress(task_id, progress)

    def mark_task_processing(self, task_id: str) -> bool:
        """``True`` when the task is running (``DOING``), ``False`` otherwise.

        resile moves a task to ``DOING`` only by leasing it to a worker (that
        is what makes a dead worker's task come back), so this cannot start a
        ``PENDING`` task by hand; called from a handler it confirms the state.
        """
        task = self.queue.get(task_id)
        return task is not None and task.status is TaskStatus.DOING

    def mark_task_completed(self, task_id: str, result: Any = "") -> bool:
        """Complete a running (``DOING``) task now with ``result`` (plain JSON).

        The write is made under the task's current lease, atomically: if the
        lease changed hands meanwhile, nothing is written. The worker's own
        later outcome for that attempt is then ignored.

        Returns:
            ``True`` when the task is now ``DONE``; ``False`` when it does not
            exist or is not running.

        Raises:
            ValueError: ``result`` is not plain JSON (the path is named).
        """
        task = self.queue.get(task_id)
        if task is None or task.status is not TaskStatus.DOING or task.lease_owner is None:
            return False
        return self.queue.store.complete(task_id, task.lease_owner, result) is not None

    def mark_task_failed(self, task_id: str, reason: str = "") -> bool:
        """Fail the running attempt of a ``DOING`` task with ``reason``.

        Like a failure of the handler: the task is retried on its backoff, or
        ``FAILED`` when its retries are spent. Written under the current lease,
        atomically.

        Returns:
            ``True`` when recorded; ``False`` when the task does not exist or is not running.
        """
        task = self.queue.get(task_id)
        if task is None or task.status is not TaskStatus.DOING or task.lease_owner is None:
            return False
        error = ResultFailed(-1, str(reason) or "marked failed by mark_task_failed")
        return self.queue.store.fail(task_id, task.lease_owner, error) is not None

    # -- running ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start a ``resile.Worker`` for this prefix in a background thread; returns at once.

        It runs ``threadpool.concurrency`` attempts at once in ``proc_mode``
        (``"process"``: a child process per slot, which imports the handlers
        by module and name; ``"thread"``: a thread pool). Calling it again
        while running does nothing. Inside one of resile's worker children it
        does nothing either, so a module that starts its scheduler at import
        time can be imported by the children.

        Raises:
            RuntimeError: no task handler is set.
            ValueError: process mode with a handler that is not a module-level
                function, or with a store other processes cannot open.
        """
        if _in_worker_child():
            return
        from resile.queue.worker import Worker

        with self._lock:
            if self.running:
                return
            if self._handlers.task_handler is None:
                raise RuntimeError(
                    "TaskBackoffScheduler.start: no task handler is set; call "
                    "set_custom_task_handler(fn) first"
                )
            mode: Literal["thread", "process"] = (
                "process" if self.config.threadpool.proc_mode == "process" else "thread"
            )
            options: dict[str, Any] = {}
            if mode == "process":
                spec = {
                    "url": self.url,
                    "policy": self._policy,
                    "handler": _reference(self._handlers.task_handler, "task handler"),
                    "exception_handler": (
                        None
                        if self._handlers.exception_handler is None
                        else _reference(self._handlers.exception_handler, "exception handler")
                    ),
                }
                options["import_path"] = f"{__name__}:_process_queues.{_ProcessQueues.token(spec)}"
            worker = Worker(
                self.queue,
                concurrency=self.config.threadpool.concurrency,
                mode=mode,
                queues=[self.biz_prefix],
                **options,
            )
            thread = threading.Thread(
                target=self._serve,
                args=(worker,),
                name=f"resile-compat-{self.biz_prefix}",
                daemon=True,
            )
            self.worker = worker
            self._thread = thread
            thread.start()
            _live.add(self)

    def _serve(self, worker: Any) -> None:
        try:
            worker.run()
        except Exception:
            logger.exception("resile.compat: the worker of %r stopped", self.biz_prefix)

    def shutdown(self, *, grace: float = _SHUTDOWN_GRACE) -> None:
        """Stop the worker: no new tasks, running ones get ``grace`` seconds, the rest are handed back.

        Returns once the worker has stopped. The task API keeps working.
        Idempotent.
        """
        with self._lock:
            worker, thread = self.worker, self._thread
            self.worker = None
            self._thread = None
        if worker is None or thread is None:
            return
        worker.grace = float(grace)
        worker.stop()
        thread.join(grace + 30.0)
        _live.discard(self)

    def close(self) -> None:
        """``shutdown()``, then close the store connection."""
        self.shutdown()
        self.queue.close()

    def __enter__(self) -> TaskBackoffScheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


# Schedulers still running when the interpreter exits hand their tasks back.
_live: weakref.WeakSet[TaskBackoffScheduler] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for scheduler in list(_live):
        try:
            scheduler.shutdown(grace=1.0)
        except Exception:
            logger.exception("resile.compat: shutdown of %r at exit failed", scheduler)
