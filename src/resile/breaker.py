"""Circuit breakers: stop calling a dependency that keeps failing, and probe it to see it back.

A ``CircuitBreaker`` is closed while calls succeed. Too many failures (a run
of consecutive ones, or a failure rate over a sliding window) open it: calls
then fail at once with ``CircuitOpen`` without touching the dependency. After
an open period chosen by a backoff strategy (``recovery.delay(k)`` for the
``k``-th consecutive opening, so a dependency that stays down is probed less
and less often) it turns half-open and lets ``half_open_max_calls`` probe
calls through: if they succeed it closes, if one fails it opens again.

::

    breaker = CircuitBreaker(failure_threshold=5, recovery=Exponential(1, max_delay=60, jitter="none"))

    @retry(stop=after_attempts(5) | after_elapsed(30))   # waits for the probe time
    @breaker
    def fetch(url: str) -> bytes: ...

The state lives in a ``BreakerStorage``: in memory by default, or in Redis
(``RedisBreakerStorage``) so that every process of a fleet opens together.
Every state change is one atomic transaction on the storage.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import timedelta
from enum import Enum
from typing import Any, Literal, ParamSpec, TypeVar

from resile import _time, _util
from resile.backoff import Backoff, Exponential
from resile.errors import CircuitOpen
from resile.throttle import AdaptiveThrottle, Throttled

__all__ = [
    "BreakerRecord",
    "BreakerStorage",
    "CircuitBreaker",
    "CircuitState",
    "MemoryBreakerStorage",
    "RedisBreakerStorage",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger("resile")

Listener = Callable[["CircuitState", "CircuitState"], object]
ExcTypes = type[BaseException] | tuple[type[BaseException], ...]

# A ticket says which state a call was admitted in: (generation, is a half-open probe).
_Ticket = tuple[int, bool]

# Buckets of a time-based window (the window is exact to window / _BUCKETS).
_BUCKETS = 20


class CircuitState(str, Enum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    """Calls go through; failures are counted."""
    OPEN = "open"
    """Calls are refused with ``CircuitOpen`` until the open period ends."""
    HALF_OPEN = "half_open"
    """A few probe calls go through; their outcome closes or re-opens the circuit."""

    def __str__(self) -> str:
        return self.value


class BreakerRecord:
    """The state a breaker keeps in its storage; plain data, round-trips through JSON.

    Attributes:
        state: the ``CircuitState``.
        generation: bumped on every state change; a call admitted in an older
            generation does not count (a slow call that ends after the circuit
            opened says nothing about the probe).
        failures: consecutive failures while closed.
        opens: consecutive openings since the circuit last closed (``k`` of
            ``recovery.delay(k)``).
        open_until: the instant (the storage's clock) the open period ends.
        probes: probe calls admitted in this half-open period.
        probe_successes: probe calls that succeeded in this half-open period.
        window: the failure-rate window: a string of ``"0"`` (success) and
            ``"1"`` (failure) for a count-based window, a list of
            ``[bucket, calls, failures]`` for a time-based one.
    """

    __slots__ = (
        "failures",
        "generation",
        "open_until",
        "opens",
        "probe_successes",
        "probes",
        "state",
        "window",
    )

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.generation = 0
        self.failures = 0
        self.opens = 0
        self.open_until = 0.0
        self.probes = 0
        self.probe_successes = 0
        self.window: str | list[list[float]] = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "state": self.state.value,
            "generation": self.generation,
            "failures": self.failures,
            "opens": self.opens,
            "open_until": self.open_until,
            "probes": self.probes,
            "probe_successes": self.probe_successes,
            "window": self.window,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerRecord:
        """Rebuild a record from ``to_dict()`` output.

        Raises:
            ValueError: a field is missing or has an unknown state.
        """
        rec = cls()
        try:
            rec.state = CircuitState(data["state"])
            rec.generation = int(data["generation"])
            rec.failures = int(data["failures"])
            rec.opens = int(data["opens"])
            rec.open_until = float(data["open_until"])
            rec.probes = int(data["probes"])
            rec.probe_successes = int(data["probe_successes"])
            rec.window = data["window"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"BreakerRecord.from_dict: bad record {data!r}: {exc}") from None
        return rec

    def __repr__(self) -> str:
        return (
            f"BreakerRecord(state={self.state.value!r}, generation={self.generation}, "
            f"failures={self.failures}, opens={self.opens}, open_until={self.open_until!r}, "
            f"probes={self.probes}, probe_successes={self.probe_successes})"
        )


class BreakerStorage(ABC):
    """Where a breaker's ``BreakerRecord`` lives.

    ``transact(fn)`` must run ``fn(record, now)`` atomically: no other
    transaction on the same record may interleave, and the changes ``fn``
    makes to the record are saved before ``transact`` returns ``fn``'s
    result. ``fn`` has no side effects besides the record, so a storage may
    run it again on a conflict (optimistic locking). ``now`` is the storage's
    clock, the one ``open_until`` refers to.
    """

    @abstractmethod
    def transact(self, fn: Callable[[BreakerRecord, float], T]) -> T:
        """Run ``fn(record, now)`` atomically and save the record; return ``fn``'s result."""


class MemoryBreakerStorage(BreakerStorage):
    """The default storage: the record in this process's memory, under a lock.

    Its clock is resile's monotonic clock, so ``resile.testing.no_waits()``
    controls it.
    """

    __slots__ = ("_lock", "record")

    def __init__(self) -> None:
        self.record = BreakerRecord()
        self._lock = threading.Lock()

    def transact(self, fn: Callable[[BreakerRecord, float], T]) -> T:
        with self._lock:
            return fn(self.record, _time.clock.monotonic())

    def __repr__(self) -> str:
        return f"MemoryBreakerStorage({self.record!r})"


class RedisBreakerStorage(BreakerStorage):
    """A breaker's state in Redis, shared by every process that uses the same key.

    Failures seen by any process count toward opening the circuit for all of
    them. Each transaction is optimistic: ``WATCH`` the key, read the record,
    compute the change in Python, write it in ``MULTI``/``EXEC``; on a
    conflict it starts again. A transaction that changes nothing writes
    nothing.

    Args:
        client: a ``redis.Redis`` client (redis-py, the ``redis`` extra); sync
            calls, so an async breaker blocks its event loop for the round
            trips.
        key: the Redis key holding the record (a JSON string).
        clock: the shared clock, a function returning seconds. Default:
            ``time.time`` (wall-clock time, which a fleet's NTP keeps in step
            to well under the open periods). Tests pass a fake one.
        max_conflicts: how many ``WATCH`` conflicts in a row to tolerate.

    Raises:
        TypeError: ``key`` not a non-empty string, ``clock`` not callable.
        RuntimeError: (from ``transact``) more than ``max_conflicts`` conflicts in a row.
    """

    __slots__ = ("client", "clock", "key", "max_conflicts")

    def __init__(
        self,
        client: Any,
        key: str,
        *,
        clock: Callable[[], float] | None = None,
        max_conflicts: int = 100,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"RedisBreakerStorage: key must be a non-empty string, got {key!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"RedisBreakerStorage: clock must be callable or None, got {clock!r}")
        _util.integer(max_conflicts, "max_conflicts", "RedisBreakerStorage", minimum=1)
        self.client = client
        self.key = key
        self.clock = clock or time.time
        self.max_conflicts = max_conflicts

    def transact(self, fn: Callable[[BreakerRecord, float], T]) -> T:
        from redis.exceptions import WatchError  # the redis extra, only when used

        for _ in range(self.max_conflicts):
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.key)
                    raw = pipe.get(self.key)
                    if raw is None:
                        record = BreakerRecord()
                        before = None
                    else:
                        before = raw.decode() if isinstance(raw, bytes) else str(raw)
                        record = BreakerRecord.from_dict(json.loads(before))
                    result = fn(record, float(self.clock()))
                    after = json.dumps(record.to_dict(), separators=(",", ":"))
                    if after != before:
                        pipe.multi()
                        pipe.set(self.key, after)
                        pipe.execute()
                    return result
                except WatchError:
                    continue
        raise RuntimeError(
            f"RedisBreakerStorage: key {self.key!r} changed under {self.max_conflicts} "
            "transactions in a row; raise max_conflicts or shard the breaker"
        )

    def __repr__(self) -> str:
        return f"RedisBreakerStorage(key={self.key!r})"


def _exclusion(value: object) -> Callable[[BaseException], bool] | tuple[type[BaseException], ...]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return value
    if callable(value):
        return value
    raise TypeError(
        "CircuitBreaker: exclude must be an exception type, a tuple of them or a predicate "
        f"exc -> bool, got {value!r}"
    )


DEFAULT_RECOVERY = Exponential(1.0, max_delay=60.0, jitter="none")


class CircuitBreaker(_util.Guarded):
    """Refuse calls to a dependency that keeps failing; probe it to see when it is back.

    Args:
        failure_threshold: open after this many consecutive failures while
            closed; ``None`` to use only ``failure_rate``.
        failure_rate: open when, over the window, ``failures / calls >=
            failure_rate`` and ``calls >= minimum_calls``; in ``(0, 1]``, or
            ``None`` (default) for no rate rule. With both rules set, either
            one opens the circuit. The rate rule is checked after every
            recorded call, successes included.
        window: the failure-rate window: seconds (or a ``timedelta``) when
            ``window_type="time"`` (the default, 60 s, kept in 20 buckets so
            it is exact to ``window / 20``), or a number of calls when
            ``window_type="count"`` (the last ``window`` calls).
        window_type: ``"time"`` or ``"count"``.
        minimum_calls: calls the window must hold before the rate rule applies.
        recovery: the open period, a ``resile.backoff`` strategy: the ``k``-th
            consecutive opening lasts ``recovery.delay(k)`` seconds (``k``
            resets when the circuit closes). Default
            ``Exponential(1.0, max_delay=60.0, jitter="none")``: 1, 2, 4, ... 60 s.
        half_open_max_calls: probe calls admitted while half-open; the circuit
            closes once that many probes have succeeded, and opens again (with
            ``k + 1``) on the first probe failure. Other calls are refused with
            ``CircuitOpen(retry_after=recovery.delay(1))`` while the probes run.
        exclude: exceptions that do not count as failures: a type, a tuple of
            types, or a predicate ``exc -> bool``. Such an exception means the
            dependency answered (a bad request, a missing record), so it counts
            as a success. Only ``Exception`` subclasses count at all:
            cancellation and ``KeyboardInterrupt`` count as nothing and give
            a probe's slot back.
        name: shown in ``CircuitOpen`` errors and logs (default ``"circuit"``).
        listeners: callables ``listener(old, new)`` called on every state
            change this breaker sees (see ``add_listener``).
        storage: where the state lives; default a new ``MemoryBreakerStorage``.
            A ``RedisBreakerStorage`` shares it across processes.
        throttle: an ``AdaptiveThrottle`` applied while closed: calls it
            rejects raise ``Throttled`` without touching the dependency, so
            load is shed in proportion before the circuit opens.

    Guard a function with it (``@breaker``, ``breaker.call(fn)``) or a block
    (``with breaker:`` / ``async with breaker:``, which raise ``CircuitOpen``
    before the block when the circuit refuses it; the block then does not run).

    A ``CircuitOpen`` it raises is chained (``__cause__``) to the last failure
    it recorded since it last closed, when that is known: with the default
    in-memory storage. With
    shared storage (Redis) the failure may have happened in another process,
    and ``__cause__`` is ``None``.

    Raises:
        ValueError: a count below its minimum, a rate outside ``(0, 1]``, a
            bad window, no rule at all (both ``failure_threshold`` and
            ``failure_rate`` ``None``); the message names the field and the value.
        TypeError: ``recovery`` not a backoff strategy, ``exclude`` or a
            listener of the wrong kind, ``storage`` not a ``BreakerStorage``.
    """

    def __init__(
        self,
        failure_threshold: int | None = 5,
        failure_rate: float | None = None,
        *,
        window: float | timedelta = 60.0,
        window_type: Literal["time", "count"] = "time",
        minimum_calls: int = 10,
        recovery: Backoff = DEFAULT_RECOVERY,
        half_open_max_calls: int = 1,
        exclude: ExcTypes | Callable[[BaseException], bool] = (),
        name: str | None = None,
        listeners: Iterable[Listener] = (),
        storage: BreakerStorage | None = None,
        throttle: AdaptiveThrottle | None = None,
    ) -> None:
        if failure_threshold is not None:
            failure_threshold = _util.integer(
                failure_threshold, "failure_threshold", "CircuitBreaker", minimum=1
            )
        if failure_rate is not None and (
            isinstance(failure_rate, bool)
            or not isinstance(failure_rate, (int, float))
            or not 0.0 < failure_rate <= 1.0
        ):
            raise ValueError(
                f"CircuitBreaker: failure_rate must be in (0, 1] or None, got {failure_rate!r}"
            )
        if failure_threshold is None and failure_rate is None:
            raise ValueError(
                "CircuitBreaker: failure_threshold and failure_rate are both None; "
                "set at least one, or the circuit could never open"
            )
        if window_type == "count":
            self._window_calls = _util.integer(
                window, "window (a number of calls)", "CircuitBreaker", minimum=1
            )
            self._window_seconds = 0.0
        elif window_type == "time":
            self._window_calls = 0
            self._window_seconds = _time.positive_seconds(window, "window", "CircuitBreaker")
        else:
            raise ValueError(
                f'CircuitBreaker: window_type must be "time" or "count", got {window_type!r}'
            )
        if not isinstance(recovery, Backoff):
            raise TypeError(
                f"CircuitBreaker: recovery must be a resile.backoff strategy, got {recovery!r}"
            )
        if storage is not None and not isinstance(storage, BreakerStorage):
            raise TypeError(
                f"CircuitBreaker: storage must be a resile.breaker.BreakerStorage, got {storage!r}"
            )
        if throttle is not None and not isinstance(throttle, AdaptiveThrottle):
            raise TypeError(
                f"CircuitBreaker: throttle must be a resile.AdaptiveThrottle, got {throttle!r}"
            )
        self.failure_threshold = failure_threshold
        self.failure_rate = None if failure_rate is None else float(failure_rate)
        self.window_type = window_type
        self.minimum_calls = _util.integer(
            minimum_calls, "minimum_calls", "CircuitBreaker", minimum=1
        )
        self.recovery = recovery
        self.half_open_max_calls = _util.integer(
            half_open_max_calls, "half_open_max_calls", "CircuitBreaker", minimum=1
        )
        self.exclude = _exclusion(exclude)
        self.name = name or "circuit"
        self.storage: BreakerStorage = storage if storage is not None else MemoryBreakerStorage()
        self.throttle = throttle
        self._listeners: list[Listener] = []
        for listener in listeners:
            self.add_listener(listener)
        self._lock = threading.Lock()
        self._seen = CircuitState.CLOSED
        # The last failure recorded, kept only with this process's own storage: it is the
        # cause a CircuitOpen is chained to. Shared storage (Redis) knows no such exception.
        self._last_failure: BaseException | None = None
        self._tickets: ContextVar[tuple[_Ticket, ...]] = ContextVar(
            f"resile_breaker_{id(self)}", default=()
        )

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` on every state change this breaker sees.

        Listeners run in the thread that made (or, with shared storage, first
        noticed) the change, after the breaker's lock is released; keep them
        quick. An error in a listener is logged and ignored. With shared
        storage, a breaker reports the changes it observes: if other
        processes went open -> half-open -> closed between two of its calls,
        it reports open -> closed.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"CircuitBreaker: a listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``.

        Raises:
            ValueError: ``listener`` was not added.
        """
        self._listeners.remove(listener)

    def _fire(self, old: CircuitState, new: CircuitState) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "circuit %s: %s -> %s",
                self.name,
                old.value,
                new.value,
                extra={"resile_name": self.name, "resile_old": old.value, "resile_new": new.value},
            )
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception(
                    "resile: circuit %s: listener %r raised; ignored", self.name, listener
                )

    # -- the state machine (pure functions of the record, run inside a transaction) -------

    def _run(self, op: Callable[[BreakerRecord, float], T]) -> T:
        def step(rec: BreakerRecord, now: float) -> tuple[T, CircuitState]:
            return op(rec, now), rec.state

        change: tuple[CircuitState, CircuitState] | None = None
        with self._lock:
            result, state = self.storage.transact(step)
            if state is not self._seen:
                change = (self._seen, state)
                self._seen = state
                if state is CircuitState.CLOSED:
                    self._last_failure = None
        if change is not None:
            self._fire(*change)
        return result

    def _tick(self, rec: BreakerRecord, now: float) -> None:
        if rec.state is CircuitState.OPEN and now >= rec.open_until:
            rec.state = CircuitState.HALF_OPEN
            rec.generation += 1
            rec.probes = 0
            rec.probe_successes = 0

    def _open(self, rec: BreakerRecord, now: float) -> None:
        rec.opens += 1
        rec.state = CircuitState.OPEN
        rec.generation += 1
        rec.open_until = now + self.recovery.delay(rec.opens)
        rec.failures = 0
        rec.window = ""
        rec.probes = 0
        rec.probe_successes = 0

    def _close(self, rec: BreakerRecord) -> None:
        rec.state = CircuitState.CLOSED
        rec.generation += 1
        rec.opens = 0
        rec.failures = 0
        rec.window = ""
        rec.probes = 0
        rec.probe_successes = 0

    def _admit(self, rec: BreakerRecord, now: float) -> _Ticket | float:
        """A ticket for an admitted call, or the seconds until the next probe."""
        self._tick(rec, now)
        if rec.state is CircuitState.CLOSED:
            return (rec.generation, False)
        if rec.state is CircuitState.HALF_OPEN:
            if rec.probes < self.half_open_max_calls:
                rec.probes += 1
                return (rec.generation, True)
            return self.recovery.delay(1)
        return rec.open_until - now

    def _window_add(self, rec: BreakerRecord, now: float, failed: bool) -> tuple[float, float]:
        """Record one outcome in the rate window; return (calls, failures) in it."""
        if self._window_calls:
            w = rec.window if isinstance(rec.window, str) else ""
            w = (w + ("1" if failed else "0"))[-self._window_calls :]
            rec.window = w
            return len(w), w.count("1")
        data = rec.window if isinstance(rec.window, list) else []
        buckets = _time.Buckets(self._window_seconds, _BUCKETS, data)
        buckets.add(now, 1, 1 if failed else 0)
        rec.window = buckets.data
        return buckets.sums(now)

    def _succeeded(self, rec: BreakerRecord, now: float, ticket: _Ticket) -> None:
        generation, probe = ticket
        if generation != rec.generation:
            return
        if probe:
            rec.probe_successes += 1
            if rec.probe_successes >= self.half_open_max_calls:
                self._close(rec)
            return
        rec.failures = 0
        if self.failure_rate is not None:
            self._rate_rule(rec, now, False)

    def _failed(self, rec: BreakerRecord, now: float, ticket: _Ticket) -> None:
        generation, probe = ticket
        if generation != rec.generation:
            return
        if probe:
            self._open(rec, now)
            return
        rec.failures += 1
        if self.failure_threshold is not None and rec.failures >= self.failure_threshold:
            self._open(rec, now)
            return
        if self.failure_rate is not None:
            self._rate_rule(rec, now, True)

    def _rate_rule(self, rec: BreakerRecord, now: float, failed: bool) -> None:
        """Record one outcome in the rate window, then open if the rule holds.

        The rule is checked after every recorded call, a success included (as
        resilience4j does): fail, fail, fail, succeed, succeed with
        ``minimum_calls=5`` and ``failure_rate=0.5`` opens at the fifth call.
        """
        assert self.failure_rate is not None
        calls, failures = self._window_add(rec, now, failed)
        if calls >= self.minimum_calls and failures >= self.failure_rate * calls:
            self._open(rec, now)

    def _released(self, rec: BreakerRecord, now: float, ticket: _Ticket) -> None:
        generation, probe = ticket
        if probe and generation == rec.generation and rec.probes > 0:
            rec.probes -= 1

    # -- the calls -----------------------------------------------------------------------

    def _acquire(self) -> _Ticket:
        admitted = self._run(self._admit)
        if not isinstance(admitted, tuple):
            refused = CircuitOpen(self.name, admitted)
            cause = self._last_failure
            if cause is not None:
                raise refused from cause
            raise refused
        throttle = self.throttle
        if throttle is not None and not admitted[1] and not throttle.allow():
            raise Throttled(throttle.name, throttle.probability())
        return admitted

    def _is_failure(self, exc: BaseException) -> bool:
        exclude = self.exclude
        if isinstance(exclude, tuple):
            return not isinstance(exc, exclude)
        try:
            return not exclude(exc)
        except Exception:
            log.exception(
                "resile: circuit %s: exclude predicate raised; counted as failure", self.name
            )
            return True

    def _settle(self, ticket: _Ticket, exc: BaseException | None) -> None:
        try:
            self._record(ticket, exc)
        except Exception:
            # The call itself is over: its result or error matters more to the caller than
            # a storage that could not count it (Redis down, say).
            log.exception("resile: circuit %s: could not record an outcome; ignored", self.name)

    def _record(self, ticket: _Ticket, exc: BaseException | None) -> None:
        throttle = self.throttle
        if exc is None:
            self._run(lambda rec, now: self._succeeded(rec, now, ticket))
            if throttle is not None:
                throttle.record(True)
        elif not isinstance(exc, Exception):
            self._run(lambda rec, now: self._released(rec, now, ticket))
        elif self._is_failure(exc):
            if isinstance(self.storage, MemoryBreakerStorage):
                self._last_failure = exc
            self._run(lambda rec, now: self._failed(rec, now, ticket))
            if throttle is not None:
                throttle.record(False)
        else:
            self._run(lambda rec, now: self._succeeded(rec, now, ticket))
            if throttle is not None:
                throttle.record(True)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Guard ``fn`` (sync or async) with this breaker; the signature is kept.

        Raises:
            CircuitOpen: (from the wrapper) while the circuit is open, or
                half-open with all probe slots taken; ``fn`` is not called.
            Throttled: (from the wrapper) when a ``throttle`` rejects the call.
            Exception: (from the wrapper) whatever the storage raises while
                admitting the call (Redis unreachable, say): the call is not
                made. An error while recording the outcome afterwards is
                logged and ignored, so the call's own result or error is kept.
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"CircuitBreaker: expected a function to wrap, got {fn!r}")
        wrapper = _util.guard(fn, self._acquire, self._settle)
        wrapper.breaker = self  # type: ignore[attr-defined]
        return wrapper

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call sync ``fn(*args, **kwargs)`` through the breaker (``breaker(fn)(*args, **kwargs)``)."""
        return self(fn)(*args, **kwargs)

    def _enter(self) -> None:
        ticket = self._acquire()
        self._tickets.set((*self._tickets.get(), ticket))

    def _exit(self, e: BaseException | None) -> None:
        stack = self._tickets.get()
        if not stack:  # pragma: no cover - __exit__ without __enter__
            raise RuntimeError(f"CircuitBreaker {self.name!r}: exit without a matching enter")
        self._tickets.set(stack[:-1])
        self._settle(stack[-1], e)

    # -- inspection and manual control ---------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose period has ended reads as half-open)."""

        def op(rec: BreakerRecord, now: float) -> CircuitState:
            self._tick(rec, now)
            return rec.state

        return self._run(op)

    @property
    def retry_after(self) -> float:
        """Seconds until the circuit lets a probe through; 0.0 unless open."""

        def op(rec: BreakerRecord, now: float) -> float:
            self._tick(rec, now)
            return max(0.0, rec.open_until - now) if rec.state is CircuitState.OPEN else 0.0

        return self._run(op)

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted while closed."""
        return self._run(lambda rec, now: rec.failures)

    def snapshot(self) -> BreakerRecord:
        """A copy of the stored record, for inspection."""
        return self._run(lambda rec, now: BreakerRecord.from_dict(rec.to_dict()))

    def reset(self) -> None:
        """Close the circuit now and forget the failures and openings."""
        self._run(lambda rec, now: self._close(rec))

    def trip(self) -> None:
        """Open the circuit now, as if the failure rule had fired (for maintenance or tests).

        The ``CircuitOpen`` errors that follow have no ``__cause__``.
        """
        self._last_failure = None
        self._run(self._open)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._seen.value!r}, "
            f"failure_threshold={self.failure_threshold!r}, failure_rate={self.failure_rate!r}, "
            f"recovery={self.recovery!r})"
        )
