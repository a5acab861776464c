"""The Redis task store: the contract methods, each one script (see the package's docstring)."""

from __future__ import annotations

import builtins
import contextlib
import functools
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.exceptions import NoScriptError

from resile import instrument
from resile._aio import current_async_library
from resile.errors import StoreConflict
from resile.queue import _transitions as T
from resile.queue._names import (
    DEFAULT_LEASE_SECONDS,
    TERMINAL_STATUSES,
    Outcome,
    Tally,
    TaskField,
    TaskStatus,
)
from resile.queue.registry import GONE_KEPT, WorkerRecord
from resile.queue.store._codec import created_task, encode_error
from resile.queue.store.base import (
    IfExists,
    Reclaimed,
    Store,
    check_create_args,
    check_lease_args,
    check_list_args,
    check_list_order,
    check_queue,
    check_seconds,
    dumps,
    encode_results,
    fail_args,
    lease_call_args,
    normalize_queues,
    purge_statuses,
    tally_counts,
    tally_range,
    with_trace_context,
)
from resile.queue.store.redis import _keys as K
from resile.queue.store.redis import _scripts
from resile.queue.store.redis._connection import (
    Command,
    Connection,
    Eval,
    Op,
    Pipeline,
    safe_url,
)
from resile.queue.store.redis._create import create_args, created, hgetalls, replayed
from resile.queue.store.redis._decode import CorruptField as _Corrupt
from resile.queue.store.redis._decode import decode as _decode
from resile.queue.store.redis._decode import pairs as _pairs
from resile.queue.store.redis._watcher import Watcher
from resile.queue.task import (
    JSONValue,
    Task,
    TaskError,
    TaskSpec,
)

__all__ = ["RedisStore"]

_num = _scripts.num

logger = logging.getLogger("resile.queue")

_S = _scripts.SPECS
# A fail whose lease changed between our read and the script ("stale") is decided again
# this many times before it gives up with StoreConflict.
_STALE_TRIES = 5
# Leases remembered for fail at most (a bound for leases that no write of ours ended).
_SNAPS_LIMIT = 10_000
# What fail reads to decide (status and owner checked, then the decision's inputs).
_F = TaskField
_SNAP_FIELDS = (_F.STATUS, _F.LEASE_OWNER, _F.ATTEMPTS, _F.STARTED_AT, _F.MAX_RETRIES, _F.BACKOFF)
_SNAP = tuple(f.value for f in (*_SNAP_FIELDS, _F.LAST_DELAY))
_OPTIONS = ("namespace", "retention", "failed_retention", "retry_for")


def _seconds_option(name: str, value: object, *, none_ok: bool) -> float | None:
    if value is None and none_ok:
        return None
    return check_seconds(
        value, f"RedisStore: {name}", "seconds >= 0 or None" if none_ok else "seconds >= 0"
    )


def _live_queues(reply: Sequence[Any] | Mapping[str, Any]) -> builtins.list[str]:
    """The queues that hold tasks, from ``HGETALL <root>:queues`` (flat or a dict)."""
    found = reply if isinstance(reply, Mapping) else _pairs(reply)
    return sorted(q for q, n in found.items() if int(n) > 0)


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
        self.url = safe_url(url)
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": sock,
            "socket_connect_timeout": conn,
            "health_check_interval": 30,
            "protocol": 2,  # the replies' shapes this package reads (HGETALL: a flat list)
        }
        io = Connection(url, options, retry_for=self.retry_for, root=self.root, owner=repr(self))
        self._io = io
        # The calls every method makes, bound once (the hot path skips a layer).
        self._call = io.call
        self._command = io.command
        self._pipeline = io.pipeline
        self._eval = io.eval
        self._run = io.run
        self._arun = io.arun
        self._watchers: builtins.list[Watcher] = []
        self._eviction_checked = False
        # task id -> (worker, attempts, started_at, max_retries, backoff, last_delay) as
        # this store's lease read them: fail decides from them without reading the task
        # first, and its script checks that they still hold.
        self._snaps: dict[str, tuple[Any, ...]] = {}

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
                        f"Redis URL {safe_url(url)!r}: {key} must be seconds, got {value!r}"
                    ) from None
            elif key != "protocol" and (
                key in URL_QUERY_ARGUMENT_PARSERS or key in ("db", "password", "username")
            ):
                theirs.append((key, value))
            else:
                raise ValueError(
                    f"Redis URL {safe_url(url)!r}: unknown option {key!r} (resile's: "
                    f"{', '.join(_OPTIONS)}; redis-py's: "
                    f"{', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))})"
                )
        ours.update(options)
        clean = urlunsplit(parts._replace(query=urlencode(theirs)))
        return cls(clean, **ours)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"

    def _ensure(self) -> None:
        self._io.ensure()

    # -- async: the same operations (``Op``) on this event loop's asyncio client ----------------
    # Each of these is written once, as an ``Op`` (a generator of requests); the sync method
    # runs it with ``self._run``, the async one with ``self._arun``. Under trio (redis.asyncio
    # serves only asyncio) the base class runs the sync method in a worker thread.

    @staticmethod
    def _native_async() -> bool:
        """Whether the running event loop is asyncio's (redis.asyncio serves only it)."""
        return current_async_library() == "asyncio"

    async def create_async(self, spec: TaskSpec, *, if_exists: IfExists = "error") -> Task:
        if not self._native_async():
            return await super().create_async(spec, if_exists=if_exists)
        out, created = await self._arun(self._create_op([spec], if_exists, self.now()))
        self._after_create(created)
        return out[0]

    async def create_many_async(
        self, specs: Iterable[TaskSpec], *, if_exists: IfExists = "error"
    ) -> builtins.list[Task]:
        if not self._native_async():
            return await super().create_many_async(specs, if_exists=if_exists)
        op = self._create_op(builtins.list(specs), if_exists, self.now())
        out, created = await self._arun(op)
        self._after_create(created)
        return out

    async def get_async(self, task_id: str) -> Task | None:
        if not self._native_async():
            return await super().get_async(task_id)
        return await self._arun(self._get_op(task_id))

    async def cancel_async(self, task_id: str) -> bool:
        if not self._native_async():
            return await super().cancel_async(task_id)
        done = await self._arun(self._cancel_op(task_id, self.now()))
        if done and instrument.hooks:
            self._after_cancel(await self.get_async(task_id))
        return done

    async def stats_async(self, queue: str | None = None) -> dict[TaskStatus, int]:
        if not self._native_async():
            return await super().stats_async(queue)
        return await self._arun(self._stats_op(queue))

    async def aclose(self) -> None:
        """Close this event loop's asyncio client, then the store."""
        await self._io.aclose()
        self.close()

    def _ttl_ms(self, status: TaskStatus) -> str:
        keep = self.failed_retention if status is TaskStatus.FAILED else self.retention
        return "" if keep is None else str(max(1, math.ceil(keep * 1000)))

    def _cutoff(self, status: TaskStatus, now: float) -> str:
        keep = self.failed_retention if status is TaskStatus.FAILED else self.retention
        return "" if keep is None else _num(now - keep)

    def _tk(self, task_id: str) -> str:
        return K.task_key(self.root, task_id)

    def close(self) -> None:
        if self._io.closed:
            return
        for w in builtins.list(self._watchers):
            w.stop()
        self._io.close()

    # -- producers ------------------------------------------------------------------------------

    def _create_op(
        self, specs: Sequence[TaskSpec], if_exists: IfExists, now: float
    ) -> Op[tuple[builtins.list[Task], builtins.list[Task]]]:
        """(every task, the new ones) of storing ``specs``."""
        check_create_args(specs, if_exists)
        if not specs:
            return [], []
        specs = with_trace_context(specs)
        ids, script, args = create_args(specs, if_exists, now)
        done = created((yield Eval(script, args)), specs, ids, now)
        if done is None:  # a replay: read what the first write stored
            return replayed((yield Pipeline(hgetalls(self.root, ids))))
        return done

    def create(
        self, spec: TaskSpec, *, if_exists: IfExists = "error", now: float | None = None
    ) -> Task:
        out, created = self._run(self._create_op([spec], if_exists, self.now(now)))
        self._after_create(created)
        return out[0]

    def create_many(
        self,
        specs: Iterable[TaskSpec],
        *,
        if_exists: IfExists = "error",
        now: float | None = None,
    ) -> builtins.list[Task]:
        out, created = self._run(self._create_op(builtins.list(specs), if_exists, self.now(now)))
        self._after_create(created)
        return out

    # -- workers --------------------------------------------------------------------------------

    def _reclaim_plan(
        self, need: Sequence[Sequence[Any]], now: float, reclaimed: dict[str, Reclaimed]
    ) -> builtins.list[str]:
        """The lease script's reclaim records: ``_transitions.lease_expired`` per expired
        lease; ``reclaimed`` gets what each record reclaims, by task id."""
        plan: builtins.list[str] = []
        for item in need:
            task_id, seen, attempts_s, max_retries_s, backoff_s, last_delay_s = item[:6]
            queue, handler, traceparent = item[6:9]
            decision = T.lease_expired(
                attempts=attempts_s,
                max_retries=max_retries_s,
                backoff=backoff_s,
                last_delay=last_delay_s,
                lease_expires_at=seen,
                now=now,
            )
            plan += _S["lease"].record(
                id=task_id,
                seen=seen or "",
                dead="1" if decision.dead else "0",
                due_s=_num(decision.due_at),
                delay_s=_num(decision.delay),
                error=encode_error(decision.error),
            )
            try:
                attempt = int(attempts_s)
            except ValueError:
                attempt = 0
            reclaimed[task_id] = Reclaimed(
                queue, handler, task_id, attempt, traceparent or None, decision.dead
            )
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
        """The lease script's arguments up to its reclaim records (a fresh op id)."""
        names = lease_call_args(queues, worker_id, limit, lease_seconds)
        expires = at + float(lease_seconds)
        cap = "" if capacity is None else dumps({str(k): float(v) for k, v in capacity.items()})
        return [
            *_S["lease"].argv(
                now_s=_num(at),
                expires_s=_num(expires),
                worker=worker_id,
                limit=str(limit),
                capacity=cap,
                op=_scripts.op_id(),
                op_ttl_ms=str(max(1, math.ceil(float(lease_seconds) * 1000))),
                failed_ttl_ms=self._ttl_ms(TaskStatus.FAILED),
                failed_cutoff_s=self._cutoff(TaskStatus.FAILED, at),
                nq=str(len(names)),
            ),
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
        return self._leased(self._eval("lease", head), head, worker_id, at)

    def _leased(
        self, reply: Any, head: Sequence[str], worker_id: str, at: float
    ) -> builtins.list[Task]:
        """Decode a lease script's reply; first run its reclaim round trips when it asks."""
        plan: builtins.list[str] = []
        # The plans' reclaims, by id; a round's script applies every record of its plan but
        # those it asks for again. (A lease renewed by its holder between two round trips
        # is left alone by the script, yet counted here: a rare extra event.)
        reclaimed: dict[str, Reclaimed] = {}
        for _ in range(10):
            if reply[0] != "need":
                break
            plan = self._reclaim_plan(reply[1:], at, reclaimed)
            reply = self._eval("lease", [*head, *plan])
        if reply[0] == "need":  # expired leases keep appearing faster than we reclaim them
            for item in reply[1:]:
                reclaimed.pop(item[0], None)
            self._after_reclaim(builtins.list(reclaimed.values()))
            return []  # lease next time
        self._after_reclaim(builtins.list(reclaimed.values()))
        out: builtins.list[Task] = []
        snaps = self._snaps
        if len(snaps) > _SNAPS_LIMIT:  # leases never failed nor completed through us
            snaps.clear()
        for flat in reply[1:]:
            fields = _pairs(flat)
            try:
                task = _decode(fields, strict=True)
            except _Corrupt as exc:
                error = T.corrupt(str(exc), at).error
                failed = TaskStatus.FAILED
                self._eval(
                    "corrupt",
                    _S["corrupt"].argv(
                        id=fields.get("id", ""),
                        worker=worker_id,
                        now_s=_num(at),
                        error=encode_error(error),
                        ttl_ms=self._ttl_ms(failed),
                        cutoff_s=self._cutoff(failed, at),
                    ),
                )
                logger.error("resile: task %s dead-lettered: %s", fields.get("id"), exc)
                continue
            out.append(task)
            # What fail decides from, as stored: this lease's attempt, policy, last delay.
            snaps[task.id] = (worker_id, *map(fields.get, _SNAP[2:]))
        return out

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
        args = _S["renew"].argv(
            now_s=_num(at), expires_s=_num(at + float(lease_seconds)), worker=worker_id
        )
        held = self._eval("renew", [*args, *ids])
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
        for task_id, _ in items:
            self._snaps.pop(task_id, None)
        if all(result is None for _, result in items):  # the common case: nothing to check
            args = [part for task_id, _ in items for part in (task_id, "null")]
        else:
            args = [part for pair in encode_results(items) for part in pair]
        if not args:
            return []
        done = TaskStatus.DONE
        head = _S["complete"].argv(
            worker=worker_id,
            now_s=_num(at),
            op=_scripts.op_id(),
            ttl_ms=self._ttl_ms(done),
            cutoff_s=self._cutoff(done, at),
        )
        return [*head, *args]

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
            return [], self._leased(self._eval("lease", head), head, worker_id, at)
        shas, anchor, root = self._io.shas, self._io.anchor, self.root
        cmds = [
            ("EVALSHA", shas["complete_flags"], 1, anchor, root, *done_args),
            ("EVALSHA", shas["lease"], 1, anchor, root, *head),
        ]

        def both() -> builtins.list[Any]:
            replies = self._pipeline(cmds)
            if any(isinstance(r, NoScriptError) for r in replies):
                # A Redis without our scripts (restarted, or not yet asked for one): load them.
                for name in ("complete_flags", "lease"):
                    self._command("SCRIPT", "LOAD", _scripts.text(name))
                if isinstance(replies[1], NoScriptError):
                    # The lease did not run: send the pair again, in order (a completion
                    # that ran repeats nothing: same op id).
                    replies = self._pipeline(cmds)
                else:
                    # The lease ran but the completions did not: they must not land on a
                    # task this very lease took (it was not held before it), so those answer
                    # no, as they would have first; the others are completed now.
                    replies = [self._late_completions(items, replies[1], worker_id, at), replies[1]]
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            return replies

        flags_reply, lease_reply = self._call(both)
        flags = [bool(x) for x in flags_reply]
        return flags, self._leased(lease_reply, head, worker_id, at)

    def _late_completions(
        self, items: Sequence[tuple[str, JSONValue]], lease_reply: Any, worker_id: str, at: float
    ) -> builtins.list[int]:
        """``complete_flags`` of ``items`` sent after a lease that ran first: 0 for the tasks
        that lease took (``lease_reply``), the script's answer for the others."""
        if isinstance(lease_reply, Exception) or not lease_reply or lease_reply[0] != "ok":
            taken: set[str] = set()
        else:
            taken = {_pairs(flat).get("id", "") for flat in lease_reply[1:]}
        kept = [(tid, result) for tid, result in items if tid not in taken]
        args = self._complete_args(kept, worker_id, at)
        answers = iter(self._eval("complete_flags", args) if args else [])
        return [0 if tid in taken else int(next(answers)) for tid, _ in items]

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
        """See ``Store.fail``; ``_transitions.after_failure`` decides, the script applies.

        The decision needs the task's attempts, max_retries, backoff and
        last_delay. For a task this store leased they are what the lease read
        (one round trip: the script); otherwise, or when the script answers that
        the lease changed since ("stale"), they are read first (``HMGET``).

        Raises:
            StoreConflict: the task changed between the read and the write every
                time, ``_STALE_TRIES`` times in a row (nothing was written; the
                worker tries again later).
        """
        err, delay, kind = fail_args(error, delay, outcome)
        at = self.now(now)
        op = _scripts.op_id()
        snap = self._snaps.pop(task_id, None)
        if snap is not None and snap[0] != worker_id:
            snap = None
        for _ in range(_STALE_TRIES):
            if snap is None:
                snap = self._call(lambda: self._command("HMGET", self._tk(task_id), *_SNAP))
                if not T.is_held(snap[0], snap[1], worker_id):
                    return None
                snap = (worker_id, *snap[2:])
            _, attempts_s, _, max_retries_s, backoff_s, last_delay_s = snap
            decision = T.after_failure(
                attempts=attempts_s,
                max_retries=max_retries_s,
                backoff=backoff_s if backoff_s not in (None, "") else "null",
                last_delay=last_delay_s,
                error=err,
                base=at,
                permanent=permanent,
                delay=delay,
            )
            reply = self._eval(
                "fail", self._fail_args(task_id, worker_id, op, snap, kind, decision)
            )
            if reply[0] != "stale":
                return _decode(reply[1], strict=False) if reply[0] == "ok" else None
            snap = None
        raise StoreConflict(task_id, "fail", _STALE_TRIES)

    def _fail_args(
        self,
        task_id: str,
        worker_id: str,
        op: str,
        snap: Sequence[str | None],
        kind: Outcome,
        decision: T.AfterFailure,
    ) -> builtins.list[str]:
        failed, at = TaskStatus.FAILED, decision.base
        return _S["fail"].argv(
            id=task_id,
            worker=worker_id,
            now_s=_num(at),
            op=op,
            attempts=snap[1] or "",
            started_s=snap[2] or "",
            max_retries=snap[3] or "",
            backoff=snap[4] or "",
            last_delay=snap[5] or "",
            outcome=kind.value,
            error=encode_error(decision.error),
            dead="1" if decision.dead else "0",
            due_s=_num(decision.due_at),
            delay_s=_num(decision.delay),
            ttl_ms=self._ttl_ms(failed),
            cutoff_s=self._cutoff(failed, at),
        )

    def release(self, task_id: str, worker_id: str, *, now: float | None = None) -> Task | None:
        at = self.now(now)
        self._snaps.pop(task_id, None)
        reply = self._eval(
            "release",
            _S["release"].argv(id=task_id, worker=worker_id, now_s=_num(at), op=_scripts.op_id()),
        )
        if reply[0] != "ok":
            return None
        task = _decode(reply[1], strict=False)
        self._notify([task])
        return task

    # -- anyone ---------------------------------------------------------------------------------

    def _cancel_args(self, task_id: str, at: float) -> builtins.list[str]:
        canceled = TaskStatus.CANCELED
        return _S["cancel"].argv(
            id=task_id,
            now_s=_num(at),
            op=_scripts.op_id(),
            error=encode_error(T.CANCELED_ERROR),
            ttl_ms=self._ttl_ms(canceled),
            cutoff_s=self._cutoff(canceled, at),
        )

    def _cancel(self, task_id: str, at: float) -> bool:
        return self._run(self._cancel_op(task_id, at))

    def _cancel_op(self, task_id: str, at: float) -> Op[bool]:
        return bool((yield Eval("cancel", self._cancel_args(task_id, at))))

    def _set_field(
        self, task_id: str, field: str, value: float | str, worker_id: str | None, at: float
    ) -> bool:
        if not isinstance(value, str):
            value = _num(value)
        args = _S["setfield"].argv(
            id=task_id, field=field, value=value, worker=worker_id or "", now_s=_num(at)
        )
        return bool(self._eval("setfield", args))

    def get_checkpoint(self, task_id: str) -> JSONValue:
        raw = self._call(lambda: self._command("HGET", self._tk(task_id), _F.CHECKPOINT.value))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def get(self, task_id: str) -> Task | None:
        return self._run(self._get_op(task_id))

    def _get_op(self, task_id: str) -> Op[Task | None]:
        flat = yield Command(("HGETALL", self._tk(task_id)))
        return _decode(flat, strict=False) if flat else None

    def _sweep_args(self, queues: Sequence[str]) -> builtins.list[str] | None:
        """The sweep script's arguments; ``None`` when there is nothing to sweep."""
        if not queues or (self.retention is None and self.failed_retention is None):
            return None
        at = self.now()
        args = _S["sweep"].argv(
            max=str(K.SWEEP_ON_READ),
            done_cutoff_s=self._cutoff(TaskStatus.DONE, at),
            failed_cutoff_s=self._cutoff(TaskStatus.FAILED, at),
            canceled_cutoff_s=self._cutoff(TaskStatus.CANCELED, at),
        )
        return [*args, *queues]

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
        order: str = "created",
        descending: bool = False,
        after_key: float | None = None,
    ) -> builtins.list[Task]:
        statuses = check_list_args(status, limit, offset) or tuple(TaskStatus)
        check_list_order(order, descending, after, after_key)
        names = [queue] if queue is not None else self.queues()
        self._sweep(names)
        pairs = [(q, s) for q in names for s in statuses]
        if order == "created":
            ids = self._ids_by_sequence(pairs, offset + limit, after, descending)[offset:]
        else:
            ids = self._ids_by_field(pairs, order, descending, after, after_key, offset + limit)
            ids = ids[offset:]
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

    def _index_members(
        self, pairs: Sequence[tuple[str, TaskStatus]], command: Callable[[str], tuple[Any, ...]]
    ) -> tuple[builtins.list[builtins.list[tuple[str, float]]], builtins.list[str]]:
        """Per (queue, status) the (id, sequence) pairs ``command(key)`` reads from its
        sequence-scored set, and the ids of the ``DOING`` tasks (their leases set)."""
        commands: builtins.list[tuple[Any, ...]] = []
        for q, s in pairs:
            if s is TaskStatus.DOING:  # the leases set holds exactly the DOING tasks
                commands.append(("ZRANGE", K.queue_key(self.root, K.LEASES, q), 0, -1))
            else:
                commands.append(command(K.status_key(self.root, s, q)))
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
        return found, doing

    def _ids_by_sequence(
        self,
        pairs: Sequence[tuple[str, TaskStatus]],
        want: int,
        after: int | None,
        descending: bool,
    ) -> builtins.list[str]:
        """The first ``want`` ids in ``sequence`` order past ``after``: ``want`` per set, merged."""
        if descending:
            high = "+inf" if after is None else f"({int(after)}"
            found, doing = self._index_members(
                pairs,
                lambda key: ("ZREVRANGEBYSCORE", key, high, "-inf", "WITHSCORES", "LIMIT", 0, want),
            )
        else:
            low = "-inf" if after is None else f"({int(after)}"
            found, doing = self._index_members(
                pairs,
                lambda key: ("ZRANGEBYSCORE", key, low, "+inf", "WITHSCORES", "LIMIT", 0, want),
            )
        if doing:
            seqs = self._call(
                lambda: self._pipeline([("HGET", self._tk(t), _F.SEQ.value) for t in doing])
            )
            held = [(tid, float(n)) for tid, n in zip(doing, seqs, strict=True) if n]
            if after is not None:
                held = [(tid, n) for tid, n in held if (n < after if descending else n > after)]
            found.append(sorted(held, key=lambda pair: pair[1], reverse=descending)[:want])
        merged = heapq.merge(*found, key=lambda pair: pair[1], reverse=descending)
        return builtins.list(dict.fromkeys(tid for tid, _ in merged))[:want]

    def _time_index(self, queue: str, status: TaskStatus, order: str) -> str | None:
        """The sorted set of ``queue``'s ``status`` tasks scored by ``order``'s field, if any.

        ``due:<q>`` holds every PENDING task by ``due_at``; ``f:<STATUS>:<q>`` every
        finished one by ``finished_at``, which is its ``updated_at`` (a finished task
        changes no more: the finishing step writes both from one clock reading).
        """
        if order == "due" and status is TaskStatus.PENDING:
            return K.queue_key(self.root, K.DUE, queue)
        if order == "updated" and status in TERMINAL_STATUSES:
            return K.SHAPES["finished"].format(root=self.root, status=status.value, queue=queue)
        return None

    def _keyed(self, ids: Sequence[str], field: str) -> builtins.list[tuple[float, int, str]]:
        """``(field's value, sequence, id)`` of each task of ``ids`` still stored."""
        if not ids:
            return []
        values = self._call(
            lambda: self._pipeline([("HMGET", self._tk(tid), field, _F.SEQ.value) for tid in ids])
        )
        out: builtins.list[tuple[float, int, str]] = []
        for tid, got in zip(ids, values, strict=True):
            if isinstance(got, Exception) or got[0] is None or got[1] is None:
                continue  # gone (retention) since we read the index
            out.append((float(got[0]), int(got[1]), tid))
        return out

    def _by_score(
        self,
        key: str,
        field: str,
        want: int,
        descending: bool,
        mark: tuple[float, int] | None,
    ) -> builtins.list[tuple[float, int, str]]:
        """The first ``want`` ``(key, sequence, id)`` past ``mark`` of a set scored by ``field``.

        Reads the set in chunks from the cursor's score on, until ``want`` rows are
        found and every member sharing the last one's score is read too (members of
        one score come in id order, not in sequence order), so a page costs its rows
        plus the ties at its two ends, not the size of the set.
        """
        chunk = max(want, 64)
        if descending:
            command = "ZREVRANGEBYSCORE"
            bounds = ("+inf" if mark is None else repr(mark[0]), "-inf")
        else:
            command = "ZRANGEBYSCORE"
            bounds = ("-inf" if mark is None else repr(mark[0]), "+inf")
        out: builtins.list[tuple[float, int, str]] = []
        offset = 0
        while True:
            args = (command, key, *bounds, "WITHSCORES", "LIMIT", offset, chunk)
            got = self._call(functools.partial(self._command, *args))
            members = [got[i] for i in range(0, len(got), 2)]
            for row in self._keyed(members, field):
                if mark is None or (
                    (row[0], row[1]) < mark if descending else (row[0], row[1]) > mark
                ):
                    out.append(row)
            offset += len(members)
            if len(members) < chunk:
                break
            out.sort(reverse=descending)
            if len(out) >= want:
                edge, last = out[want - 1][0], float(got[-1])
                if (last < edge) if descending else (last > edge):
                    break
        out.sort(reverse=descending)
        return out[:want]

    # Members a whole-set read of ``_by_field_whole`` holds at a time.
    WHOLE_CHUNK = 2_000

    def _by_field_whole(
        self,
        pairs: Sequence[tuple[str, TaskStatus]],
        field: str,
        want: int,
        descending: bool,
        mark: tuple[float, int] | None,
    ) -> builtins.list[tuple[float, int, str]]:
        """The first ``want`` ``(field's value, sequence, id)`` past ``mark`` of every task of
        ``pairs``, in order: each set read whole, ``WHOLE_CHUNK`` members at a time, keeping
        only the best ``want`` (memory bounded by the two, whatever the sets hold)."""
        pick = heapq.nlargest if descending else heapq.nsmallest
        best: builtins.list[tuple[float, int, str]] = []
        for q, s in pairs:
            key = (
                K.queue_key(self.root, K.LEASES, q)  # the leases set holds the DOING tasks
                if s is TaskStatus.DOING
                else K.status_key(self.root, s, q)
            )
            start = 0
            while True:
                args = ("ZRANGE", key, start, start + self.WHOLE_CHUNK - 1)
                ids = self._call(functools.partial(self._command, *args))
                rows = self._keyed(ids, field)
                if mark is not None:
                    rows = [
                        r
                        for r in rows
                        if ((r[0], r[1]) < mark if descending else (r[0], r[1]) > mark)
                    ]
                best = pick(want, [*best, *rows])
                if len(ids) < self.WHOLE_CHUNK:
                    break
                start += self.WHOLE_CHUNK
        return best

    def _ids_by_field(
        self,
        pairs: Sequence[tuple[str, TaskStatus]],
        order: str,
        descending: bool,
        after: int | None,
        after_key: float | None,
        want: int,
    ) -> builtins.list[str]:
        """The first ``want`` matching ids sorted by ``order``'s field then sequence, past
        the cursor.

        A (queue, status) with a set scored by that field (``_time_index``: PENDING by
        due time, finished ones by updated time) is read from the cursor on, a page's
        worth; the others (DOING: the leases set, as many as the worker slots; PENDING by
        updated time; finished ones by due time) are read whole, one ``HMGET`` per
        task, ``_by_field_whole``: their time grows with the matching tasks, their memory
        does not (docs/dashboard.md).
        """
        field = _F.DUE_AT.value if order == "due" else _F.UPDATED_AT.value
        mark = None if after is None or after_key is None else (float(after_key), int(after))
        streams: builtins.list[builtins.list[tuple[float, int, str]]] = []
        whole: builtins.list[tuple[str, TaskStatus]] = []
        for q, s in pairs:
            key = self._time_index(q, s, order)
            if key is None:
                whole.append((q, s))
            else:
                streams.append(self._by_score(key, field, want, descending, mark))
        if whole:
            streams.append(self._by_field_whole(whole, field, want, descending, mark))
        merged = heapq.merge(*streams, reverse=descending)
        return builtins.list(dict.fromkeys(tid for _, _, tid in merged))[:want]

    def _stats_keys(self, names: Sequence[str]) -> builtins.list[tuple[TaskStatus, str]]:
        """(status, the key whose size counts it) per queue and status."""
        return [
            (
                s,
                K.queue_key(self.root, K.LEASES, q)
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
        return self._run(self._stats_op(queue))

    def _stats_op(self, queue: str | None) -> Op[dict[TaskStatus, int]]:
        if queue is not None:
            names = [queue]
        else:
            names = _live_queues((yield Command(("HGETALL", K.queues_key(self.root)))))
        sweep = self._sweep_args(names)
        if sweep is not None:
            yield Eval("sweep", sweep)
        keys = self._stats_keys(names)
        if not keys:
            return self._counts([], [])
        cards = yield Pipeline([("ZCARD", key) for _, key in keys])
        return self._counts(keys, cards)

    def queues(self) -> builtins.list[str]:
        return _live_queues(self._call(lambda: self._command("HGETALL", K.queues_key(self.root))))

    # -- paused queues: one hash, read by the lease and next_due scripts -----------------------

    def pause(self, queue: str, *, now: float | None = None) -> bool:
        name = check_queue(queue, "pause")
        at = _num(self.now(now))
        key = K.paused_key(self.root)
        return bool(self._call(lambda: self._command("HSETNX", key, name, at)))

    def resume(self, queue: str) -> bool:
        name = check_queue(queue, "resume")
        key = K.paused_key(self.root)
        removed, _ = self._call(
            lambda: self._pipeline(
                [("HDEL", key, name), ("PUBLISH", K.channel(self.root, name), "1")]
            )
        )
        return bool(removed)

    def paused(self) -> dict[str, float]:
        flat = self._call(lambda: self._command("HGETALL", K.paused_key(self.root)))
        return dict(sorted((str(k), float(v)) for k, v in _pairs(flat).items()))

    # -- per-minute outcome counters: a hash per queue and hour, written by the scripts --------

    def tallies(
        self, *, since: float, until: float | None = None, queue: str | None = None
    ) -> dict[int, dict[Tally, int]]:
        lo, hi = tally_range(since, until, self.now())
        names = self._tally_queues(queue)
        hours = range(lo // 60, hi // 60 + 1)
        keys = [(q, K.tally_key(self.root, h, q)) for q in names for h in hours]
        rows = [(m, what, n) for _, m, what, n in self._fields(keys, lo, hi)]
        return tally_counts(rows)

    def _timing_rows(self, lo: int, hi: int, queue: str | None) -> Iterable[tuple[str, str, int]]:
        # Whole hours of the range from the per-hour hash of their day, the hours it cuts
        # from their per-minute hash: a day is 2 + 2 small hashes per queue, not 24 big ones.
        names = self._tally_queues(queue)
        whole = [h for h in range(lo // 60, hi // 60 + 1) if lo <= h * 60 and h * 60 + 59 <= hi]
        cut = [h for h in (lo // 60, hi // 60) if h not in whole]
        days = sorted({h // 24 for h in whole})
        keys = [(q, K.timing_key(self.root, h, q)) for q in names for h in sorted(set(cut))]
        rows = [(q, what, n) for q, _, what, n in self._fields(keys, lo, hi)]
        if whole:
            keys = [(q, K.timing_hours_key(self.root, d, q)) for q in names for d in days]
            got = self._fields(keys, whole[0], whole[-1])
            rows += [(q, what, n) for q, _, what, n in got]
        return rows

    def _tally_queues(self, queue: str | None) -> builtins.list[str]:
        if queue is not None:
            return [queue]
        reply = self._call(lambda: self._command("HKEYS", K.queues_key(self.root)))
        return sorted(str(q) for q in reply)

    def _fields(
        self, keys: Sequence[tuple[str, str]], lo: int, hi: int
    ) -> builtins.list[tuple[str, int, str, int]]:
        """``(queue, slot, counter, n)`` of the counter hashes ``keys`` (``(queue, key)``),
        fields ``"<slot>/<counter>"`` with ``lo <= slot <= hi``: one pipelined HGETALL each."""
        if not keys:
            return []
        replies = self._call(lambda: self._pipeline([("HGETALL", k) for _, k in keys]))
        sep = K.TALLY_FIELD[len("{minute}")]
        rows = []
        for (q, _), reply in zip(keys, replies, strict=True):
            fields = reply if isinstance(reply, Mapping) else _pairs(reply)
            for name, n in fields.items():
                slot, _, what = str(name).partition(sep)
                if slot.lstrip("-").isdigit() and lo <= int(slot) <= hi:
                    rows.append((q, int(slot), what, int(n)))
        return rows

    # -- schedules: one hash of records, changed by the schedule_swap script -------------------

    def _schedule_texts(self) -> builtins.list[str]:
        flat = self._call(lambda: self._command("HGETALL", K.schedules_key(self.root)))
        records = dict(flat) if isinstance(flat, Mapping) else _pairs(flat)
        return [str(text) for _, text in sorted(records.items())]

    def _schedule_text(self, name: str) -> str | None:
        key = K.schedules_key(self.root)
        text = self._call(lambda: self._command("HGET", key, name))
        return None if text is None else str(text)

    def _schedule_swap(
        self, name: str, old: str | None, new: str | None, task: TaskSpec | None, now: float
    ) -> Task | bool:
        return self._run(self._swap_op(name, old, new, task, now))

    def _swap_op(
        self, name: str, old: str | None, new: str | None, task: TaskSpec | None, now: float
    ) -> Op[Task | bool]:
        spec = _scripts.SPECS["schedule_swap"]
        create1 = _scripts.SPECS["create1"].args
        tail: builtins.list[str] = []
        op = _scripts.op_id()
        if task is not None:
            _, _, cargs = create_args([task], "return", now)
            op = cargs[create1.index("op")]
            tail = cargs[len(create1) :]
        args = spec.argv(
            name=name,
            has_old="0" if old is None else "1",
            old=old or "",
            has_new="0" if new is None else "1",
            new=new or "",
            now_s=_num(now),
            op=op,
        )
        reply = yield Eval("schedule_swap", args + tail)
        kind = str(reply[0])
        if kind == "conflict":
            return False
        if task is None or kind != "ok" or not isinstance(reply[1], int):
            return True  # swapped; the task existed already (or this is our own replay)
        return created_task(task, task.id or "", reply[1], task.due_time(now), now)

    # -- the worker registry: one hash of records, written by each worker for itself ------------

    def _records(self) -> dict[str, str]:
        flat = self._call(lambda: self._command("HGETALL", K.workers_key(self.root)))
        return dict(flat) if isinstance(flat, Mapping) else _pairs(flat)

    def record_worker(self, record: WorkerRecord) -> None:
        key = K.workers_key(self.root)
        cutoff = record.beat_at - GONE_KEPT
        stale = []
        for wid, text in self._records().items():
            try:
                if WorkerRecord.from_json(text).expires_at < cutoff:
                    stale.append(wid)
            except ValueError:
                stale.append(wid)
        commands: builtins.list[tuple[Any, ...]] = [("HSET", key, record.id, record.to_json())]
        if stale:
            commands.append(("HDEL", key, *stale))
        self._call(lambda: self._pipeline(commands))

    def remove_worker(self, worker_id: str) -> bool:
        key = K.workers_key(self.root)
        return bool(self._call(lambda: self._command("HDEL", key, worker_id)))

    def workers(self) -> builtins.list[WorkerRecord]:
        out = []
        for _, text in sorted(self._records().items()):
            try:
                out.append(WorkerRecord.from_json(text))
            except ValueError:
                continue
        return out

    def requeue(self, task_id: str, *, delay: float = 0.0, now: float | None = None) -> Task | None:
        wait = check_seconds(delay, "requeue: delay")
        at = self.now(now)
        args = _S["requeue"].argv(
            id=task_id, now_s=_num(at), due_s=_num(at + wait), op=_scripts.op_id()
        )
        reply = self._eval("requeue", args)
        if reply[0] != "ok":
            return None
        task = _decode(reply[1], strict=False)
        self._notify([task])
        return task

    def make_due(self, task_id: str, *, now: float | None = None) -> Task | None:
        args = _S["make_due"].argv(id=task_id, now_s=_num(self.now(now)), op=_scripts.op_id())
        reply = self._eval("make_due", args)
        if reply[0] != "ok":
            return None
        task = _decode(reply[1], strict=False)
        self._notify([task])
        return task

    def delete(self, task_id: str) -> bool:
        args = _S["delete"].argv(id=task_id, op=_scripts.op_id())
        return bool(self._eval("delete", args))

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
                        *_S["purge"].argv(
                            cutoff_s=cutoff, max=str(K.PURGE_BATCH), nq=str(len(names))
                        ),
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
        found = self._eval("next_due", [*_S["next_due"].argv(capacity=cap), *names])
        return None if found is None else float(found)

    def oldest_due_at(self, queue: str) -> float | None:
        name = check_queue(queue, "oldest_due_at")
        found = self._eval("oldest_due", _S["oldest_due"].argv(queue=name))
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
        watcher = Watcher(self._io, [K.channel(self.root, q) for q in names], wake, self._unwatch)
        self._watchers.append(watcher)
        watcher.start()
        return watcher.stop

    def _unwatch(self, watcher: Watcher) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(watcher)
