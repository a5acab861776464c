"""The Redis task store: many workers on many machines, one Redis.

``resile.connect("redis://host:6379/0")`` opens it; every contract method is
one Lua script (``lua/*.lua``), run by SHA with ``EVALSHA`` and loaded again
when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). The
data model, the wake-up protocol and the guarantees per persistence setting
are in ``docs/redis.md``; key names are in ``_redis_keys``.

* **Atomic**: a script runs alone in Redis; no state change spans two calls.
  Where a transition needs the task's backoff policy (a failed attempt, a
  reclaimed lease) Python computes the delay from a snapshot it read and the
  script applies it only if the snapshot still holds.
* **No polling**: a worker subscribes to its queues' wake-up channel
  (``Store.watch``) and otherwise sleeps exactly until the next due time.
* **Faults**: a call that meets a connection error (Redis restarting,
  unreachable, loading its data) is tried again with resile's backoff for up
  to ``retry_for`` seconds, logged once per outage. Writes carry an operation
  id, so a write whose reply was lost is not applied twice when retried.
* **Bounded work**: no ``KEYS``, no ``SCAN``, and no script does work that
  grows with the number of stored tasks (see the limits in ``_redis_keys``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from resile._time import current_async_library
from resile.backoff import Backoff, Exponential
from resile.errors import DuplicateTask
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    HISTORY_LIMIT,
    LEASE_EXPIRED_REASON,
    TERMINAL_STATUSES,
    Outcome,
    TaskStatus,
)
from resile.queue.store import _redis_keys as K
from resile.queue.store.base import (
    IfExists,
    Store,
    check_create_args,
    check_lease_args,
    check_list_args,
    check_pct,
    check_seconds,
    dumps,
    dumps_shared,
    encode_results,
    fail_args,
    lease_call_args,
    normalize_queues,
    purge_statuses,
)
from resile.queue.task import (
    AttemptRecord,
    JSONValue,
    Task,
    TaskError,
    TaskSpec,
    check_json,
)
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = ["RedisStore"]

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's packer first checks every argument in Python
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is in the redis extra
    _pack = None

T = TypeVar("T")

logger = logging.getLogger("resile.queue")

_SCRIPTS = (
    "create", "create1", "lease", "renew", "complete", "fail", "release", "cancel", "setfield",
    "requeue", "purge", "sweep", "next_due", "corrupt", "complete_flags",
)  # fmt: skip
# Scripts made from another's body with different settings: name -> (body, settings).
_VARIANTS = {
    "complete": ("complete", "local REPLY = 'task'\n"),
    "complete_flags": ("complete", "local REPLY = 'flag'\n"),
}
_HEADER = (
    f"local HISTORY_LIMIT = {HISTORY_LIMIT}\n"
    f"local MIGRATE_LIMIT = {K.MIGRATE_LIMIT}\n"
    f"local RECLAIM_BATCH = {K.RECLAIM_BATCH}\n"
    f"local GATED_SCAN_LIMIT = {K.GATED_SCAN_LIMIT}\n"
    f"local SWEEP_ON_FINISH = {K.SWEEP_ON_FINISH}\n"
    f"local RANK_LEN = {2 * K.RANK_WIDTH}\n"
)
# Reconnect waits: 50 ms doubling to 2 s, full jitter (so a fleet does not reconnect in step).
_RECONNECT_BACKOFF = Exponential(0.05, max_delay=2.0, jitter="full")
# Redis answers that mean "not now" rather than "never": a replica promoted, data loading ...
_TRANSIENT_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY ")
# Writes refused until an operator acts: memory full under `noeviction` (OOM), a disk Redis
# cannot persist to (MISCONF). Redis refuses a script at its first write, so nothing of the
# call was done and it is sent again like after an outage. Redis 6 wraps the refusal of a
# script's write in its own error text ("Error running script ... -OOM ...").
_REFUSED_WRITES = ("OOM ", "MISCONF ")
# A connection error this soon after a recovery is the same outage (not logged again).
_QUIET = 5.0
_CANCELED_ERROR = TaskError("Canceled", "the task was canceled while this attempt ran")
_OPTIONS = ("namespace", "retention", "failed_retention", "retry_for")

_script_cache: dict[str, str] = {}


_DEFINES = re.compile(r"^local (?:function )?([\w, ]+?)\s*(?:=|\()", re.MULTILINE)


def _needed(lib: str, body: str) -> str:
    """The blocks of ``lib`` (separated by blank lines) that ``body`` uses, directly or not.

    Redis runs a script's whole text on every call: each ``local function`` of the
    library is a closure made again each time, so a script carries only those it uses.
    """
    blocks = [b for b in lib.split("\n\n") if b.strip()]
    names = [
        {n.strip() for m in _DEFINES.findall(b) for n in m.split(",") if n.strip()} for b in blocks
    ]
    keep = [not n for n in names]  # comments and settings without a definition stay
    text = body
    changed = True
    while changed:
        changed = False
        for i, defined in enumerate(names):
            if not keep[i] and any(re.search(rf"\b{n}\b", text) for n in defined):
                keep[i] = changed = True
                text += "\n" + blocks[i]
    return "\n\n".join(b for b, k in zip(blocks, keep, strict=True) if k)


def _script(name: str) -> str:
    """The full text of a script: the constants, the library parts it uses, the body."""
    text = _script_cache.get(name)
    if text is None:
        lua = resources.files("resile.queue.store").joinpath("lua")
        source, settings = _VARIANTS.get(name, (name, ""))
        body = lua.joinpath(f"{source}.lua").read_text("utf-8")
        lib = _needed(lua.joinpath("lib.lua").read_text("utf-8"), body)
        text = _HEADER + settings + lib + "\n" + body
        _script_cache[name] = text
    return text


def _is_transient(exc: BaseException) -> bool:
    """Whether a redis-py error means "try again later" (connection lost, server loading,
    writes refused for want of memory or disk ...)."""
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return False
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError)):
        return True
    if isinstance(exc, ResponseError):
        text = str(exc)
        return text.startswith(_TRANSIENT_REPLIES + _REFUSED_WRITES) or any(
            f"-{code}" in text for code in _REFUSED_WRITES
        )
    return isinstance(exc, (ConnectionError, TimeoutError))


def _num(value: float) -> str:
    """A time or number as the exact text Redis and Python both read back bit for bit."""
    return repr(float(value))


def _priority_hex(priority: int) -> str:
    """``priority`` as 16 hex digits that sort like the number (offset by 2**63)."""
    return format(priority + 2**63, f"0{K.RANK_WIDTH}x")


def _ids(specs: Sequence[TaskSpec]) -> builtins.list[str]:
    """Each spec's id, or a fresh random one (32 hex digits) for those without."""
    fresh = os.urandom(16 * len(specs)).hex()
    return [
        spec.id if spec.id is not None else fresh[32 * i : 32 * i + 32]
        for i, spec in enumerate(specs)
    ]


_op_prefix = ("", -1)  # (random prefix, the pid it was drawn in)
_op_count = itertools.count()


def _op_id() -> str:
    """A unique op id: a random prefix per process (drawn again after a fork) and a counter.

    Cheaper than a random draw (a system call) per op, and as unique.
    """
    global _op_prefix
    prefix, pid = _op_prefix
    if pid != os.getpid():
        prefix, pid = os.urandom(8).hex(), os.getpid()
        _op_prefix = (prefix, pid)
    return f"{prefix}{next(_op_count):x}"


def _seconds_option(name: str, value: object, *, none_ok: bool) -> float | None:
    if value is None and none_ok:
        return None
    return check_seconds(
        value, f"RedisStore: {name}", "seconds >= 0 or None" if none_ok else "seconds >= 0"
    )


class _Corrupt(ValueError):
    """A stored field that cannot be decoded."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"stored task is unreadable: field {field!r}: {detail}")
        self.field = field


# JSON texts that most tasks store, decoded without the parser (a fresh object each time).
_LITERALS: dict[str, Callable[[], Any]] = {"{}": dict, "[]": list, "null": lambda: None}
# Backoff policies repeat (one per task function): decoded once, copied per task.
_policy_cache: dict[str, dict[str, Any]] = {}


def _load(d: Mapping[str, str], field: str, strict: bool, default: Any, kind: type | None) -> Any:
    raw = d.get(field)
    if not raw:
        return default
    make = _LITERALS.get(raw)
    if make is not None:
        value = make()
    elif field == "backoff" and raw in _policy_cache:
        return dict(_policy_cache[raw])
    else:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            if strict:
                raise _Corrupt(field, f"not valid JSON ({exc})") from None
            return default
        if (
            field == "backoff"
            and isinstance(value, dict)
            and len(_policy_cache) < 256
            and all(isinstance(v, (str, int, float, bool)) or v is None for v in value.values())
        ):
            _policy_cache[raw] = dict(value)  # flat: a shallow copy is a full copy
    if kind is not None and not isinstance(value, kind):
        if strict:
            raise _Corrupt(field, f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return default
    return value


def _opt(d: Mapping[str, str], field: str) -> float | None:
    raw = d.get(field)
    return None if raw is None or raw == "" else float(raw)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _live_queues(reply: Sequence[Any] | Mapping[str, Any]) -> builtins.list[str]:
    """The queues that hold tasks, from ``HGETALL <root>:queues`` (flat or a dict)."""
    found = reply if isinstance(reply, Mapping) else _pairs(reply)
    return sorted(q for q, n in found.items() if int(n) > 0)


def _hgetalls(root_: str, ids: Sequence[str]) -> builtins.list[tuple[str, str]]:
    """One ``HGETALL`` per task id, for a pipeline."""
    return [("HGETALL", K.task_key(root_, i)) for i in ids]


def _replayed(replies: Sequence[Any]) -> tuple[builtins.list[Task], builtins.list[Task]]:
    """The tasks a replayed create finds (every task, and the same as "the new ones")."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
    tasks = [_decode(r, strict=False) for r in replies if r]
    return tasks, tasks


_STATUSES = {s.value: s for s in TaskStatus}


def _decode(flat: Sequence[Any] | Mapping[str, str], strict: bool = True) -> Task:
    """A task hash (``HGETALL``, flat or as a dict) -> Task.

    ``strict`` raises ``_Corrupt`` for any bad JSON field; otherwise bad JSON
    fields get defaults. Missing or malformed required fields always raise.
    """
    d = flat if isinstance(flat, Mapping) else _pairs(flat)
    get = d.get
    # Fields most tasks leave unset or at "{}" skip the generic loader (the hot path).
    raw = get("params")
    params = {} if raw == "{}" else _load(d, "params", strict, {}, dict)
    backoff = _load(d, "backoff", strict, {}, dict)
    resources_: dict[str, float] = {}
    if get("resources"):
        resources_raw = _load(d, "resources", strict, {}, dict)
        try:
            resources_ = {str(k): float(v) for k, v in resources_raw.items()}
        except (TypeError, ValueError) as exc:
            if strict:
                raise _Corrupt("resources", str(exc)) from None
    history: tuple[AttemptRecord, ...] = ()
    if get("history"):
        history_raw = _load(d, "history", strict, [], list)
        try:
            history = tuple(AttemptRecord.from_dict(a) for a in history_raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if strict:
                raise _Corrupt("history", f"bad entry ({exc!r})") from None
    error_raw = _load(d, "last_error", strict, None, dict) if get("last_error") else None
    checkpoint = _load(d, "checkpoint", strict, None, None) if get("checkpoint") else None
    result = _load(d, "result", strict, None, None) if get("result") else None
    status = _STATUSES.get(get("status"))  # type: ignore[arg-type]
    if status is None:
        raise _Corrupt("status", f"unknown status {get('status')!r}")
    try:
        return Task(
            id=d["id"],
            queue=d["queue"],
            handler=d["handler"],
            params=params,
            priority=int(d["priority"]),
            sequence=int(d["seq"]),
            status=status,
            attempts=int(d.get("attempts") or 0),
            max_retries=int(d["max_retries"]),
            backoff=backoff,
            last_delay=_opt(d, "last_delay"),
            due_at=float(d["due_at"]),
            lease_owner=d.get("lease_owner") or None,
            lease_expires_at=_opt(d, "lease_expires_at"),
            progress=float(d.get("progress") or 0.0),
            checkpoint=checkpoint,
            result=result,
            last_error=None if error_raw is None else TaskError.from_dict(error_raw),
            history=history,
            timeout=_opt(d, "timeout"),
            resources=resources_,
            created_at=float(d["created_at"]),
            updated_at=float(d["updated_at"]),
            started_at=_opt(d, "started_at"),
            finished_at=_opt(d, "finished_at"),
        )
    except KeyError as exc:
        raise _Corrupt(str(exc.args[0]), "missing") from None
    except (TypeError, ValueError) as exc:
        raise _Corrupt("?", str(exc)) from None


def _safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisStore(Store):
    """A ``Store`` in Redis, shared by every process and machine that opens it.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``unix:///path/redis.sock?db=0``; redis-py's URL options (e.g.
            ``socket_timeout``) may be in its query.
        namespace: the store's name in Redis: every key is
            ``resile:{namespace}:...``, one Cluster hash slot. Stores with
            different namespaces share nothing (task ids are unique within one).
        clock: epoch-time source for ``now=None``. Every process must agree on
            the time (NTP): due times and lease expiries are compared with the
            calling process's clock.
        retention: seconds that ``DONE`` and ``CANCELED`` tasks are kept after
            they finished (a Redis TTL on the task; the indexes are swept as
            work goes on); ``None`` keeps them until ``purge``. Default a week.
        failed_retention: the same for dead letters (``FAILED``); default
            ``None``: kept until purged or requeued.
        retry_for: how long a call keeps reconnecting (resile backoff, 50 ms
            doubling to 2 s) when Redis is unreachable, restarting or loading,
            before it raises the connection error.
        socket_timeout, connect_timeout: redis-py's, in seconds.

    Raises:
        ValueError: a bad option, named with its value.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = K.DEFAULT_NAMESPACE,
        clock: Callable[[], float] = time.time,
        retention: float | None = K.DEFAULT_RETENTION,
        failed_retention: float | None = K.DEFAULT_FAILED_RETENTION,
        retry_for: float = K.DEFAULT_RETRY_FOR,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"RedisStore: url must look like 'redis://host:6379/0', got {url!r}")
        if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
            raise ValueError(
                f"RedisStore: namespace must be a non-empty str without braces, got {namespace!r}"
            )
        self.retention = _seconds_option("retention", retention, none_ok=True)
        self.failed_retention = _seconds_option("failed_retention", failed_retention, none_ok=True)
        self.retry_for: float = _seconds_option("retry_for", retry_for, none_ok=False) or 0.0
        sock = _seconds_option("socket_timeout", socket_timeout, none_ok=False)
        conn = _seconds_option("connect_timeout", connect_timeout, none_ok=False)
        self.namespace = namespace
        self.root = K.root(namespace)
        self._anchor = f"{self.root}:seq"
        self.url = _safe_url(url)
        self._options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": sock,
            "socket_connect_timeout": conn,
            "health_check_interval": 30,
            "protocol": 2,  # the replies' shapes this module reads (HGETALL: a flat list)
        }
        self._redis_url = url  # with its password: never shown (``url`` is the safe form)
        # resile does the retrying (with its backoff, idempotently); redis-py must not.
        self._client: redis.Redis = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), **self._options
        )
        # asyncio clients, one per event loop (a redis.asyncio connection belongs to its loop).
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._shas = {name: hashlib.sha1(_script(name).encode()).hexdigest() for name in _SCRIPTS}
        self._closed = False
        self._down_since: float | None = None
        self._outage_logged = False
        self._recovered_at = -math.inf
        self._outage_lock = threading.Lock()
        self._watchers: builtins.list[_Watcher] = []
        self._eviction_checked = False
        self._local = threading.local()
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retrying = Retrying(
            on=_is_transient,
            backoff=_RECONNECT_BACKOFF,
            stop=after_elapsed(self.retry_for),
            name=f"redis call on {self.url}",
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Open ``redis://host:port/db?namespace=...&retention=...``.

        Query options of resile: ``namespace``, ``retention`` and
        ``failed_retention`` (seconds, or ``none``) and ``retry_for``; the
        others go to redis-py (``socket_timeout``, ``health_check_interval``
        ...). Keyword ``options`` override the query.

        Raises:
            ValueError: not a Redis URL, or an unknown option.
        """
        scheme = url.split("://", 1)[0].lower() if isinstance(url, str) else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"Redis URL must be redis://host:6379/0, rediss://... or unix:///path.sock, "
                f"got {url!r}"
            )
        parts = urlsplit(url)
        ours: dict[str, Any] = {}
        theirs: builtins.list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "namespace":
                ours[key] = value
            elif key in ("retention", "failed_retention", "retry_for"):
                if value.lower() in ("", "none") and key != "retry_for":
                    ours[key] = None
                    continue
                try:
                    ours[key] = float(value)
                except ValueError:
                    raise ValueError(
                        f"Redis URL {_safe_url(url)!r}: {key} must be seconds, got {value!r}"
                    ) from None
            elif key != "protocol" and (
                key in URL_QUERY_ARGUMENT_PARSERS or key in ("db", "password", "username")
            ):
                theirs.append((key, value))
            else:
                raise ValueError(
                    f"Redis URL {_safe_url(url)!r}: unknown option {key!r} (resile's: "
                    f"{', '.join(_OPTIONS)}; redis-py's: "
                    f"{', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))})"
                )
        ours.update(options)
        clean = urlunsplit(parts._replace(query=urlencode(theirs)))
        return cls(clean, **ours)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"

    # -- calls, scripts and outages -------------------------------------------------------------

    def _ensure(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (Redis commands); on a transient error retry it with backoff.

        ``fn`` must be safe to run again (reads, or scripts with an op id).
        """
        self._ensure()
        try:
            result = fn()
        except Exception as exc:
            if not _is_transient(exc) or self.retry_for <= 0:
                raise
            self._trouble(exc)

            def again() -> T:
                try:
                    return fn()
                except Exception as err:
                    if _is_transient(err):
                        self._trouble(err)
                    raise

            result = self._retrying(again)()
        if self._down_since is not None:
            self._recovered()
        return result

    def _trouble(self, exc: BaseException) -> None:
        """Note a connection problem; the first one of an outage is logged.

        A relapse within ``_QUIET`` seconds of a recovery (a restarted Redis
        still loading its data, say) counts as the same outage.
        """
        with self._outage_lock:
            if self._down_since is not None:
                return
            now = time.monotonic()
            self._down_since = now
            if now - self._recovered_at < _QUIET:
                return
            self._outage_logged = True
        logger.warning(
            "resile: Redis at %s is unavailable (%s: %s); reconnecting with backoff "
            "for up to %g s per call",
            self.url,
            type(exc).__name__,
            exc,
            self.retry_for,
        )

    def _recovered(self) -> None:
        with self._outage_lock:
            since, self._down_since = self._down_since, None
            logged, self._outage_logged = self._outage_logged, False
            if since is not None:
                self._recovered_at = time.monotonic()
        if since is not None and logged:
            logger.warning(
                "resile: Redis at %s is reachable again (after %.1f s)",
                self.url,
                time.monotonic() - since,
            )

    # The hot path skips redis-py's client layer (its pool, retry and telemetry wrappers cost
    # more than the round trip): each thread sends on a connection of its own.

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():  # new thread, or a forked child
            pool = self._client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            self._conns.add(conn)
        return conn

    def _command(self, *args: Any) -> Any:
        """One command on this thread's connection."""
        conn = self._connection()
        try:
            conn.send_packed_command(
                [_pack(args)] if _pack is not None else conn.pack_command(*args)
            )
            return conn.read_response()
        except ResponseError:
            raise  # the reply was read: the connection is fine
        except BaseException:
            conn.disconnect()  # an exchange cut in the middle: start clean next time
            raise

    def _pipeline(self, commands: Sequence[Sequence[Any]]) -> builtins.list[Any]:
        """Several commands in one round trip; an error reply comes back in its place."""
        conn = self._connection()
        try:
            if _pack is not None:
                conn.send_packed_command([b"".join(_pack(tuple(c)) for c in commands)])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            out: builtins.list[Any] = []
            for _ in commands:
                try:
                    out.append(conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
            return out
        except BaseException:
            conn.disconnect()
            raise

    def _evalsha(self, name: str, args: Sequence[Any]) -> Any:
        """Run a script by SHA; load it when Redis does not know it (``NOSCRIPT``)."""
        try:
            return self._command("EVALSHA", self._shas[name], 1, self._anchor, self.root, *args)
        except NoScriptError:
            self._command("SCRIPT", "LOAD", _script(name))
            return self._command("EVALSHA", self._shas[name], 1, self._anchor, self.root, *args)

    def _eval(self, name: str, args: Sequence[Any]) -> Any:
        return self._call(lambda: self._evalsha(name, args))

    # -- the asyncio client (producers and readers in event-loop code) -------------------------

    def _aclient(self) -> Any:
        """This event loop's ``redis.asyncio`` client (made on first use)."""
        self._ensure()
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(
                self._redis_url, retry=AsyncRetry(NoBackoff(), 0), **self._options
            )
            self._aclients[loop] = client
        return client

    async def _acall(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``_call`` for coroutines: a transient error is retried with the same backoff
        for up to ``retry_for`` seconds, and the outage logged once each way."""
        self._ensure()

        async def attempt() -> T:
            try:
                return await fn()
            except Exception as exc:
                if _is_transient(exc):
                    self._trouble(exc)
                raise

        result = await (self._retrying(attempt)() if self.retry_for > 0 else fn())
        if self._down_since is not None:
            self._recovered()
        return result

    async def _aeval(self, name: str, args: Sequence[Any]) -> Any:
        async def run() -> Any:
            client = self._aclient()
            head = (self._shas[name], 1, self._anchor, self.root)
            try:
                return await client.execute_command("EVALSHA", *head, *args)
            except NoScriptError:
                await client.execute_command("SCRIPT", "LOAD", _script(name))
                return await client.execute_command("EVALSHA", *head, *args)

        return await self._acall(run)

    async def _acommand(self, *args: Any) -> Any:
        return await self._acall(lambda: self._aclient().execute_command(*args))

    async def _apipeline(self, commands: Sequence[Sequence[Any]]) -> builtins.list[Any]:
        async def run() -> builtins.list[Any]:
            pipe = self._aclient().pipeline(transaction=False)
            for c in commands:
                pipe.execute_command(*c)
            return builtins.list(await pipe.execute(raise_on_error=False))

        return await self._acall(run)

    @staticmethod
    def _native_async() -> bool:
        """Whether the running event loop is asyncio's (redis.asyncio serves only it)."""
        return current_async_library() == "asyncio"

    async def create_async(self, spec: TaskSpec, *, if_exists: IfExists = "error") -> Task:
        if not self._native_async():
            return await super().create_async(spec, if_exists=if_exists)
        out, created = await self._create_all_async([spec], if_exists, self.now())
        self._notify(created)
        return out[0]

    async def create_many_async(
        self, specs: Iterable[TaskSpec], *, if_exists: IfExists = "error"
    ) -> builtins.list[Task]:
        if not self._native_async():
            return await super().create_many_async(specs, if_exists=if_exists)
        out, created = await self._create_all_async(builtins.list(specs), if_exists, self.now())
        self._notify(created)
        return out

    async def get_async(self, task_id: str) -> Task | None:
        if not self._native_async():
            return await super().get_async(task_id)
        flat = await self._acommand("HGETALL", self._tk(task_id))
        return _decode(flat, strict=False) if flat else None

    async def cancel_async(self, task_id: str) -> bool:
        if not self._native_async():
            return await super().cancel_async(task_id)
        return bool(await self._aeval("cancel", self._cancel_args(task_id, self.now())))

    async def stats_async(self, queue: str | None = None) -> dict[TaskStatus, int]:
        if not self._native_async():
            return await super().stats_async(queue)
        if queue is not None:
            names = [queue]
        else:
            names = _live_queues(await self._acommand("HGETALL", f"{self.root}:queues"))
        sweep = self._sweep_args(names)
        if sweep is not None:
            await self._aeval("sweep", sweep)
        keys = self._stats_keys(names)
        cards = await self._apipeline([("ZCARD", key) for _, key in keys]) if keys else []
        return self._counts(keys, cards)

    async def aclose(self) -> None:
        """Close this event loop's asyncio client, then the store."""
        client = None
        with contextlib.suppress(RuntimeError):
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    def _close_async_clients(self) -> None:
        """At ``close``: close the asyncio clients of loops that are not running now
        (a running loop gets the close scheduled on it; a closed one has no sockets left
        that it could close)."""
        for loop, client in builtins.list(self._aclients.items()):
            with contextlib.suppress(Exception):
                if loop.is_closed():
                    continue
                if loop.is_running():
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                else:
                    loop.run_until_complete(client.aclose())
        self._aclients.clear()

    def _ttl_ms(self, status: TaskStatus) -> str:
        keep = self.failed_retention if status is TaskStatus.FAILED else self.retention
        return "" if keep is None else str(max(1, math.ceil(keep * 1000)))

    def _cutoff(self, status: TaskStatus, now: float) -> str:
        keep = self.failed_retention if status is TaskStatus.FAILED else self.retention
        return "" if keep is None else _num(now - keep)

    def _tk(self, task_id: str) -> str:
        return K.task_key(self.root, task_id)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_async_clients()
        for w in list(self._watchers):
            w.stop()
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                conn.disconnect()
        with contextlib.suppress(Exception):
            self._client.close()

    # -- producers ------------------------------------------------------------------------------

    def _create_args(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> tuple[builtins.list[str], str, builtins.list[str]]:
        """The ids, the script and its arguments that store ``specs`` (checked, not empty)."""
        ids = _ids(specs)
        op = _op_id()
        now_s = _num(now)
        args: builtins.list[str] = [now_s, if_exists, op, str(len(specs))]
        # Specs of one task function share their defaults (the same objects): encode once.
        # ``specs`` keeps those objects alive, so an id() is not reused during the loop.
        policies: dict[int, str] = {}
        gates: dict[int, tuple[str, str]] = {}
        ranks: dict[int, str] = {}
        for spec, task_id in zip(specs, ids, strict=True):
            backoff, resources_, timeout = spec.backoff, spec.resources, spec.timeout
            policy = policies.get(id(backoff))
            if policy is None:
                policy = policies[id(backoff)] = dumps_shared(backoff)  # type: ignore[arg-type]
            gate = gates.get(id(resources_))
            if gate is None:
                gate = gates[id(resources_)] = (
                    dumps(dict(resources_)) if resources_ else "",
                    "1" if any(v > 0 for v in resources_.values()) else "0",
                )
            priority = spec.priority
            rank = ranks.get(priority)
            if rank is None:
                rank = ranks[priority] = _priority_hex(priority)
            params = spec.params
            due = now_s if spec.due_at is None and spec.delay == 0 else _num(spec.due_time(now))
            args += [
                task_id,
                spec.queue,
                spec.handler,
                dumps(params) if params else "{}",
                str(priority),
                rank,
                str(spec.max_retries),
                policy,
                due,
                "" if timeout is None else _num(timeout),  # type: ignore[arg-type]
                *gate,
            ]
        return ids, "create1" if len(specs) == 1 else "create", args

    def _created(
        self, reply: Any, specs: Sequence[TaskSpec], ids: Sequence[str], now: float
    ) -> tuple[builtins.list[Task], builtins.list[Task]] | None:
        """(every task, the new ones) from the create script's reply; ``None`` for a
        replay (our own earlier write whose reply was lost: the caller reads the tasks).

        Raises:
            DuplicateTask: an id exists and ``if_exists="error"``.
        """
        if reply[0] == "dup":
            raise DuplicateTask(reply[2], reply[1])
        if reply[0] == "replay":
            return None
        out: builtins.list[Task] = []
        created: builtins.list[Task] = []
        made: dict[str, Task] = {}
        for spec, task_id, item in zip(specs, ids, reply[1:], strict=True):
            if isinstance(item, int):
                task = self._new_task(spec, task_id, item, now)
                created.append(task)
            elif isinstance(item, builtins.list):
                task = _decode(item, strict=False)
            else:  # "again": a repeated id in this batch
                task = made[task_id]
            made.setdefault(task_id, task)
            out.append(task)
        return out, created

    def _create_all(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> tuple[builtins.list[Task], builtins.list[Task]]:
        check_create_args(specs, if_exists)
        if not specs:
            return [], []
        ids, script, args = self._create_args(specs, if_exists, now)
        done = self._created(self._eval(script, args), specs, ids, now)
        if done is None:  # a replay: read what the first write stored
            return _replayed(self._call(lambda: self._pipeline(_hgetalls(self.root, ids))))
        return done

    async def _create_all_async(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> tuple[builtins.list[Task], builtins.list[Task]]:
        check_create_args(specs, if_exists)
        if not specs:
            return [], []
        ids, script, args = self._create_args(specs, if_exists, now)
        done = self._created(await self._aeval(script, args), specs, ids, now)
        if done is None:
            return _replayed(await self._apipeline(_hgetalls(self.root, ids)))
        return done

    @staticmethod
    def _new_task(spec: TaskSpec, task_id: str, seq: int, now: float) -> Task:
        return Task(
            id=task_id,
            queue=spec.queue,
            handler=spec.handler,
            params=dict(spec.params),
            priority=spec.priority,
            sequence=seq,
            status=TaskStatus.PENDING,
            attempts=0,
            max_retries=spec.max_retries,
            backoff=dict(spec.backoff),  # type: ignore[arg-type]
            due_at=spec.due_time(now),
            created_at=now,
            updated_at=now,
            timeout=None if spec.timeout is None else float(spec.timeout),  # type: ignore[arg-type]
            resources=dict(spec.resources),
        )

    def create(
        self, spec: TaskSpec, *, if_exists: IfExists = "error", now: float | None = None
    ) -> Task:
        out, created = self._create_all([spec], if_exists, self.now(now))
        self._notify(created)
        return out[0]

    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
    ) -> builtins.list[Task]:
        out, created = self._create_all(builtins.list(specs), if_exists, self.now(now))
        self._notify(created)
        return out

    # -- workers --------------------------------------------------------------------------------

    def _reclaim_plan(self, need: Sequence[Sequence[Any]], now: float) -> builtins.list[str]:
        """What the lease script should do with expired leases: FAILED, or PENDING when."""
        plan: builtins.list[str] = []
        for item in need:
            task_id, seen, attempts_s, max_retries_s, backoff_s, last_delay_s = item
            error = TaskError("LeaseExpired", LEASE_EXPIRED_REASON)
            base = float(seen) if seen else now
            try:
                attempts, max_retries = int(attempts_s), int(max_retries_s)
            except (TypeError, ValueError):
                attempts, max_retries = 1, 0
            dead = attempts > max_retries
            wait = 0.0
            if not dead:
                try:
                    policy = Backoff.from_dict(json.loads(backoff_s))
                    last = float(last_delay_s) if last_delay_s else None
                    wait = policy.delay(max(1, attempts), last)
                except (TypeError, ValueError) as exc:
                    error = TaskError(
                        "CorruptTask",
                        f"stored backoff policy is unusable ({exc}); last error: "
                        f"{error.type}: {error.message}",
                    )
                    dead = True
            plan += [
                task_id,
                seen or "",
                "1" if dead else "0",
                _num(base + wait),
                _num(wait),
                dumps(error.to_dict()),
            ]
        return plan

    def _lease_head(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
        capacity: Mapping[str, float] | None,
        at: float,
    ) -> builtins.list[str]:
        """The lease script's arguments up to its reclaim plan (a fresh op id)."""
        names = lease_call_args(queues, worker_id, limit, lease_seconds)
        expires = at + float(lease_seconds)
        cap = "" if capacity is None else dumps({str(k): float(v) for k, v in capacity.items()})
        return [
            _num(at),
            _num(expires),
            worker_id,
            str(limit),
            cap,
            _op_id(),
            str(max(1, math.ceil(float(lease_seconds) * 1000))),
            self._ttl_ms(TaskStatus.FAILED),
            self._cutoff(TaskStatus.FAILED, at),
            str(len(names)),
            *names,
        ]

    def lease(
        self,
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> builtins.list[Task]:
        at = self.now(now)
        head = self._lease_head(queues, worker_id, limit, lease_seconds, capacity, at)
        return self._leased(self._eval("lease", [*head, "0"]), head, worker_id, at)

    def _leased(
        self, reply: Any, head: Sequence[str], worker_id: str, at: float
    ) -> builtins.list[Task]:
        """Decode a lease script's reply; first run its reclaim round trips when it asks."""
        plan: builtins.list[str] = []
        for _ in range(10):
            if reply[0] != "need":
                break
            plan = self._reclaim_plan(reply[1:], at)
            reply = self._eval("lease", [*head, str(len(plan) // 6), *plan])
        if reply[0] == "need":  # expired leases keep appearing faster than we reclaim them
            return []  # lease next time
        out: builtins.list[Task] = []
        for flat in reply[1:]:
            try:
                out.append(_decode(flat, strict=True))
            except _Corrupt as exc:
                d = _pairs(flat)
                error = TaskError("CorruptTask", str(exc))
                failed = TaskStatus.FAILED
                self._eval(
                    "corrupt",
                    [
                        d.get("id", ""),
                        worker_id,
                        _num(at),
                        dumps(error.to_dict()),
                        self._ttl_ms(failed),
                        self._cutoff(failed, at),
                    ],
                )
                logger.error("resile: task %s dead-lettered: %s", d.get("id"), exc)
        return out

    def renew(
        self,
        task_id: str,
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> bool:
        return task_id in self.renew_many(
            [task_id], worker_id, lease_seconds=lease_seconds, now=now
        )

    def renew_many(
        self,
        task_ids: Iterable[str],
        worker_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
    ) -> set[str]:
        check_lease_args(1, lease_seconds)
        ids = builtins.list(dict.fromkeys(task_ids))
        if not ids:
            return set()
        at = self.now(now)
        held = self._eval("renew", [_num(at), _num(at + float(lease_seconds)), worker_id, *ids])
        return set(held)

    def complete(
        self,
        task_id: str,
        worker_id: str,
        result: JSONValue = None,
        *,
        now: float | None = None,
    ) -> Task | None:
        return self.complete_many([(task_id, result)], worker_id, now=now)[0]

    def _complete_args(
        self, items: Sequence[tuple[str, JSONValue]], worker_id: str, at: float
    ) -> builtins.list[str]:
        """The complete script's arguments (one op id for the batch); empty for no items."""
        if all(result is None for _, result in items):  # the common case: nothing to check
            args = [part for task_id, _ in items for part in (task_id, "null")]
        else:
            args = [part for pair in encode_results(items) for part in pair]
        if not args:
            return []
        done = TaskStatus.DONE
        return [
            worker_id,
            _num(at),
            _op_id(),
            self._ttl_ms(done),
            self._cutoff(done, at),
            *args,
        ]

    def complete_many(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[Task | None]:
        """See ``Store.complete_many``: one script for the whole batch (one op id)."""
        args = self._complete_args(items, worker_id, self.now(now))
        if not args:
            return []
        reply = self._eval("complete", args)
        return [_decode(flat, strict=False) if flat else None for flat in reply]

    def complete_many_flags(
        self,
        items: Sequence[tuple[str, JSONValue]],
        worker_id: str,
        *,
        now: float | None = None,
    ) -> builtins.list[bool]:
        """See ``Store.complete_many_flags``: the script answers 1 / 0, no task is read back."""
        args = self._complete_args(items, worker_id, self.now(now))
        if not args:
            return []
        return [bool(x) for x in self._eval("complete_flags", args)]

    def complete_then_lease(
        self,
        items: Sequence[tuple[str, JSONValue]],
        queues: str | Sequence[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        capacity: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[Task]]:
        """See ``Store.complete_then_lease``: both scripts in one round trip (a pipeline).

        Each script is its own atomic step with its own op id, so a retry of the
        pair after a lost reply repeats neither (the completions answer 1 again,
        the lease hands back the same tasks).
        """
        at = self.now(now)
        head = self._lease_head(queues, worker_id, limit, lease_seconds, capacity, at)
        done_args = self._complete_args(items, worker_id, at)
        if not done_args:
            return [], self._leased(self._eval("lease", [*head, "0"]), head, worker_id, at)
        shas, anchor, root = self._shas, self._anchor, self.root
        cmds = [
            ("EVALSHA", shas["complete_flags"], 1, anchor, root, *done_args),
            ("EVALSHA", shas["lease"], 1, anchor, root, *head, "0"),
        ]

        def both() -> builtins.list[Any]:
            replies = self._pipeline(cmds)
            if any(isinstance(r, NoScriptError) for r in replies):
                # A restarted Redis without our scripts: load them and send the pair again
                # (the one that ran repeats nothing: same op ids).
                for name in ("complete_flags", "lease"):
                    self._command("SCRIPT", "LOAD", _script(name))
                replies = self._pipeline(cmds)
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            return replies

        flags_reply, lease_reply = self._call(both)
        flags = [bool(x) for x in flags_reply]
        return flags, self._leased(lease_reply, head, worker_id, at)

    def fail(
        self,
        task_id: str,
        worker_id: str,
        error: TaskError | BaseException,
        *,
        permanent: bool = False,
        outcome: Outcome = Outcome.ERROR,
        delay: float | None = None,
        now: float | None = None,
    ) -> Task | None:
        err, delay, kind = fail_args(error, delay, outcome)
        at = self.now(now)
        op = _op_id()
        tk = self._tk(task_id)
        failed = TaskStatus.FAILED
        for _ in range(5):
            snap = self._call(
                lambda: self._command(
                    "HMGET",
                    tk,
                    "status",
                    "lease_owner",
                    "attempts",
                    "max_retries",
                    "backoff",
                    "last_delay",
                )
            )
            status, owner, attempts_s, max_retries_s, backoff_s, last_delay_s = snap
            if status != TaskStatus.DOING.value or owner != worker_id:
                return None
            stored = err
            attempts = int(attempts_s or 0)
            dead = bool(permanent) or attempts > int(max_retries_s or 0)
            wait = 0.0
            if not dead:
                if delay is not None:
                    wait = float(delay)
                else:
                    try:
                        policy = Backoff.from_dict(json.loads(backoff_s or "null"))
                        last = float(last_delay_s) if last_delay_s else None
                        wait = policy.delay(max(1, attempts), last)
                    except (TypeError, ValueError) as exc:
                        stored = TaskError(
                            "CorruptTask",
                            f"stored backoff policy is unusable ({exc}); last error: "
                            f"{err.type}: {err.message}",
                            err.traceback,
                        )
                        dead = True
            reply = self._eval(
                "fail",
                [
                    task_id,
                    worker_id,
                    _num(at),
                    op,
                    attempts_s or "0",
                    kind.value,
                    dumps(stored.to_dict()),
                    "1" if dead else "0",
                    _num(at + wait),
                    _num(wait),
                    self._ttl_ms(failed),
                    self._cutoff(failed, at),
                ],
            )
            if reply[0] == "stale":
                continue
            return _decode(reply[1], strict=False) if reply[0] == "ok" else None
        return None

    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        at = self.now(now)
        reply = self._eval("release", [task_id, worker_id, _num(at), _op_id()])
        if reply[0] != "ok":
            return None
        task = _decode(reply[1], strict=False)
        self._notify([task])
        return task

    # -- anyone ---------------------------------------------------------------------------------

    def _cancel_args(self, task_id: str, at: float) -> builtins.list[str]:
        canceled = TaskStatus.CANCELED
        return [
            task_id,
            _num(at),
            _op_id(),
            dumps(_CANCELED_ERROR.to_dict()),
            self._ttl_ms(canceled),
            self._cutoff(canceled, at),
        ]

    def cancel(self, task_id: str, *, now: float | None = None) -> bool:
        return bool(self._eval("cancel", self._cancel_args(task_id, self.now(now))))

    def progress(
        self,
        task_id: str,
        pct: float,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        value = _num(check_pct(pct))
        at = self.now(now)
        return bool(self._eval("setfield", [task_id, "progress", value, worker_id or "", _num(at)]))

    def save_checkpoint(
        self,
        task_id: str,
        value: JSONValue,
        *,
        worker_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        check_json(value, "checkpoint")
        at = self.now(now)
        return bool(
            self._eval("setfield", [task_id, "checkpoint", dumps(value), worker_id or "", _num(at)])
        )

    def get_checkpoint(self, task_id: str) -> JSONValue:
        raw = self._call(lambda: self._command("HGET", self._tk(task_id), "checkpoint"))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def get(self, task_id: str) -> Task | None:
        flat = self._call(lambda: self._command("HGETALL", self._tk(task_id)))
        if not flat:
            return None
        return _decode(flat, strict=False)

    def _sweep_args(self, queues: Sequence[str]) -> builtins.list[str] | None:
        """The sweep script's arguments; ``None`` when there is nothing to sweep."""
        if not queues or (self.retention is None and self.failed_retention is None):
            return None
        at = self.now()
        return [
            str(K.SWEEP_ON_READ),
            self._cutoff(TaskStatus.DONE, at),
            self._cutoff(TaskStatus.FAILED, at),
            self._cutoff(TaskStatus.CANCELED, at),
            *queues,
        ]

    def _sweep(self, queues: Sequence[str]) -> None:
        """Drop finished tasks past their retention from the indexes (bounded per queue)."""
        args = self._sweep_args(queues)
        if args is not None:
            self._eval("sweep", args)

    def list(
        self,
        *,
        queue: str | None = None,
        status: TaskStatus | str | Collection[TaskStatus | str] | None = None,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
    ) -> builtins.list[Task]:
        statuses = check_list_args(status, limit, offset) or tuple(TaskStatus)
        names = [queue] if queue is not None else self.queues()
        self._sweep(names)
        low = "-inf" if after is None else f"({int(after)}"
        want = offset + limit
        pairs = [(q, s) for q in names for s in statuses]

        commands: builtins.list[tuple[Any, ...]] = []
        for q, s in pairs:
            if s is TaskStatus.DOING:  # the leases set holds exactly the DOING tasks
                commands.append(("ZRANGE", K.queue_key(self.root, "leases", q), 0, -1))
            else:
                key = K.status_key(self.root, s, q)
                commands.append(("ZRANGEBYSCORE", key, low, "+inf", "WITHSCORES", "LIMIT", 0, want))
        found: builtins.list[builtins.list[tuple[str, float]]] = []
        doing: builtins.list[str] = []
        replies = self._call(lambda: self._pipeline(commands)) if commands else []
        for (_, s), got in zip(pairs, replies, strict=True):
            if isinstance(got, Exception):
                raise got
            if s is TaskStatus.DOING:
                doing.extend(got)
            else:
                found.append([(got[i], float(got[i + 1])) for i in range(0, len(got), 2)])
        if doing:
            seqs = self._call(lambda: self._pipeline([("HGET", self._tk(t), "seq") for t in doing]))
            held = [(tid, float(n)) for tid, n in zip(doing, seqs, strict=True) if n]
            if after is not None:
                held = [(tid, n) for tid, n in held if n > after]
            found.append(sorted(held, key=lambda pair: pair[1])[:want])
        merged = heapq.merge(*found, key=lambda pair: pair[1])
        ids = builtins.list(dict.fromkeys(tid for tid, _ in merged))[offset:want]
        if not ids:
            return []

        def fetch() -> builtins.list[Any]:
            return self._pipeline([("HGETALL", self._tk(tid)) for tid in ids])

        out: builtins.list[Task] = []
        for d in self._call(fetch):
            if not d or isinstance(d, Exception):
                continue  # expired (retention) after we read the index
            try:
                task = _decode(d, strict=False)
            except _Corrupt:
                continue
            if task.status in statuses:  # not moved on since we read the index
                out.append(task)
        return out

    def _stats_keys(self, names: Sequence[str]) -> builtins.list[tuple[TaskStatus, str]]:
        """(status, the key whose size counts it) per queue and status."""
        return [
            (
                s,
                K.queue_key(self.root, "leases", q)
                if s is TaskStatus.DOING
                else K.status_key(self.root, s, q),
            )
            for q in names
            for s in TaskStatus
        ]

    @staticmethod
    def _counts(
        keys: Sequence[tuple[TaskStatus, str]], cards: Sequence[Any]
    ) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        for (s, _), n in zip(keys, cards, strict=True):
            if isinstance(n, Exception):
                raise n
            counts[s] += int(n)
        return counts

    def stats(self, queue: str | None = None) -> dict[TaskStatus, int]:
        names = [queue] if queue is not None else self.queues()
        self._sweep(names)
        keys = self._stats_keys(names)
        if not keys:
            return self._counts([], [])
        cards = self._call(lambda: self._pipeline([("ZCARD", key) for _, key in keys]))
        return self._counts(keys, cards)

    def queues(self) -> builtins.list[str]:
        return _live_queues(self._call(lambda: self._command("HGETALL", f"{self.root}:queues")))

    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        wait = check_seconds(delay, "requeue: delay")
        at = self.now(now)
        reply = self._eval("requeue", [task_id, _num(at), _num(at + wait), _op_id()])
        if reply[0] != "ok":
            return None
        task = _decode(reply[1], strict=False)
        self._notify([task])
        return task

    def purge(
        self,
        older_than: float,
        *,
        statuses: Collection[TaskStatus | str] = TERMINAL_STATUSES,
        queue: str | None = None,
        now: float | None = None,
    ) -> int:
        """See ``Store.purge``. Deletes in batches of ``PURGE_BATCH``, each one atomic."""
        age = check_seconds(older_than, "purge: older_than")
        chosen = purge_statuses(statuses)
        if not chosen:
            return 0
        names = [queue] if queue is not None else self.queues()
        if not names:
            return 0
        cutoff = _num(self.now(now) - age)
        total = 0
        while True:
            n = int(
                self._eval(
                    "purge",
                    [
                        cutoff,
                        str(K.PURGE_BATCH),
                        str(len(names)),
                        *names,
                        *(s.value for s in chosen),
                    ],
                )
            )
            total += n
            if n < K.PURGE_BATCH:
                return total

    def next_due_at(
        self,
        queues: str | Sequence[str],
        *,
        capacity: Mapping[str, float] | None = None,
    ) -> float | None:
        """See ``Store.next_due_at``. Tasks already due are reported by the due
        time of the first one in lease order (a time in the past: "now")."""
        names = normalize_queues(queues)
        cap = "" if capacity is None else dumps({str(k): float(v) for k, v in capacity.items()})
        found = self._eval("next_due", [cap, *names])
        return None if found is None else float(found)

    def _check_eviction(self) -> None:
        """Warn (once per store) when Redis may evict keys: it would delete tasks silently."""
        if self._eviction_checked:
            return
        self._eviction_checked = True
        try:
            reply = self._command("CONFIG", "GET", "maxmemory-policy")
        except Exception:  # CONFIG may be disabled (managed Redis), or Redis unreachable
            return
        policy = reply[1] if isinstance(reply, builtins.list) and len(reply) > 1 else None
        if policy is not None and policy != "noeviction":
            logger.warning(
                "resile: Redis at %s has maxmemory-policy %s: when it is full it deletes keys, "
                "and so tasks; set maxmemory-policy noeviction for a task queue",
                self.url,
                policy,
            )

    # -- wake-ups across processes ----------------------------------------------------------------

    def watch(self, queues: Sequence[str], wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` when any process publishes that work on ``queues`` may be due.

        A helper thread holds a pub/sub subscription to the queues' wake-up
        channels (reconnecting with backoff, and calling ``wake()`` after each
        reconnect, as messages may have been missed meanwhile). Returns once
        subscribed, or after ``connect_timeout`` if Redis is unreachable (the
        thread keeps trying). The returned function stops it.
        """
        self._ensure()
        names = normalize_queues(queues)
        self._check_eviction()
        watcher = _Watcher(self, [K.channel(self.root, q) for q in names], wake)
        self._watchers.append(watcher)
        watcher.start()
        return watcher.stop


class _Watcher:
    """A daemon thread subscribed to wake-up channels; each message calls ``wake()``."""

    # A local timer so that stop() is noticed; it sends nothing to Redis.
    _TICK = 0.2

    def __init__(self, store: RedisStore, channels: builtins.list[str], wake: Callable[[], None]):
        self.store = store
        self.channels = channels
        self.wake = wake
        self._stop = threading.Event()
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, name="resile-redis-watch", daemon=True)

    def start(self) -> None:
        with contextlib.suppress(Exception):  # unreachable: the thread keeps trying
            self._subscribe()
        self._thread.start()

    def _subscribe(self) -> None:
        ps = self.store._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            ps.subscribe(*self.channels)
            confirmed = 0
            end = time.monotonic() + 5.0
            while confirmed < len(self.channels):
                left = end - time.monotonic()
                if left <= 0:
                    raise RedisTimeoutError("no SUBSCRIBE confirmation from Redis")
                msg = ps.get_message(timeout=left)
                if msg is not None and msg.get("type") == "subscribe":
                    confirmed += 1
        except BaseException:
            with contextlib.suppress(Exception):
                ps.close()
            raise
        self._pubsub = ps

    def _drop(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            with contextlib.suppress(Exception):
                ps.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._pubsub is None:
                try:
                    self._subscribe()
                except Exception as exc:
                    failures += 1
                    if _is_transient(exc):
                        self.store._trouble(exc)
                    else:
                        logger.exception("resile: Redis wake-up subscription failed")
                    self._stop.wait(_RECONNECT_BACKOFF.delay(min(failures, 30)))
                    continue
                failures = 0
                self.store._recovered()
                self._wake()  # messages may have been missed while we were away
            try:
                msg = self._pubsub.get_message(timeout=self._TICK)
                if msg is None or msg.get("type") != "message":
                    continue
                while self._pubsub.get_message(timeout=0.0) is not None:
                    pass  # a burst of wake-ups is one wake-up
            except Exception as exc:
                if self._stop.is_set():
                    break
                if _is_transient(exc) or isinstance(exc, (OSError, ValueError, AttributeError)):
                    self.store._trouble(exc)
                else:
                    logger.exception("resile: Redis wake-up subscription failed")
                self._drop()
                continue
            self._wake()
        self._drop()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:
            logger.exception("resile: wake-up callback %r failed", self.wake)

    def stop(self) -> None:
        """Stop the thread and close its connection; idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self._TICK * 10)
        with contextlib.suppress(ValueError):
            self.store._watchers.remove(self)
