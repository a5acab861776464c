"""Talking to Redis: per-thread sockets, per-loop asyncio clients, reconnects, outages.

* The hot path skips redis-py's client layer (its pool, retry and telemetry
  wrappers cost more than the round trip): each thread sends on a connection
  of its own, packed by hiredis.
* A ``redis.asyncio`` client per event loop serves the async methods (a
  ``redis.asyncio`` connection belongs to its loop).
* A call that meets a connection error (Redis restarting, unreachable,
  loading its data) is tried again with resile's backoff for up to
  ``retry_for`` seconds; the outage is logged once each way. When it is still
  on after that, the call raises ``resile.errors.StoreUnavailable`` (the
  redis-py error is its cause).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
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

from resile.backoff import Exponential
from resile.errors import StoreUnavailable
from resile.queue.store.redis import _scripts
from resile.retry import Retrying
from resile.stop import after_elapsed

__all__ = [
    "RECONNECT_BACKOFF",
    "Command",
    "Connection",
    "Eval",
    "Op",
    "Pipeline",
    "is_transient",
    "safe_url",
]

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's packer first checks every argument in Python
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is in the redis extra
    _pack = None

T = TypeVar("T")

logger = logging.getLogger("resile.queue")

# Reconnect waits: 50 ms doubling to 2 s, full jitter (so a fleet does not reconnect in step).
RECONNECT_BACKOFF = Exponential(0.05, max_delay=2.0, jitter="full")
# Redis answers that mean "not now" rather than "never": a replica promoted, data loading ...
_TRANSIENT_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY ")
# Writes refused until an operator acts: memory full under `noeviction` (OOM), a disk Redis
# cannot persist to (MISCONF). Redis refuses a script at its first write, so nothing of the
# call was done and it is sent again like after an outage. Redis 6 wraps the refusal of a
# script's write in its own error text ("Error running script ... -OOM ...").
_REFUSED_WRITES = ("OOM ", "MISCONF ")
# A connection error this soon after a recovery is the same outage (not logged again).
_QUIET = 5.0


@dataclass(frozen=True, slots=True)
class Eval:
    """A request of an ``Op``: run script ``name`` with ``args``; the reply is its result."""

    name: str
    args: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Command:
    """A request of an ``Op``: one Redis command; the reply is its result."""

    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A request of an ``Op``: commands in one round trip; the reply is their results
    (an error reply in its place)."""

    commands: Sequence[Sequence[Any]]


# An operation written once for both colours: a generator that yields its requests, is
# sent each reply and returns the result. ``Connection.run`` drives it with the sync
# transport, ``Connection.arun`` with the asyncio one. Each request is retried through an
# outage on its own, so a request must be safe to send again (reads, scripts with an op id).
Op = Generator["Eval | Command | Pipeline", Any, T]


def is_transient(exc: BaseException) -> bool:
    """Whether a redis-py error means "try again later" (connection lost, server loading,
    writes refused for want of memory or disk ...)."""
    if isinstance(exc, (AuthenticationError, AuthorizationError, StoreUnavailable)):
        return False  # StoreUnavailable: a call's own ride-through is already over
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError)):
        return True
    if isinstance(exc, ResponseError):
        text = str(exc)
        return text.startswith(_TRANSIENT_REPLIES + _REFUSED_WRITES) or any(
            f"-{code}" in text for code in _REFUSED_WRITES
        )
    return isinstance(exc, (ConnectionError, TimeoutError))


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Connection:
    """A store's way to Redis: commands, pipelines and scripts, sync and async.

    Args:
        url: the Redis URL, with its password (never shown: ``safe`` is).
        options: redis-py client options.
        retry_for: seconds a call keeps reconnecting before it raises.
        root: the store's key root (every script's first argument).
        owner: the store's repr, for "is closed" errors.
    """

    def __init__(
        self, url: str, options: dict[str, Any], *, retry_for: float, root: str, owner: str
    ) -> None:
        self.safe = safe_url(url)
        self.retry_for = retry_for
        self.root = root
        self.anchor = f"{root}:seq"
        self.owner = owner
        self._url = url
        self._options = options
        # resile does the retrying (with its backoff, idempotently); redis-py must not.
        self.client: redis.Redis = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        # asyncio clients, one per event loop (a redis.asyncio connection belongs to its loop).
        self.aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self.shas = {name: _scripts.sha(name) for name in _scripts.SCRIPTS}
        self.closed = False
        self._down_since: float | None = None
        self._outage_logged = False
        self._recovered_at = -math.inf
        self._outage_lock = threading.Lock()
        self._local = threading.local()
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retrying = Retrying(
            on=is_transient,
            backoff=RECONNECT_BACKOFF,
            stop=after_elapsed(retry_for),
            name=f"redis call on {self.safe}",
            quiet=True,  # the outage is logged once each way, and raised as StoreUnavailable
        )

    def ensure(self) -> None:
        """Raise ``RuntimeError`` when the store is closed."""
        if self.closed:
            raise RuntimeError(f"{self.owner} is closed")

    # -- outages --------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (Redis commands); on a transient error retry it with backoff.

        ``fn`` must be safe to run again (reads, or scripts with an op id).
        """
        self.ensure()
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.retry_for <= 0:
                raise self.unavailable(exc) from exc
            self.trouble(exc)

            def again() -> T:
                try:
                    return fn()
                except Exception as err:
                    if is_transient(err):
                        self.trouble(err)
                    raise

            try:
                result = self._retrying(again)()
            except Exception as err:
                if is_transient(err):
                    raise self.unavailable(err) from err
                raise
        if self._down_since is not None:
            self.recovered()
        return result

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """``exc`` (a transient redis-py error) as the one "cannot write now" error."""
        text = str(exc)
        if text.startswith(_REFUSED_WRITES) or any(f"-{c}" in text for c in _REFUSED_WRITES):
            advice = (
                "Redis refuses writes until it has memory (maxmemory) or can persist to its "
                "disk again; tasks already stored are kept"
            )
            return StoreUnavailable(self.safe, f"{type(exc).__name__}: {text}", advice)
        return StoreUnavailable.server_down(self.safe, f"{type(exc).__name__}: {text}")

    def trouble(self, exc: BaseException) -> None:
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
            self.safe,
            type(exc).__name__,
            exc,
            self.retry_for,
        )

    def recovered(self) -> None:
        """Note that Redis answered again; logs the end of a logged outage."""
        with self._outage_lock:
            since, self._down_since = self._down_since, None
            logged, self._outage_logged = self._outage_logged, False
            if since is not None:
                self._recovered_at = time.monotonic()
        if since is not None and logged:
            logger.warning(
                "resile: Redis at %s is reachable again (after %.1f s)",
                self.safe,
                time.monotonic() - since,
            )

    # -- sync: one socket per thread ------------------------------------------------------------

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():  # new thread, or a forked child
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            self._conns.add(conn)
        return conn

    def command(self, *args: Any) -> Any:
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

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> builtins.list[Any]:
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

    def evalsha(self, name: str, args: Sequence[Any]) -> Any:
        """Run a script by SHA; load it when Redis does not know it (``NOSCRIPT``)."""
        try:
            return self.command("EVALSHA", self.shas[name], 1, self.anchor, self.root, *args)
        except NoScriptError:
            self.command("SCRIPT", "LOAD", _scripts.text(name))
            return self.command("EVALSHA", self.shas[name], 1, self.anchor, self.root, *args)

    def eval(self, name: str, args: Sequence[Any]) -> Any:
        """``evalsha`` retried through an outage."""
        return self.call(lambda: self.evalsha(name, args))

    def run(self, op: Op[T]) -> T:
        """Drive ``op`` with the sync transport (this thread's socket)."""
        try:
            request = next(op)
            while True:
                request = op.send(self._send(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _send(self, request: Eval | Command | Pipeline) -> Any:
        if isinstance(request, Eval):
            return self.eval(request.name, request.args)
        if isinstance(request, Command):
            args = request.args
            return self.call(lambda: self.command(*args))
        commands = request.commands
        return self.call(lambda: self.pipeline(commands))

    async def arun(self, op: Op[T]) -> T:
        """Drive ``op`` with the asyncio transport (this event loop's client)."""
        try:
            request = next(op)
            while True:
                request = op.send(await self._asend(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _asend(self, request: Eval | Command | Pipeline) -> Any:
        if isinstance(request, Eval):
            return await self.aeval(request.name, request.args)
        if isinstance(request, Command):
            return await self.acommand(*request.args)
        return await self.apipeline(request.commands)

    # -- async: one redis.asyncio client per event loop -------------------------------------------

    def aclient(self) -> Any:
        """This event loop's ``redis.asyncio`` client (made on first use)."""
        self.ensure()
        loop = asyncio.get_running_loop()
        client = self.aclients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(
                self._url, retry=AsyncRetry(NoBackoff(), 0), **self._options
            )
            self.aclients[loop] = client
        return client

    async def acall(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``call`` for coroutines: a transient error is retried with the same backoff
        for up to ``retry_for`` seconds, and the outage logged once each way."""
        self.ensure()
        try:
            result = await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.retry_for <= 0:
                raise self.unavailable(exc) from exc
            self.trouble(exc)

            async def again() -> T:
                try:
                    return await fn()
                except Exception as err:
                    if is_transient(err):
                        self.trouble(err)
                    raise

            try:
                result = await self._retrying(again)()
            except Exception as err:
                if is_transient(err):
                    raise self.unavailable(err) from err
                raise
        if self._down_since is not None:
            self.recovered()
        return result

    async def aeval(self, name: str, args: Sequence[Any]) -> Any:
        """``eval`` on this loop's client."""

        async def run() -> Any:
            client = self.aclient()
            head = (self.shas[name], 1, self.anchor, self.root)
            try:
                return await client.execute_command("EVALSHA", *head, *args)
            except NoScriptError:
                await client.execute_command("SCRIPT", "LOAD", _scripts.text(name))
                return await client.execute_command("EVALSHA", *head, *args)

        return await self.acall(run)

    async def acommand(self, *args: Any) -> Any:
        """One command on this loop's client, retried through an outage."""
        return await self.acall(lambda: self.aclient().execute_command(*args))

    async def apipeline(self, commands: Sequence[Sequence[Any]]) -> builtins.list[Any]:
        """``pipeline`` on this loop's client, retried through an outage."""

        async def run() -> builtins.list[Any]:
            pipe = self.aclient().pipeline(transaction=False)
            for c in commands:
                pipe.execute_command(*c)
            return builtins.list(await pipe.execute(raise_on_error=False))

        return await self.acall(run)

    async def aclose(self) -> None:
        """Close this event loop's asyncio client."""
        client = None
        with contextlib.suppress(RuntimeError):
            client = self.aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _close_async_clients(self) -> None:
        """Close the asyncio clients of loops that are not running now (a running loop
        gets the close scheduled on it; a closed one has no sockets left that it could
        close)."""
        for loop, client in builtins.list(self.aclients.items()):
            with contextlib.suppress(Exception):
                if loop.is_closed():
                    continue
                if loop.is_running():
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                else:
                    loop.run_until_complete(client.aclose())
        self.aclients.clear()

    def close(self) -> None:
        """Close every socket and client (the caller stops its watchers first)."""
        self.closed = True
        self._close_async_clients()
        for conn in builtins.list(self._conns):
            with contextlib.suppress(Exception):
                conn.disconnect()
        with contextlib.suppress(Exception):
            self.client.close()
