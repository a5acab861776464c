"""The user API of the durable queue: ``connect``, ``Queue``, ``@queue.task``.

::

    import resile

    queue = resile.connect("sqlite:///tasks.db")

    @queue.task(backoff=resile.Exponential(1.0, max_delay=60), max_retries=5, timeout=30)
    def send_email(to: str, body: str) -> dict: ...

    job = send_email.enqueue(to="a@b.c", body="hi", priority=10, delay=0, id="mail-42")
    queue.get("mail-42").status      # TaskStatus.PENDING, then DOING, DONE ...
    queue.cancel("mail-42"); queue.stats()

The keywords are the retry engine's (``backoff=`` takes the same strategy
objects as ``@resile.retry``) plus ``max_retries``, ``timeout``, ``priority``,
``queue`` and ``resources``. Everything is checked when the task is declared
or enqueued, so a bad value fails in the producer, naming the field, and
nothing is stored.
"""

from __future__ import annotations

import builtins
import inspect
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from resile._closing import Closing
from resile.backoff import Backoff
from resile.queue._names import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    TERMINAL_STATUSES,
    TaskStatus,
)
from resile.queue.context import TaskContext, context_parameter
from resile.queue.schedules import (
    Missed,
    Overlap,
    Rule,
    Schedule,
    ScheduleRecord,
    check_name,
    tick_id,
    tick_spec,
)
from resile.queue.store import IfExists, Store, open_store
from resile.queue.task import JSONValue, Task, TaskSpec

__all__ = ["ENQUEUE_OPTIONS", "Queue", "TaskContext", "TaskFunction", "connect"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "sqlite:///resile.db"
# Keywords of ``TaskFunction.enqueue`` that are options, not handler params.
ENQUEUE_OPTIONS = frozenset({"priority", "delay", "due_at", "id", "if_exists"})

_UNSET: Any = object()


def connect(url: str | Store = DEFAULT_URL, *, queue: str = DEFAULT_QUEUE, **options: Any) -> Queue:
    """Open a queue on the store a URL names.

    Args:
        url: ``"sqlite:///tasks.db"`` (relative path), ``"sqlite:////abs/tasks.db"``,
            ``"sqlite:///:memory:"`` (one process, for tests), later
            ``"redis://host:6379/0"``; or an open ``Store``.
        queue: the default queue name for tasks declared on it.
        options: passed to the store (``clock=``, ``busy_timeout=`` ...).

    Raises:
        ValueError: a malformed URL or an unknown scheme.
        NotImplementedError: a backend that is not part of this version.
    """
    store = url if isinstance(url, Store) else open_store(url, **options)
    return Queue(store, name=queue)


def _check_policy(policy: object) -> tuple[Backoff, int | None]:
    """Take the backoff (and the attempt cap, when its stop condition has one) of a ``Retrying``."""
    from resile.retry import Retrying

    if not isinstance(policy, Retrying):
        raise ValueError(f"task: policy must be a resile.Retrying, got {policy!r}")
    cap = policy.stop.max_attempts()
    return policy.backoff, (int(cap) - 1 if cap != float("inf") and cap >= 1 else None)


class TaskFunction(Generic[P, R]):
    """A function registered as a task handler: call it directly, or ``enqueue`` it.

    Attributes:
        fn: the plain function (sync or async).
        name: the handler name stored with each task.
        queue: the ``Queue`` it is registered on.
        queue_name: the queue its tasks go to by default.
        is_async: ``fn`` is a coroutine function.
        context_param: the name of the parameter that receives a
            ``TaskContext`` (annotated ``TaskContext`` or named ``ctx``), or ``None``.
        priority, max_retries, backoff, timeout, resources: the defaults of its tasks.
    """

    def __init__(
        self,
        queue: Queue,
        fn: Callable[P, R],
        *,
        name: str,
        queue_name: str,
        priority: int,
        max_retries: int,
        backoff: dict[str, Any],
        timeout: float | None,
        resources: dict[str, float],
    ) -> None:
        self.fn = fn
        self.name = name
        self.queue = queue
        self.queue_name = queue_name
        self.priority = priority
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.resources = resources
        # The defaults as checked at declaration: while the attributes still are these very
        # objects, a spec is built without checking them again (TaskSpec._prechecked).
        self._checked = (queue_name, priority, max_retries, backoff, timeout, resources)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.context_param = context_parameter(fn)
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None and self.context_param is not None:
            sig = sig.replace(
                parameters=[p for n, p in sig.parameters.items() if n != self.context_param]
            )
        self.signature = sig
        self._param_names = frozenset(sig.parameters) if sig is not None else frozenset()
        # Keyword-only calls (the common case) bind without inspect: (signature, the names a
        # keyword may give, the names that must be given), or None when *args / **kwargs
        # make the signature's own binding necessary.
        self._kw_fast: tuple[inspect.Signature, frozenset[str], frozenset[str]] | None = None
        if sig is not None:
            kinds = {p.kind for p in sig.parameters.values()}
            if not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
                self._kw_fast = (
                    sig,
                    frozenset(
                        n
                        for n, p in sig.parameters.items()
                        if p.kind is not inspect.Parameter.POSITIONAL_ONLY
                    ),
                    frozenset(
                        n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty
                    ),
                )
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as if it were not a task."""
        return self.fn(*args, **kwargs)

    def _params(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind call arguments to the signature: positional ones become keywords."""
        if self.signature is None:
            if args:
                raise TypeError(f"{self.name}.enqueue: pass params by keyword")
            return dict(kwargs)
        fast = self._kw_fast
        if (
            not args
            and fast is not None
            and fast[0] is self.signature
            and fast[1].issuperset(kwargs)
            and fast[2].issubset(kwargs)
        ):
            return dict(kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}.enqueue{self.signature}: {exc}") from None
        params: dict[str, Any] = {}
        for pname, value in bound.arguments.items():
            kind = self.signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                params.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(
                        f"{self.name}.enqueue: *{pname} cannot be stored; params are keywords"
                    )
            else:
                params[pname] = value
        return params

    def spec(self, *args: Any, **kwargs: Any) -> TaskSpec:
        """The ``TaskSpec`` that ``enqueue`` would store, without storing it.

        Takes the same arguments as ``enqueue``; useful with ``queue.enqueue_many``.
        """
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in ENQUEUE_OPTIONS}
        clash = sorted(set(options) & self._param_names)
        if clash:
            raise TypeError(
                f"{self.name}.enqueue: {clash} is both a parameter of {self.name} and an "
                f"enqueue option; use {self.name}.enqueue_params({{...}}, ...) to pass params "
                "as a dict"
            )
        options.pop("if_exists", None)
        return self._spec(self._params(args, kwargs), **options)

    def _spec(
        self,
        params: Mapping[str, Any],
        *,
        id: str | None = None,
        priority: int = _UNSET,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
    ) -> TaskSpec:
        q, prio, retries, backoff, timeout, resources = self._checked
        if (
            q is self.queue_name
            and prio is self.priority
            and retries is self.max_retries
            and backoff is self.backoff
            and timeout is self.timeout
            and resources is self.resources
        ):
            return TaskSpec._prechecked(
                self.name,
                params,
                q,
                retries,
                backoff,
                timeout,
                resources,
                id=id,
                priority=prio if priority is _UNSET else priority,
                delay=delay,
                due_at=due_at,
            )
        return TaskSpec(
            handler=self.name,
            params=params,
            id=id,
            queue=self.queue_name,
            priority=self.priority if priority is _UNSET else priority,
            max_retries=self.max_retries,
            backoff=self.backoff,
            timeout=self.timeout,
            resources=self.resources,
            delay=delay,
            due_at=due_at,
        )

    def enqueue(self, *args: Any, **kwargs: Any) -> Task:
        """Store a task that runs this function with these arguments; returns it ``PENDING``.

        Arguments bind to the function's signature (a ``TaskContext``
        parameter excepted) and are stored as JSON keyword params. These
        keywords are options, not params: ``priority`` (int, lower first),
        ``delay`` (seconds or ``timedelta`` until due), ``due_at`` (epoch
        seconds), ``id`` (str; generated when omitted) and ``if_exists``
        (``"error"`` or ``"return"``).

        Raises:
            TypeError: the arguments do not fit the signature.
            ValueError: a param is not plain JSON (the path is named), or a
                bad option; nothing is stored.
            resile.DuplicateTask: the id exists and ``if_exists="error"``.
        """
        if_exists: IfExists = kwargs.pop("if_exists", "error")
        spec = self.spec(*args, **kwargs)
        return self.queue.store.create(spec, if_exists=if_exists)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> Task:
        """``enqueue`` for async code (a FastAPI endpoint): the event loop is not blocked.

        On Redis under asyncio this uses an asyncio client; elsewhere the store
        call runs in a worker thread.

        Raises:
            TypeError, ValueError, resile.DuplicateTask: as ``enqueue``.
        """
        if_exists: IfExists = kwargs.pop("if_exists", "error")
        spec = self.spec(*args, **kwargs)
        return await self.queue.store.create_async(spec, if_exists=if_exists)

    def enqueue_params(
        self,
        params: Mapping[str, JSONValue],
        *,
        id: str | None = None,
        priority: int = _UNSET,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
        if_exists: IfExists = "error",
    ) -> Task:
        """``enqueue`` with the params as one dict (for params named like an option).

        Raises:
            TypeError, ValueError, resile.DuplicateTask: as ``enqueue``.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"{self.name}.enqueue_params: params must be a dict, got {params!r}")
        self._params((), params)
        spec = self._spec(params, id=id, priority=priority, delay=delay, due_at=due_at)
        return self.queue.store.create(spec, if_exists=if_exists)

    def enqueue_many(
        self,
        params: Iterable[Mapping[str, JSONValue]],
        *,
        ids: Iterable[str] | None = None,
        priority: int = _UNSET,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
        if_exists: IfExists = "error",
    ) -> builtins.list[Task]:
        """Store one task per params dict in one atomic step (all or none).

        Args:
            params: one dict of keyword params per task.
            ids: one id per task (``None``: generated).

        Raises:
            TypeError, ValueError, resile.DuplicateTask: as ``enqueue``; nothing is stored.
        """
        specs = self._many_specs(params, ids, priority, delay, due_at)
        return self.queue.store.create_many(specs, if_exists=if_exists)

    async def enqueue_many_async(
        self,
        params: Iterable[Mapping[str, JSONValue]],
        *,
        ids: Iterable[str] | None = None,
        priority: int = _UNSET,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
        if_exists: IfExists = "error",
    ) -> builtins.list[Task]:
        """``enqueue_many`` for async code.

        Raises:
            TypeError, ValueError, resile.DuplicateTask: as ``enqueue``; nothing is stored.
        """
        specs = self._many_specs(params, ids, priority, delay, due_at)
        return await self.queue.store.create_many_async(specs, if_exists=if_exists)

    def _many_specs(
        self,
        params: Iterable[Mapping[str, JSONValue]],
        ids: Iterable[str] | None,
        priority: int,
        delay: float | timedelta,
        due_at: float | None,
    ) -> builtins.list[TaskSpec]:
        items = builtins.list(params)
        id_list: builtins.list[str | None] = (
            [None] * len(items) if ids is None else builtins.list(ids)
        )
        if len(id_list) != len(items):
            raise ValueError(
                f"{self.name}.enqueue_many: {len(id_list)} ids for {len(items)} params dicts"
            )
        specs = []
        for i, (p, tid) in enumerate(zip(items, id_list, strict=True)):
            if p.__class__ is not dict and not isinstance(p, Mapping):  # dict: skip the ABC
                raise ValueError(f"{self.name}.enqueue_many: params[{i}] must be a dict, got {p!r}")
            self._params((), p)
            specs.append(self._spec(p, id=tid, priority=priority, delay=delay, due_at=due_at))
        return specs

    def __repr__(self) -> str:
        return (
            f"<TaskFunction {self.name!r} queue={self.queue_name!r} "
            f"max_retries={self.max_retries} {'async' if self.is_async else 'sync'}>"
        )


class _OnStore(Generic[P, R]):
    """A ``Queue`` attribute that is its store's method of the same name, typed as that method.

    For the methods a queue passes on unchanged: ``queue.list`` *is*
    ``queue.store.list``, with the contract's signature and docstring, so a
    filter added to ``Store.list`` needs no second copy here.
    """

    def __init__(self, method: Callable[Concatenate[Store, P], R]) -> None:
        self._name = method.__name__
        self.__doc__ = method.__doc__
        self.__wrapped__ = method

    @overload
    def __get__(self, queue: None, owner: type[Any]) -> _OnStore[P, R]: ...

    @overload
    def __get__(self, queue: Queue, owner: type[Any]) -> Callable[P, R]: ...

    def __get__(self, queue: Queue | None, owner: type[Any]) -> Any:
        return self if queue is None else getattr(queue.store, self._name)

    def __repr__(self) -> str:
        return f"<Queue.{self._name}: the store's {self._name}>"


class Queue(Closing):
    """A task store plus the handlers registered on it: what producers and workers share.

    Build it with ``resile.connect(url)``. ``with queue:`` / ``async with
    queue:`` close it (``close`` / ``aclose``) on the way out.

    Args:
        store: the store.
        name: the default queue name of tasks declared here.

    Attributes:
        store: the ``Store``.
        name: the default queue name.
        handlers: handler name -> ``TaskFunction`` (also ``registry``); the
            worker looks handlers up here.
    """

    def __init__(self, store: Store, *, name: str = DEFAULT_QUEUE) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"Queue: store must be a resile Store, got {store!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"Queue: name must be a non-empty str, got {name!r}")
        self.store = store
        self.name = name
        self.handlers: dict[str, TaskFunction[Any, Any]] = {}
        # Declared schedules (@queue.periodic), by name: what a worker reconciles and fires.
        self.periodics: dict[str, Schedule] = {}
        self._lock = threading.Lock()

    @property
    def registry(self) -> dict[str, TaskFunction[Any, Any]]:
        """The same mapping as ``handlers``: handler name -> ``TaskFunction``."""
        return self.handlers

    @property
    def queues(self) -> builtins.list[str]:
        """The queue names of the registered handlers (the default name when none), sorted."""
        names = {tf.queue_name for tf in self.handlers.values()} or {self.name}
        return sorted(names)

    # -- declaring tasks --------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        backoff: Backoff | Mapping[str, Any] | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        priority: int = DEFAULT_PRIORITY,
        queue: str | None = None,
        resources: Mapping[str, float] | None = None,
        policy: Any = None,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(  # the implementation of the two overloads above
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        backoff: Backoff | Mapping[str, Any] | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        priority: int = DEFAULT_PRIORITY,
        queue: str | None = None,
        resources: Mapping[str, float] | None = None,
        policy: Any = None,
    ) -> Any:
        """Register a sync or async function as a task handler.

        Used bare (``@queue.task``) or with options. The result is still
        callable directly and has ``enqueue``, ``enqueue_params``,
        ``enqueue_many`` and ``spec``.

        Args:
            name: the stored handler name (default: the function's qualified name).
            backoff: the retry wait strategy (default
                ``Exponential(1.0, max_delay=60)`` with full jitter).
            max_retries: retries after the first attempt (default 3).
            timeout: exec timeout of one attempt, seconds (default: none).
            priority: default priority; lower runs first.
            queue: the queue its tasks go to (default: the Queue's name).
            resources: needs a worker must meet, e.g. ``{"min_gpu_memory_gb": 0.5}``.
            policy: a ``resile.Retrying`` whose backoff (and attempt cap, as
                ``max_retries``) to use when those are not given.

        Raises:
            ValueError: an invalid option (named, with its value), or a name
                already registered for another function.
            TypeError: ``fn`` is not callable.
        """
        if policy is not None:
            p_backoff, p_retries = _check_policy(policy)
            backoff = p_backoff if backoff is None else backoff
            max_retries = p_retries if max_retries is None else max_retries
        backoff_value: Backoff | Mapping[str, Any] = (
            dict(DEFAULT_BACKOFF) if backoff is None else backoff
        )
        retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        queue_name = self.name if queue is None else queue

        def register(f: Callable[..., Any]) -> TaskFunction[Any, Any]:
            if not callable(f):
                raise TypeError(f"queue.task: expected a function, got {f!r}")
            handler = name if name is not None else getattr(f, "__qualname__", None)
            if not handler:
                raise ValueError(f"queue.task: cannot name {f!r}; pass name=")
            # One TaskSpec checks every default the same way an enqueue will.
            probe = TaskSpec(
                handler=handler,
                queue=queue_name,
                priority=priority,
                max_retries=retries,
                backoff=backoff_value,
                timeout=timeout,
                resources=resources if resources is not None else {},
            )
            tf: TaskFunction[Any, Any] = TaskFunction(
                self,
                f,
                name=handler,
                queue_name=queue_name,
                priority=probe.priority,
                max_retries=probe.max_retries,
                backoff=dict(probe.backoff),  # type: ignore[arg-type]
                timeout=probe.timeout,  # type: ignore[arg-type]
                resources=dict(probe.resources),
            )
            with self._lock:
                old = self.handlers.get(handler)
                if old is not None and _origin(old.fn) != _origin(f):
                    raise ValueError(
                        f"queue.task: handler name {handler!r} is already registered for "
                        f"{old.fn!r}; pass name= to register {f!r} under another name"
                    )
                self.handlers[handler] = tf
            return tf

        if fn is not None:
            return register(fn)
        return register

    # -- durable schedules ------------------------------------------------------------------------

    def periodic(
        self,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        missed: Missed = "skip",
        catch_up: int | float | timedelta | None = None,
        overlap: Overlap = "allow",
        params: Mapping[str, JSONValue] | None = None,
        name: str | None = None,
        backoff: Backoff | Mapping[str, Any] | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        priority: int = DEFAULT_PRIORITY,
        queue: str | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a task handler that every ``resile worker`` of its queue fires on a schedule.

        Each tick is an ordinary task (``queue.get``, the CLI, metrics), enqueued once
        across any number of workers and machines, due at its fire time
        (``TaskContext.scheduled_for``). See ``docs/schedules.md``.

        Args:
            every: seconds (>= 1) or a ``timedelta``: ticks at its multiples since the epoch.
            cron: a cron expression (``"0 3 * * mon-fri"``, cronsim's syntax; needs the
                ``cron`` extra), in time zone ``tz``.
            tz: an IANA time zone name for ``cron``.
            missed: ticks no worker fired in time: ``"skip"``, ``"latest"`` (one run for
                the newest) or ``"all"`` (limited by ``catch_up``).
            catch_up: with ``missed="all"``: an int (the newest that many) or a window
                (``timedelta`` / seconds).
            overlap: a tick while the previous tick's task is pending or running:
                ``"allow"``, ``"skip"``, ``"buffer_one"`` or ``"cancel_previous"``.
            params: the handler's keyword arguments for every tick (plain JSON).
            name: the schedule's name and the handler's (default: the function's
                qualified name).
            backoff, max_retries, timeout, priority, queue, resources: as ``task``.

        Raises:
            ValueError: a bad rule, policy or option (named, with its value), or a name
                already declared for another function.
            ImportError: ``cron=`` without cronsim installed.
        """
        rule = Rule(every=every, cron=cron, tz=tz)  # type: ignore[arg-type]
        window = catch_up.total_seconds() if isinstance(catch_up, timedelta) else catch_up
        # The policies are checked now, before any function is registered.
        Schedule("check", self.name, rule, missed=missed, catch_up=window, overlap=overlap)
        fixed = dict(params or {})

        def declare(fn: Callable[P, R]) -> TaskFunction[P, R]:
            default = getattr(fn, "__qualname__", "").replace(".<locals>", "")
            tf = self.task(
                name=check_name(name if name is not None else default, "periodic"),
                backoff=backoff,
                max_retries=max_retries,
                timeout=timeout,
                priority=priority,
                queue=queue,
                resources=resources,
            )(fn)
            tf._params((), fixed)  # the params fit the signature, or TypeError now
            template = {
                "handler": tf.name,
                "params": fixed,
                "priority": tf.priority,
                "max_retries": tf.max_retries,
                "backoff": dict(tf.backoff),
                "timeout": tf.timeout,
                "resources": dict(tf.resources),
            }
            sched = Schedule(
                name=tf.name,
                queue=tf.queue_name,
                rule=rule,
                missed=missed,
                catch_up=window,
                overlap=overlap,
                task=template,
            )
            tick_spec(sched, 0.0)  # the template makes a valid task, or ValueError now
            with self._lock:
                self.periodics[sched.name] = sched
            return tf

        return declare

    def list_schedules(self) -> builtins.list[ScheduleRecord]:
        """The stored schedules (every queue), by name, with their last fire time
        (``last``), ``next_fire()`` and pause state."""
        return self.store.schedules()

    def pause_schedule(self, name: str) -> bool:
        """Stop schedule ``name`` firing; ``False`` when unknown or paused already."""
        return self.store.pause_schedule(name)

    def resume_schedule(self, name: str) -> bool:
        """Let a paused schedule fire again (``missed=`` decides about the ticks it missed)."""
        return self.store.resume_schedule(name)

    def delete_schedule(self, name: str) -> bool:
        """Delete a schedule's record; a worker whose code declares it adds it again at start."""
        return self.store.delete_schedule(name)

    def trigger_schedule(self, name: str) -> Task:
        """Enqueue one run of schedule ``name`` now, outside its rule (``scheduled_for`` is now).

        Raises:
            KeyError: no such schedule is stored.
        """
        record = self.store.get_schedule(name)
        if record is None:
            raise KeyError(f"no schedule named {name!r}")
        now = self.store.now()
        sched = Schedule.from_record(record)
        return self.store.create(tick_spec(sched, now, task_id=tick_id(name, now, manual=True)))

    # -- producing --------------------------------------------------------------------------------

    def _function(self, handler: str | TaskFunction[Any, Any] | Callable[..., Any]) -> str:
        if isinstance(handler, TaskFunction):
            return handler.name
        if isinstance(handler, str):
            return handler
        for tf in self.handlers.values():
            if tf.fn is handler:
                return tf.name
        raise ValueError(
            f"enqueue: {handler!r} is not a registered handler; decorate it with @queue.task"
        )

    def enqueue(
        self,
        handler: str | TaskFunction[Any, Any] | Callable[..., Any],
        params: Mapping[str, JSONValue] | None = None,
        *,
        id: str | None = None,
        priority: int | None = None,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
        if_exists: IfExists = "error",
        queue: str | None = None,
        max_retries: int | None = None,
        backoff: Backoff | Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = _UNSET,
        resources: Mapping[str, float] | None = None,
        strict: bool = True,
    ) -> Task:
        """Store a task for a handler given by name (or function), params as a dict.

        Unset options take the handler's defaults (or the queue's, for a
        handler registered only in the workers' code, with ``strict=False``).

        Raises:
            ValueError: an unknown handler name (unless ``strict=False``),
                params that are not plain JSON (the path is named), an
                invalid option; nothing is stored.
            TypeError: params that do not fit the registered handler's signature.
            resile.DuplicateTask: the id exists and ``if_exists="error"``.
        """
        spec = self.spec(
            handler,
            params,
            id=id,
            priority=priority,
            delay=delay,
            due_at=due_at,
            queue=queue,
            max_retries=max_retries,
            backoff=backoff,
            timeout=timeout,
            resources=resources,
            strict=strict,
        )
        return self.store.create(spec, if_exists=if_exists)

    def spec(
        self,
        handler: str | TaskFunction[Any, Any] | Callable[..., Any],
        params: Mapping[str, JSONValue] | None = None,
        *,
        id: str | None = None,
        priority: int | None = None,
        delay: float | timedelta = 0.0,
        due_at: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        backoff: Backoff | Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = _UNSET,
        resources: Mapping[str, float] | None = None,
        strict: bool = True,
    ) -> TaskSpec:
        """The ``TaskSpec`` ``enqueue`` would store (same arguments), without storing it."""
        name = self._function(handler)
        tf = self.handlers.get(name)
        if tf is None and strict:
            raise ValueError(
                f"enqueue: unknown handler {name!r}; registered: {sorted(self.handlers)}. "
                "Register it with @queue.task, or pass strict=False to enqueue for workers "
                "that know it"
            )
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ValueError(f"enqueue: params must be a dict, got {params!r}")
        if tf is not None:
            tf._params((), params)
        return TaskSpec(
            handler=name,
            params=params,
            id=id,
            queue=queue if queue is not None else (tf.queue_name if tf else self.name),
            priority=priority if priority is not None else (tf.priority if tf else 0),
            max_retries=(
                max_retries
                if max_retries is not None
                else (tf.max_retries if tf else DEFAULT_MAX_RETRIES)
            ),
            backoff=(
                backoff if backoff is not None else (tf.backoff if tf else dict(DEFAULT_BACKOFF))
            ),
            timeout=timeout if timeout is not _UNSET else (tf.timeout if tf else None),
            resources=resources if resources is not None else (tf.resources if tf else {}),
            delay=delay,
            due_at=due_at,
        )

    def enqueue_many(
        self, specs: Iterable[TaskSpec], *, if_exists: IfExists = "error"
    ) -> builtins.list[Task]:
        """Store several tasks (from ``TaskFunction.spec`` / ``Queue.spec``) atomically.

        Raises:
            resile.DuplicateTask: under ``if_exists="error"``; nothing is stored.
        """
        return self.store.create_many(specs, if_exists=if_exists)

    # -- the same for async code (the event loop is not blocked) ----------------------------------

    async def enqueue_async(
        self,
        handler: str | TaskFunction[Any, Any] | Callable[..., Any],
        params: Mapping[str, JSONValue] | None = None,
        *,
        if_exists: IfExists = "error",
        **options: Any,
    ) -> Task:
        """``enqueue`` for async code; ``options`` are ``enqueue``'s (``id``, ``priority``,
        ``delay``, ``queue`` ...).

        Raises:
            ValueError, TypeError, resile.DuplicateTask: as ``enqueue``.
        """
        spec = self.spec(handler, params, **options)
        return await self.store.create_async(spec, if_exists=if_exists)

    async def enqueue_many_async(
        self, specs: Iterable[TaskSpec], *, if_exists: IfExists = "error"
    ) -> builtins.list[Task]:
        """``enqueue_many`` for async code."""
        return await self.store.create_many_async(specs, if_exists=if_exists)

    async def get_async(self, task_id: str) -> Task | None:
        """``get`` for async code."""
        return await self.store.get_async(task_id)

    async def cancel_async(self, task_id: str) -> bool:
        """``cancel`` for async code."""
        return await self.store.cancel_async(task_id)

    async def stats_async(self, queue: str | None = None) -> dict[TaskStatus, int]:
        """``stats`` for async code."""
        return await self.store.stats_async(queue)

    async def aclose(self) -> None:
        """``close`` for async code (closes this event loop's connections too)."""
        await self.store.aclose()

    # -- looking and managing ---------------------------------------------------------------------

    # The store's own methods, signature and docstring written once, in the Store contract.
    get = _OnStore(Store.get)
    list = _OnStore(Store.list)
    stats = _OnStore(Store.stats)

    def cancel(self, task_id: str) -> bool:
        """Cancel a pending or running task; ``False`` when unknown or already finished."""
        return self.store.cancel(task_id)

    def requeue(self, task_id: str, *, delay: float = 0.0) -> Task | None:
        """Run a ``FAILED`` or ``CANCELED`` task again (attempts reset); ``None`` otherwise."""
        return self.store.requeue(task_id, delay=delay)

    def purge(
        self,
        older_than: float | timedelta = 0.0,
        *,
        statuses: Collection[TaskStatus | str] = TERMINAL_STATUSES,
        queue: str | None = None,
    ) -> int:
        """Delete finished tasks older than ``older_than`` seconds; returns how many."""
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        return self.store.purge(seconds, statuses=statuses, queue=queue)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __repr__(self) -> str:
        return f"Queue({self.store.url!r}, name={self.name!r}, handlers={sorted(self.handlers)})"


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    """Where a function was defined: the same code re-decorated (a module reload) is no clash."""
    return (getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", "") or repr(fn))
