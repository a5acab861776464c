"""What only the Redis store does: scripts by SHA, key layout, retention, wake-ups, reconnects.

The contract itself is the conformance suite (``test_conformance.py``, backend
``redis``). These tests run against the session's Redis (``REDIS_URL`` or a
throwaway server), each in its own namespace; those that stop a server start
their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

redis = pytest.importorskip("redis")

from redis.crc import key_slot  # noqa: E402

from _redis_server import drop_namespace  # noqa: E402
from _waits import wait_for  # noqa: E402
from resile import Constant, Exponential  # noqa: E402
from resile.errors import ResileError, StoreConflict, StoreUnavailable  # noqa: E402
from resile.queue import TaskSpec, TaskStatus  # noqa: E402
from resile.queue import _transitions as T  # noqa: E402
from resile.queue._names import FIELDS, Outcome  # noqa: E402
from resile.queue.store import base as store_base  # noqa: E402
from resile.queue.store import open_store  # noqa: E402
from resile.queue.store.redis import RedisStore  # noqa: E402
from resile.queue.store.redis import _keys as K  # noqa: E402
from resile.queue.store.redis import _scripts as redis_scripts  # noqa: E402
from resile.queue.store.redis._scripts import SPECS  # noqa: E402
from resile.queue.task import TaskError  # noqa: E402

from .conftest import T0, FakeEpoch  # noqa: E402

W1, W2 = "worker-1", "worker-2"


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "h")
    kw.setdefault("backoff", Constant(5.0))
    return TaskSpec(**kw)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A fresh namespace on the session's Redis; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    drop_namespace(redis_url, name)


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client on the session's Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def make_store(redis_url: str, namespace: str) -> Iterator[Any]:
    """Open RedisStores in this test's namespace (closed afterwards)."""
    opened: list[RedisStore] = []

    def factory(**options: Any) -> RedisStore:
        options.setdefault("namespace", namespace)
        s = RedisStore(redis_url, **options)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def rstore(make_store: Any, clock: FakeEpoch) -> RedisStore:
    """A RedisStore on the fake clock."""
    return make_store(clock=clock)  # type: ignore[no-any-return]


def command_calls(raw: Any, *names: str) -> int:
    stats = raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names)


def keys_of(raw: Any, namespace: str) -> list[str]:
    return sorted(raw.keys(f"{K.root(namespace)}*"))


def workload(s: RedisStore, now: float = T0) -> None:
    """A bit of everything: creates in two queues, lease, complete, fail, cancel, requeue."""
    s.create_many([spec(id=f"a{i}", queue="alpha") for i in range(4)], now=now)
    s.create(spec(id="b0", queue="beta", delay=30), now=now)
    s.create(spec(id="g0", queue="alpha", resources={"gpu": 1}), now=now)
    got = s.lease(["alpha", "beta"], W1, limit=3, now=now)
    s.complete(got[0].id, W1, {"ok": True}, now=now)
    s.fail(got[1].id, W1, RuntimeError("x"), now=now)
    s.fail(got[2].id, W1, RuntimeError("y"), permanent=True, now=now)
    s.requeue(got[2].id, now=now)
    s.cancel("b0", now=now)
    s.renew_many([t.id for t in got], W1, now=now)
    s.progress("a3", 10, now=now)
    s.save_checkpoint("a3", {"offset": 1}, now=now)
    s.next_due_at(["alpha", "beta"], capacity={})
    s.stats()
    s.list(status="PENDING")
    s.purge(0, now=now + 1)


class TestScripts:
    def test_state_changes_run_by_sha(self, rstore: RedisStore, raw: Any) -> None:
        """Every state change is EVALSHA of a loaded script, never EVAL of its text."""
        rstore.create(spec(id="warm"), now=T0)  # loads the create script if needed
        before_eval, before_sha = command_calls(raw, "eval"), command_calls(raw, "evalsha")
        workload(rstore)
        assert command_calls(raw, "eval") == before_eval
        assert command_calls(raw, "evalsha") > before_sha

    def test_script_flush_reloads(self, rstore: RedisStore, raw: Any) -> None:
        """After SCRIPT FLUSH (or a restart) the store reloads its scripts on NOSCRIPT."""
        rstore.create(spec(id="a"), now=T0)
        raw.script_flush()
        assert rstore.lease("default", W1, now=T0)[0].id == "a"
        raw.script_flush()
        assert rstore.complete("a", W1, 7, now=T0) is not None
        assert rstore.get("a").result == 7  # type: ignore[union-attr]


class TestCompleteMany:
    def test_one_round_trip_for_many(self, rstore: RedisStore, raw: Any) -> None:
        """complete_many completes the held tasks (None for the others) in one pipeline."""
        rstore.create_many([spec(id=f"t{i}") for i in range(5)], now=T0)
        rstore.lease("default", W1, limit=4, now=T0)
        raw.script_flush()  # the pipeline reloads the script and replays safely
        got = rstore.complete_many(
            [("t0", 0), ("t1", {"a": 1}), ("t4", 4), ("nope", None), ("t2", [2])], W1, now=T0 + 1
        )
        assert [t.id if t else None for t in got] == ["t0", "t1", None, None, "t2"]
        assert rstore.stats()[TaskStatus.DONE] == 3
        t1 = rstore.get("t1")
        assert t1 is not None and t1.result == {"a": 1} and len(t1.history) == 1

    def test_non_json_result_writes_nothing(self, rstore: RedisStore) -> None:
        """A result that is not JSON fails the whole call before anything is written."""
        rstore.create_many([spec(id="a"), spec(id="b")], now=T0)
        rstore.lease("default", W1, limit=2, now=T0)
        with pytest.raises(ValueError, match="result"):
            rstore.complete_many([("a", 1), ("b", {1, 2})], W1, now=T0)
        assert rstore.stats()[TaskStatus.DOING] == 2


class TestKeys:
    def test_every_key_shares_the_namespace_hash_tag(
        self, rstore: RedisStore, raw: Any, namespace: str
    ) -> None:
        """Every key a store writes is under resile:{namespace}: one Cluster slot."""
        workload(rstore)
        keys = keys_of(raw, namespace)
        assert keys, "the workload wrote nothing?"
        assert all(k.startswith(f"resile:{{{namespace}}}:") for k in keys)
        assert len({key_slot(k.encode()) for k in keys}) == 1
        assert f"{K.root(namespace)}:t:a3" in keys
        assert f"{K.root(namespace)}:s:PENDING:alpha" in keys

    def test_no_keys_or_scan_commands(self, rstore: RedisStore, raw: Any) -> None:
        """No operation of the store uses KEYS or SCAN (directly or in a script)."""
        before = command_calls(raw, "keys", "scan", "hscan", "zscan", "sscan")
        workload(rstore)
        assert command_calls(raw, "keys", "scan", "hscan", "zscan", "sscan") == before

    def test_namespaces_are_separate(
        self, make_store: Any, clock: FakeEpoch, namespace: str
    ) -> None:
        """Two namespaces on one Redis share nothing, not even task ids."""
        a = make_store(namespace=f"{namespace}-a", clock=clock)
        b = make_store(namespace=f"{namespace}-b", clock=clock)
        a.create(spec(id="same"), now=T0)
        b.create(spec(id="same"), now=T0)
        assert a.lease("default", W1, now=T0)[0].id == "same"
        assert b.stats()[TaskStatus.PENDING] == 1 and b.queues() == ["default"]

    def test_odd_names(self, rstore: RedisStore) -> None:
        """Queue names with colons and ids with braces, spaces or non-ASCII stay apart."""
        for tid, q in (("x{y}z", "a"), ("é 1", "a:b"), ("a:b", "a:b:ready")):
            rstore.create(spec(id=tid, queue=q), now=T0)
        assert [t.id for t in rstore.lease("a", W1, limit=5, now=T0)] == ["x{y}z"]
        assert [t.id for t in rstore.lease("a:b", W1, limit=5, now=T0)] == ["é 1"]
        assert rstore.queues() == ["a", "a:b", "a:b:ready"]
        assert rstore.stats("a:b:ready")[TaskStatus.PENDING] == 1

    def test_extreme_priorities_keep_their_order(self, rstore: RedisStore) -> None:
        """The rank encoding orders every 64-bit priority (beyond what a float holds exactly)."""
        prios = [2**63 - 1, -(2**63), 2**53 + 1, 2**53, -1, 0]
        for p in prios:
            rstore.create(spec(id=str(p), priority=p), now=T0)
        got = rstore.lease("default", W1, limit=10, now=T0)
        assert [t.priority for t in got] == sorted(prios)

    def test_delayed_tasks_are_not_touched_by_lease(self, rstore: RedisStore, raw: Any) -> None:
        """A lease reads the head of the indexes, not the tasks that are not due."""
        rstore.create_many([spec(delay=1000 + i) for i in range(2000)], now=T0)
        rstore.create(spec(id="due"), now=T0)
        before = command_calls(raw, "hget", "hmget", "hgetall", "hset")
        assert [t.id for t in rstore.lease("default", W1, limit=10, now=T0)] == ["due"]
        assert command_calls(raw, "hget", "hmget", "hgetall", "hset") - before < 20


class TestCompleteThenLeaseOrder:
    def test_a_completion_never_lands_on_a_task_the_same_call_leases(
        self, rstore: RedisStore, raw: Any
    ) -> None:
        """complete_then_lease on a Redis that has the lease script but not the completion's
        (restarted, then asked for a lease): the completion still counts as sent first, so a
        task the lease takes is not completed (the model test's minimal failing sequence)."""
        rstore.create(spec(id="t"), now=T0)
        raw.script_flush()
        raw.script_load(redis_scripts.text("lease"))
        flags, leased = rstore.complete_then_lease([("t", {"r": 1})], "default", W1, now=T0)
        assert flags == [False] and [t.id for t in leased] == ["t"]
        got = rstore.get("t")
        assert got is not None and got.status is TaskStatus.DOING and got.history == ()
        assert got.lease_owner == W1 and got.result is None

    def test_held_tasks_are_completed_after_such_a_lease(
        self, rstore: RedisStore, raw: Any
    ) -> None:
        """The same fault with a held task: it is completed (once), the lease takes the next."""
        rstore.create_many([spec(id="a"), spec(id="b")], now=T0)
        rstore.lease("default", W1, now=T0)  # takes a
        raw.script_flush()
        raw.script_load(redis_scripts.text("lease"))
        flags, leased = rstore.complete_then_lease([("a", 7)], "default", W1, now=T0 + 1)
        assert flags == [True] and [t.id for t in leased] == ["b"]
        done = rstore.get("a")
        assert done is not None and done.status is TaskStatus.DONE and done.result == 7


class TestDueIndex:
    def test_a_store_without_the_due_index_gets_it_built_once(
        self, rstore: RedisStore, raw: Any, namespace: str
    ) -> None:
        """Tasks written before the due index existed: oldest_due_at builds it, then is exact."""
        rstore.create_many([spec(id=f"t{i}", due_at=T0 + i) for i in range(5)], now=T0)
        due_key = f"{K.root(namespace)}:due:default"
        assert raw.zcard(due_key) == 5
        raw.delete(due_key)  # what a store written by an older resile holds
        assert rstore.oldest_due_at("default") == T0
        assert raw.zrange(due_key, 0, -1, withscores=True) == [(f"t{i}", T0 + i) for i in range(5)]
        rstore.lease("default", W1, now=T0 + 1)  # takes t0: the index follows
        assert rstore.oldest_due_at("default") == T0 + 1

    def test_reading_it_is_one_lookup(self, rstore: RedisStore, raw: Any) -> None:
        """oldest_due_at reads the index head, whatever the number of PENDING tasks."""
        rstore.create_many([spec(delay=i) for i in range(2000)], now=T0)
        rstore.oldest_due_at("default")  # (builds nothing: the index is complete)
        before = command_calls(raw, "hget", "zrange", "zcard", "zadd")
        assert rstore.oldest_due_at("default") == T0
        assert command_calls(raw, "hget", "zrange", "zcard", "zadd") - before <= 4


class TestRetention:
    def test_done_tasks_get_a_ttl_dead_letters_do_not(
        self, make_store: Any, clock: FakeEpoch, raw: Any
    ) -> None:
        """DONE and CANCELED tasks expire after `retention`; FAILED ones are kept; requeue keeps."""
        s = make_store(clock=clock, retention=60)
        s.create_many([spec(id=i, max_retries=0) for i in ("ok", "dead", "gone")], now=T0)
        s.lease("default", W1, limit=2, now=T0)
        s.complete("ok", W1, None, now=T0)
        s.fail("dead", W1, RuntimeError(), now=T0)
        s.cancel("gone", now=T0)
        assert 0 < raw.pttl(s._tk("ok")) <= 60_000
        assert 0 < raw.pttl(s._tk("gone")) <= 60_000
        assert raw.pttl(s._tk("dead")) == -1
        s.requeue("gone", now=T0)
        assert raw.pttl(s._tk("gone")) == -1

    def test_failed_retention(self, make_store: Any, clock: FakeEpoch, raw: Any) -> None:
        """failed_retention gives dead letters a TTL too."""
        s = make_store(clock=clock, failed_retention=3600)
        s.create(spec(id="dead", max_retries=0), now=T0)
        s.lease("default", W1, now=T0)
        s.fail("dead", W1, RuntimeError(), now=T0)
        assert 0 < raw.pttl(s._tk("dead")) <= 3_600_000

    def test_expired_tasks_leave_the_indexes(self, make_store: Any, clock: FakeEpoch) -> None:
        """Past their retention, finished tasks vanish from get, list, stats and queues."""
        s = make_store(clock=clock, retention=10)
        s.create_many([spec(id="old"), spec(id="new")], now=T0)
        s.lease("default", W1, limit=2, now=T0)
        s.complete("old", W1, None, now=T0)
        s.complete("new", W1, None, now=T0 + 5)
        clock.advance(12)
        assert s.stats()[TaskStatus.DONE] == 1
        assert [t.id for t in s.list()] == ["new"]
        assert s.get("old") is None and s.get("new") is not None
        clock.advance(10)
        assert s.stats()[TaskStatus.DONE] == 0 and s.queues() == []

    def test_redis_expires_the_hash(self, make_store: Any, raw: Any) -> None:
        """The TTL is a real Redis expiry: the hash goes even if no one sweeps."""
        s = make_store(retention=0.2)
        s.create(spec(id="a"))
        s.lease("default", W1)
        s.complete("a", W1, None)
        end = time.monotonic() + 5
        while raw.exists(s._tk("a")) and time.monotonic() < end:
            time.sleep(0.05)  # a bounded wait for Redis's own expiry
        assert s.get("a") is None
        assert s.stats()[TaskStatus.DONE] == 0  # the index entry is swept by stats


class TestIdempotentRetries:
    """A write whose reply was lost is retried with the same op id and not applied twice."""

    def test_complete(self, rstore: RedisStore) -> None:
        """The same op completes once and answers the same; a new op is refused."""
        rstore.create(spec(id="a"), now=T0)
        rstore.lease("default", W1, now=T0)

        def args(op: str) -> list[str]:
            named = SPECS["complete"].argv(worker=W1, now_s=repr(T0), op=op, ttl_ms="", cutoff_s="")
            return [*named, "a", "1"]

        assert rstore._eval("complete", args("op-1"))[0]
        assert rstore._eval("complete", args("op-1"))[0]
        assert rstore._eval("complete", args("op-2"))[0] == 0
        t = rstore.get("a")
        assert t is not None and len(t.history) == 1

    def test_delete_and_make_due(self, rstore: RedisStore) -> None:
        """A replayed delete or make_due answers yes again (its first run did it); a new op
        finds nothing to do."""
        rstore.create_many([spec(id="d"), spec(id="m", delay=60)], now=T0)
        delete = SPECS["delete"].argv(id="d", op="op-d")
        assert rstore._eval("delete", delete) == 1
        assert rstore._eval("delete", delete) == 1
        assert rstore._eval("delete", SPECS["delete"].argv(id="d", op="op-e")) == 0
        due = SPECS["make_due"].argv(id="m", now_s=repr(T0 + 1), op="op-m")
        assert rstore._eval("make_due", due)[0] == "ok"
        assert rstore._eval("make_due", due)[0] == "ok"
        other = SPECS["make_due"].argv(id="m", now_s=repr(T0 + 1), op="op-n")
        assert rstore._eval("make_due", other) == ["no"]
        got = rstore.get("m")
        assert got is not None and got.due_at == T0 + 1 and rstore.get("d") is None

    @pytest.mark.parametrize("script", ["create", "create1"])
    def test_create(self, rstore: RedisStore, script: str) -> None:
        """A replayed create is recognised (no DuplicateTask), and nothing is stored twice
        (``create1`` is the one-task script of a single-call enqueue)."""
        first = rstore.create(spec(id="x"), now=T0)
        row = SPECS[script].record(
            id="x", queue="default", handler="h", params="{}", priority="0",
            rank_prefix="8000000000000000", max_retries="3",
            backoff='{"type":"constant","delay":5.0,"max_delay":null,"jitter":"none"}',
            due_s=repr(T0), timeout_s="", resources="", gated="0", traceparent="",
        )  # fmt: skip
        cop = rstore._io.client.hget(rstore._tk("x"), "cop")

        def args(op: str) -> list[str]:
            named = {"now_s": repr(T0), "if_exists": "error", "op": op, "n": "1"}
            return [*SPECS[script].argv(**{a: named[a] for a in SPECS[script].args}), *row]

        assert rstore._eval(script, args(cop)) == ["replay"]
        assert rstore._eval(script, args("other"))[0] == "dup"
        assert rstore.get("x") == first and sum(rstore.stats().values()) == 1

    def test_lease(self, rstore: RedisStore) -> None:
        """A replayed lease returns the tasks the first one took, and takes no more."""
        rstore.create_many([spec(id=f"t{i}") for i in range(4)], now=T0)
        head = SPECS["lease"].argv(
            now_s=repr(T0), expires_s=repr(T0 + 20), worker=W1, limit="2", capacity="",
            op="op-l", op_ttl_ms="20000", failed_ttl_ms="", failed_cutoff_s="", nq="1",
        )  # fmt: skip
        first = rstore._eval("lease", [*head, "default"])
        again = rstore._eval("lease", [*head, "default"])
        assert first == again and len(first) == 3
        assert rstore.stats()[TaskStatus.DOING] == 2


class TestAsyncClient:
    """Under asyncio the async API runs on a redis.asyncio client of the running loop."""

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @pytest.mark.anyio
    async def test_asyncio_needs_no_thread(
        self, rstore: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """create / create_many / get / cancel / stats never fall back to a worker thread."""

        async def no_thread(fn: Any) -> Any:
            raise AssertionError("the asyncio path ran the sync method in a thread")

        monkeypatch.setattr(store_base, "run_in_thread", no_thread)
        try:
            await rstore.create_async(spec(id="a"))
            await rstore.create_many_async([spec(id="b"), spec(id="c")])
            assert (await rstore.get_async("a")) == rstore.get("a")
            assert await rstore.cancel_async("c")
            assert (await rstore.stats_async())[TaskStatus.PENDING] == 2
            assert asyncio.get_running_loop() in rstore._io.aclients
        finally:
            await rstore.aclose()
        assert not rstore._io.aclients

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @pytest.mark.anyio
    async def test_replayed_create_reads_the_task(
        self, rstore: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A create whose op already ran (its reply was lost) reads the tasks back, in
        order, instead of reporting duplicates, and stores nothing twice (sync and async)."""
        monkeypatch.setattr(redis_scripts, "op_id", lambda: "op-replayed")
        first = rstore.create(spec(id="r"))
        batch = rstore.create_many([spec(id=f"b{i}") for i in range(3)])
        try:
            assert rstore.create(spec(id="r")) == first
            assert await rstore.create_async(spec(id="r")) == first
            assert await rstore.create_many_async([spec(id="r")]) == [first]
            again = [spec(id=f"b{i}") for i in range(3)]
            assert rstore.create_many(again) == batch
            assert await rstore.create_many_async(again) == batch
            assert sum(rstore.stats().values()) == 4
        finally:
            await rstore.aclose()

    def test_close_closes_the_async_clients(self, make_store: Any) -> None:
        """A sync close() closes the connections a (stopped) event loop left open."""
        s = make_store()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(s.create_async(spec(id="a")))
            client = s._io.aclients[loop]
            conns = [*client.connection_pool._available_connections]
            assert conns and all(c.is_connected for c in conns)
            s.close()
            assert not s._io.aclients and not any(c.is_connected for c in conns)
        finally:
            loop.close()


class TestCorrupt:
    def test_unreadable_task_is_dead_lettered_at_lease(self, rstore: RedisStore, raw: Any) -> None:
        """A task whose stored params are not JSON goes to FAILED naming the field; leasing goes on."""
        rstore.create_many([spec(id="bad"), spec(id="good")], now=T0)
        raw.hset(rstore._tk("bad"), "params", "{not json")
        got = rstore.lease("default", W1, limit=5, now=T0)
        assert [t.id for t in got] == ["good"]
        bad = rstore.get("bad")
        assert bad is not None and bad.status is TaskStatus.FAILED
        assert bad.last_error is not None and bad.last_error.type == "CorruptTask"
        assert "params" in bad.last_error.message


class TestWatch:
    def test_create_in_another_process_wakes_the_watcher(self, make_store: Any) -> None:
        """A create through another handle reaches watch() subscribers at once."""
        worker_side, producer = make_store(), make_store()
        woke = threading.Event()
        stop = worker_side.watch(["default"], woke.set)
        assert stop is not None
        try:
            woke.clear()
            producer.create(spec())
            assert woke.wait(5)
        finally:
            stop()

    def test_only_useful_wakeups(self, make_store: Any) -> None:
        """Delayed tasks wake only when they become the earliest; due ones when ready was empty."""
        watcher, producer = make_store(), make_store()
        hits: list[float] = []
        got = threading.Event()

        def wake() -> None:
            hits.append(time.monotonic())
            got.set()

        stop = watcher.watch(["q"], wake)
        assert stop is not None

        def wakes_after(**kw: Any) -> bool:
            got.clear()
            producer.create(spec(queue="q", **kw))
            # a wake-up arrives within a round trip; its absence needs a bounded wait
            return got.wait(0.5)

        try:
            assert wakes_after(delay=100)  # the first delayed task
            assert not wakes_after(delay=200)  # later than the earliest
            assert wakes_after(delay=50)  # the new earliest
            assert wakes_after()  # due now, nothing ready
            assert not wakes_after()  # due now, but one is already waiting
        finally:
            stop()

    def test_eviction_policy_warning(
        self, server_for_config: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A Redis that may evict keys (and so tasks) is reported when a worker starts watching."""
        s = RedisStore(server_for_config.url)
        try:
            s._command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
            with caplog.at_level(logging.WARNING, logger="resile.queue"):
                stop = s.watch(["default"], lambda: None)
            assert stop is not None
            stop()
            assert any("noeviction" in r.getMessage() for r in caplog.records)
        finally:
            s.close()

    def test_watch_stops(self, rstore: RedisStore) -> None:
        """The function watch returns stops the helper thread."""
        stop = rstore.watch(["default"], lambda: None)
        assert stop is not None
        (watcher,) = rstore._watchers
        stop()
        assert not watcher._thread.is_alive() and rstore._watchers == []


@pytest.fixture
def server_for_config(redis_server_factory: Any) -> Any:
    """A throwaway server of our own (its configuration may be changed)."""
    if not redis_server_factory.available:
        pytest.skip("needs a redis-server binary")
    return redis_server_factory()


class TestURL:
    def test_open_store_and_options(self, redis_url: str, namespace: str) -> None:
        """open_store reads namespace, retention and retry_for from the query."""
        sep = "&" if "?" in redis_url else "?"
        s = open_store(f"{redis_url}{sep}namespace={namespace}&retention=none&retry_for=2.5")
        try:
            assert isinstance(s, RedisStore)
            assert s.namespace == namespace and s.retention is None and s.retry_for == 2.5
        finally:
            s.close()

    def test_unknown_option(self) -> None:
        """A typo in the query fails naming the option."""
        with pytest.raises(ValueError, match="retension"):
            open_store("redis://127.0.0.1:1/0?retension=5")

    @pytest.mark.parametrize(
        "kw", [{"namespace": ""}, {"namespace": "a{b}"}, {"retention": -1}, {"retry_for": None}]
    )
    def test_bad_options(self, kw: dict[str, Any]) -> None:
        """Bad options fail naming the option."""
        with pytest.raises(ValueError, match=next(iter(kw))):
            RedisStore("redis://127.0.0.1:1/0", **kw)

    def test_password_is_not_shown(self) -> None:
        """The password in a URL never appears in the store's url or repr."""
        s = RedisStore("redis://user:s3cret@127.0.0.1:1/0")
        try:
            assert "s3cret" not in s.url and "s3cret" not in repr(s)
        finally:
            s.close()

    def test_closed_store(self, make_store: Any) -> None:
        """A closed store refuses calls; close is idempotent."""
        s = make_store()
        s.close()
        s.close()
        with pytest.raises(RuntimeError, match="closed"):
            s.get("x")


class TestReconnect:
    @pytest.fixture
    def server(self, redis_server_factory: Any) -> Any:
        if not redis_server_factory.available:
            pytest.skip("needs a redis-server binary to stop and start")
        return redis_server_factory()

    def test_call_during_an_outage_waits_for_redis(
        self, server: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A call made while Redis is down retries with backoff and succeeds when it is back;
        the outage is logged once, and the recovery once."""
        s = RedisStore(server.url, retry_for=20)
        try:
            s.create(spec(id="before"))
            server.kill()
            threading.Timer(1.5, server.start).start()
            with caplog.at_level(logging.WARNING, logger="resile.queue"):
                t0 = time.monotonic()
                s.create(spec(id="during"))
                waited = time.monotonic() - t0
            assert 1.0 < waited < 15
            assert s.get("during") is not None
            lines = [r.getMessage() for r in caplog.records if r.name == "resile.queue"]
            assert sum("unavailable" in m for m in lines) == 1, lines
            assert sum("reachable again" in m for m in lines) == 1, lines
        finally:
            s.close()

    @pytest.mark.parametrize("refusal", ["OOM", "MISCONF"])
    def test_refused_writes_wait_until_redis_accepts_them(
        self, server: Any, refusal: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Redis refusing writes (memory full under noeviction: OOM; a disk it cannot
        persist to: MISCONF) is waited out like an outage: the enqueue returns once
        Redis accepts writes again, the task stored once; logged once each way."""
        raw = redis.Redis.from_url(server.url)
        s = RedisStore(server.url, retry_for=60)
        try:
            s.create(spec(id="before"))

            def bgsave_status() -> str:
                wait_for(lambda: raw.info("persistence")["rdb_bgsave_in_progress"] == 0)
                return str(raw.info("persistence")["rdb_last_bgsave_status"])

            if refusal == "OOM":
                raw.config_set("maxmemory-policy", "noeviction")
                raw.config_set("maxmemory", 1)
            else:  # a snapshot that fails stops writes: its file's name is taken by a directory
                raw.config_set("save", "3600 1")
                blocker = server.dir / str(raw.config_get("dbfilename")["dbfilename"])
                (blocker / "in-the-way").mkdir(parents=True)
                raw.bgsave()
                assert bgsave_status() == "err"
            result: list[object] = []
            with caplog.at_level(logging.WARNING, logger="resile.queue"):
                producer = threading.Thread(target=lambda: result.append(s.create(spec(id="x"))))
                producer.start()
                wait_for(lambda: any("unavailable" in r.getMessage() for r in caplog.records))
                assert producer.is_alive() and s.get("x") is None
                if refusal == "OOM":
                    raw.config_set("maxmemory", 0)
                else:
                    shutil.rmtree(blocker)
                    raw.bgsave()
                    assert bgsave_status() == "ok"
                producer.join(30)
            assert not producer.is_alive() and len(result) == 1
            assert s.get("x") is not None and sum(s.stats().values()) == 2
            lines = [r.getMessage() for r in caplog.records if r.name == "resile.queue"]
            assert sum("unavailable" in m for m in lines) == 1, lines
            assert sum("reachable again" in m for m in lines) == 1, lines
        finally:
            raw.config_set("maxmemory", 0)
            raw.config_set("save", "")
            raw.close()
            s.close()

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @pytest.mark.anyio
    async def test_async_call_during_an_outage_waits_for_redis(
        self, server: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The asyncio client rides out an outage like the sync one, logged once each way."""
        s = RedisStore(server.url, retry_for=20)
        try:
            await s.create_async(spec(id="before"))
            server.kill()
            threading.Timer(1.5, server.start).start()
            with caplog.at_level(logging.WARNING, logger="resile.queue"):
                t0 = time.monotonic()
                await s.create_async(spec(id="during"))
                waited = time.monotonic() - t0
            assert 1.0 < waited < 15
            assert await s.get_async("during") is not None
            lines = [r.getMessage() for r in caplog.records if r.name == "resile.queue"]
            assert sum("unavailable" in m for m in lines) == 1, lines
            assert sum("reachable again" in m for m in lines) == 1, lines
        finally:
            await s.aclose()

    def test_no_retry_raises_at_once(self, server: Any) -> None:
        """retry_for=0 turns reconnecting off: StoreUnavailable is raised at once, naming the
        server; redis-py's connection error is its cause."""
        s = RedisStore(server.url, retry_for=0, connect_timeout=1)
        try:
            server.kill()
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}") as got:
                s.get("x")
            assert isinstance(got.value.__cause__, redis.exceptions.ConnectionError)
        finally:
            s.close()
            server.start()

    def test_watcher_resubscribes_and_wakes(self, server: Any) -> None:
        """After a restart the watcher subscribes again and wakes its worker once it has."""
        s, producer = RedisStore(server.url), RedisStore(server.url)
        woke = threading.Event()
        stop = s.watch(["default"], woke.set)
        assert stop is not None
        try:
            server.kill()
            woke.clear()
            server.start()
            assert woke.wait(10)  # the wake-up after resubscribing
            woke.clear()
            producer.create(spec())
            assert woke.wait(5)
        finally:
            stop()
            s.close()
            producer.close()


# -- the scripts' assembly: linker, named arguments, injected names ------------------------------

_LUA_DIR = Path(redis_scripts.__file__).parent / "lua"
# Names a script may use without defining them: Lua's and Redis' globals, the header's.
_LUA_GLOBALS = {
    "redis", "cjson", "cmsgpack", "bit", "string", "table", "math", "tonumber", "tostring",
    "type", "pairs", "ipairs", "unpack", "pcall", "error", "next", "select", "ARGV", "KEYS",
    "R", "REPLY", *redis_scripts._LIMITS,
}  # fmt: skip
_LUA_KEYWORDS = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}  # fmt: skip


def _lua_code(text: str) -> str:
    """``text`` without comments and string literals."""
    return redis_scripts._COMMENT.sub(" ", text)


def _undefined(text: str) -> set[str]:
    """Names an assembled script reads or calls that nothing in it defines (a nil at run time).

    Defined: ``local`` names, function parameters, ``for`` variables, table keys
    (``{k = ...}`` and ``t.k``) and the globals above.
    """
    code = _lua_code(text)
    defined = set(_LUA_GLOBALS)
    for m in re.finditer(r"\blocal\s+(?:function\s+)?([\w\s,]+?)\s*(?:=|\(|\n|$)", code):
        defined |= {n.strip() for n in m.group(1).split(",")}
    for m in re.finditer(r"\bfunction\s*\w*\s*\(([^)]*)\)", code):
        defined |= {n.strip() for n in m.group(1).split(",")}
    for m in re.finditer(r"\bfor\s+([\w\s,]+?)\s+(?:=|in\b)", code):
        defined |= {n.strip() for n in m.group(1).split(",")}
    used = set()
    for m in re.finditer(r"(?<![.\w])([A-Za-z_]\w*)\b(?!\s*=[^=])", code):
        used.add(m.group(1))
    return used - defined - _LUA_KEYWORDS


class TestLinker:
    """lib.lua's blocks are linked by their markers; a broken library fails loudly."""

    LIB = (
        "-- a comment for readers, dropped\n"
        "-- lib: a\n"
        "local function a(x)\n"
        "  local y = x\n\n"  # a blank line inside a function does not split its block
        "  return y\n"
        "end\n"
        "-- lib: b, c\n"
        "local b = {}\n"
        "local function c() return a(b) end\n"
        "-- lib: d\n"
        "-- not c: in a comment\n"
        "local function d() return 'c' end\n"
    )

    def test_blocks_used_directly_or_not(self) -> None:
        """A body gets the blocks it uses and the ones they use, whole, in library order."""
        linked = redis_scripts.link(self.LIB, "return c()")
        assert linked == (
            "-- lib: a\nlocal function a(x)\n  local y = x\n\n  return y\nend\n"
            "-- lib: b, c\nlocal b = {}\nlocal function c() return a(b) end\n"
        )
        assert redis_scripts.link(self.LIB, "return 1") == ""

    def test_comments_and_strings_are_not_uses(self) -> None:
        """A name in a comment or a string literal does not pull its block in."""
        assert redis_scripts.link(self.LIB, "-- c()\nreturn d()") == (
            "-- lib: d\n-- not c: in a comment\nlocal function d() return 'c' end\n"
        )

    @pytest.mark.parametrize(
        ("lib", "complaint"),
        [
            ("-- lib: a\nlocal function b() end\n", "defines ['b']"),
            ("-- lib: a, b\nlocal function a() end\n", "defines ['a']"),
            ("-- lib: a\nlocal function a() return b() end\n-- lib: b\nlocal b = 1\n", "after"),
            ("-- lib: a\nlocal a = 1\n-- lib: a\nlocal a = 2\n", "two blocks"),
        ],
    )
    def test_a_broken_library_is_refused(self, lib: str, complaint: str) -> None:
        """A marker that differs from what its block defines, a use of a later block, or a
        name marked twice: LinkError, not a script that fails at run time."""
        with pytest.raises(redis_scripts.LinkError, match=re.escape(complaint)):
            redis_scripts.link(lib, "return a")

    def test_the_real_library_links_into_every_script(self) -> None:
        """Every script assembles, and nothing it reads or calls is undefined."""
        for name in redis_scripts.SCRIPTS:
            text = redis_scripts.text(name)
            assert _undefined(text) == set(), name


class TestNamedArguments:
    """Each script's arguments are named once, in its Script spec."""

    def test_argv_in_spec_order(self) -> None:
        """argv puts the named values in ARGV order; a missing or unknown name is refused."""
        fail = SPECS["fail"]
        values = {name: f"v-{name}" for name in fail.args}
        assert fail.argv(**values) == [f"v-{n}" for n in fail.args]
        with pytest.raises(TypeError, match="missing arguments \\['op'\\]"):
            fail.argv(**{k: v for k, v in values.items() if k != "op"})
        with pytest.raises(TypeError, match="unknown \\['opp'\\]"):
            fail.argv(**{**values, "opp": "x"})
        with pytest.raises(TypeError, match="a record has the fields"):
            SPECS["lease"].record(id="x")

    @pytest.mark.parametrize("name", redis_scripts.SCRIPTS)
    def test_a_body_uses_exactly_its_arguments(self, name: str) -> None:
        """The A.<name> and G.<field> a body reads are its spec's, and it reads all of them."""
        spec_ = SPECS[name]
        body = _lua_code((_LUA_DIR / f"{spec_.body or name}.lua").read_text("utf-8"))
        assert set(re.findall(r"\bA\.(\w+)", body)) == set(spec_.args)
        assert set(re.findall(r"\bG\.(\w+)", body)) - {"SIZE"} <= set(spec_.group)

    def test_arguments_land_where_the_script_reads_them(self) -> None:
        """The assembled text reads A.<name> from its ARGV slot (ARGV[1] is the root)."""
        text = redis_scripts.text("release")
        assert "local id, now_s, op = ARGV[2], ARGV[4], ARGV[5]" in text
        assert "ARGV[3]" in text  # the worker


class TestInjectedNames:
    """States, fields, outcomes, indexes and key shapes come from Python."""

    def test_an_undefined_name_is_refused(self) -> None:
        """S., F., O., IX. or A. with a name its vocabulary does not define: LinkError."""
        names = redis_scripts._script_names(SPECS["fail"])
        for wrong in ("S.RUNNING", "F.statuz", "O.BOOM", "IX.todo", "A.nope"):
            with pytest.raises(redis_scripts.LinkError, match=re.escape(wrong)):
                redis_scripts.substitute(f"return {wrong}", names, "test.lua", 0)
        assert redis_scripts.substitute("return S.DOING, F.cop", names, "t", 0) == (
            "return 'DOING', 'cop'"
        )

    def test_scripts_spell_no_state_field_or_key_shape(self) -> None:
        """No Lua source quotes a state, a task field, an index or a key part (``':t:'``):
        each is injected (S.DOING, F.status, IX.ready, task_key(id) ...). The history
        entry's JSON keys are AttemptRecord's, not task fields."""
        names = redis_scripts.lua_names()
        vocab = {v.strip("'") for key in ("S", "F", "IX") for v in names[key].values()}
        spelled: dict[str, list[str]] = {}
        for path in sorted(_LUA_DIR.glob("*.lua")):
            code = re.sub(r"--[^\n]*", "", path.read_text("utf-8"))
            literals = [a or b for a, b in re.findall(r"'([^'\n]*)'|\"([^\"\n]*)\"", code)]
            hits = [x for x in literals if x in vocab or (":" in x and '"' not in x)]
            if hits:
                spelled[path.name] = hits
        assert spelled == {}
        # The checker sees a spelled one.
        assert "DOING" in vocab and "lease_owner" in vocab and "ready" in vocab

    def test_fields_are_the_task_field_list(self) -> None:
        """The hash fields the scripts may name are TaskField's (with Redis' bookkeeping)."""
        assert set(K.TASK_FIELDS) <= FIELDS and {"cop", "op", "hn", "rank", "gated"} <= set(
            K.TASK_FIELDS
        )
        for name in redis_scripts.SCRIPTS:
            used = set(re.findall(r"\bF\.(\w+)", redis_scripts.text(name)))
            assert used == set(), name  # all substituted

    def test_key_functions_match_python(self, rstore: RedisStore, raw: Any) -> None:
        """The keys the scripts build are the ones _keys formats for Python."""
        rstore.create(spec(id="k1", queue="q:x"), now=T0)
        root = rstore.root
        assert raw.exists(K.task_key(root, "k1"))
        assert raw.zscore(K.status_key(root, TaskStatus.PENDING, "q:x"), "k1") is not None
        assert raw.hget(K.queues_key(root), "q:x") == "1"
        assert raw.zcard(K.queue_key(root, "ready", "q:x")) == 1


# -- fail: one decision (resile.queue._transitions), applied by the script ----------------------

_POLICIES = st.one_of(
    st.floats(0.0, 100.0).map(lambda d: Constant(d).to_dict()),
    st.tuples(st.floats(0.01, 10.0), st.floats(1.0, 3.0), st.floats(1.0, 100.0)).map(
        lambda p: Exponential(p[0], multiplier=p[1], max_delay=p[0] + p[2], jitter="none").to_dict()
    ),
    st.sampled_from([{"type": "nope"}, "not json", ""]),
)


class TestFailDecision:
    """What fail stores is what _transitions.after_failure decides, for any task."""

    @settings(max_examples=60, deadline=None)
    @given(
        attempts=st.integers(1, 8),
        max_retries=st.integers(0, 6),
        policy=_POLICIES,
        last_delay=st.one_of(st.none(), st.floats(0.0, 50.0)),
        permanent=st.booleans(),
        delay=st.one_of(st.none(), st.floats(0.0, 30.0)),
        outcome=st.sampled_from([Outcome.ERROR, Outcome.TIMEOUT]),
        leased_here=st.booleans(),
    )
    def test_matches_the_python_decision(
        self,
        redis_url: str,
        attempts: int,
        max_retries: int,
        policy: Any,
        last_delay: float | None,
        permanent: bool,
        delay: float | None,
        outcome: Outcome,
        leased_here: bool,
    ) -> None:
        """Status, due time, stored delay, last error and history entry agree with the
        Python decision, whether fail decides from its own lease or reads the task first."""
        namespace = f"test-{uuid.uuid4().hex}"
        leaser = RedisStore(redis_url, namespace=namespace)
        failer = leaser if leased_here else RedisStore(redis_url, namespace=namespace)
        try:
            leaser.create(spec(id="t", max_retries=max_retries), now=T0)
            leaser.lease("default", W1, now=T0)
            stored = policy if isinstance(policy, str) else json.dumps(policy)
            fields = {"backoff": stored, "attempts": str(attempts)}
            fields["last_delay"] = "" if last_delay is None else repr(last_delay)
            leaser._io.client.hset(leaser._tk("t"), mapping=fields)
            error = TaskError("ValueError", "boom")
            now = T0 + 1.0
            after = failer.fail(
                "t", W1, error, permanent=permanent, outcome=outcome, delay=delay, now=now
            )
            expected = T.after_failure(
                attempts=attempts,
                max_retries=max_retries,
                backoff=stored or "null",
                last_delay=last_delay,
                error=error,
                base=now,
                permanent=permanent,
                delay=delay,
            )
            assert after is not None and after == leaser.get("t")
            assert after.status is expected.status
            assert after.last_error == expected.error
            assert after.history[-1].outcome is outcome
            assert after.history[-1].attempt == attempts
            if expected.dead:
                assert after.finished_at == now and after.lease_expires_at is None
            else:
                assert after.due_at == expected.due_at
                assert after.last_delay == expected.delay
        finally:
            if failer is not leaser:
                failer.close()
            leaser.close()
            drop_namespace(redis_url, namespace)


class TestFailRoundTrips:
    """fail decides from the lease it read; a changed lease is read again, then refused."""

    def _commands(self, s: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        sent: list[str] = []
        command = s._command

        def spy(*args: Any) -> Any:
            sent.append(str(args[0]))
            return command(*args)

        monkeypatch.setattr(s, "_command", spy)
        return sent

    def test_own_lease_one_round_trip(
        self, rstore: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task this store leased fails with the script alone (no read first)."""
        rstore.create(spec(id="a"), now=T0)
        rstore.lease("default", W1, now=T0)
        sent = self._commands(rstore, monkeypatch)
        after = rstore.fail("a", W1, RuntimeError("x"), now=T0 + 1)
        assert after is not None and after.status is TaskStatus.PENDING
        assert sent == []  # the script goes through _eval; no HMGET was sent

    def test_foreign_lease_is_read_first(
        self, make_store: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task another store leased is read (HMGET), then failed; not held: None."""
        one, two = make_store(), make_store()
        one.create(spec(id="a"), now=T0)
        one.lease("default", W1, now=T0)
        sent = self._commands(two, monkeypatch)
        assert two.fail("a", W2, RuntimeError("x"), now=T0 + 1) is None
        after = two.fail("a", W1, RuntimeError("x"), now=T0 + 1)
        assert after is not None and after.status is TaskStatus.PENDING
        assert sent == ["HMGET", "HMGET"]

    def test_changed_lease_is_decided_again(self, rstore: RedisStore, raw: Any) -> None:
        """When the lease changed after the lease read it, fail reads it and decides again."""
        rstore.create(spec(id="a", max_retries=1), now=T0)
        rstore.lease("default", W1, now=T0)
        raw.hset(rstore._tk("a"), "attempts", "2")  # now the last allowed attempt
        after = rstore.fail("a", W1, RuntimeError("x"), now=T0 + 1)
        assert after is not None and after.status is TaskStatus.FAILED

    def test_a_lease_that_keeps_changing_raises(
        self, rstore: RedisStore, raw: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Five stale replies in a row: StoreConflict, nothing written, the lease still held
        (not None, which says "you no longer hold it")."""
        rstore.create(spec(id="a"), now=T0)
        rstore.lease("default", W1, now=T0)
        evaluate = rstore._eval
        tries = []

        def bumped(name: str, args: Any) -> Any:
            if name == "fail":  # another writer changes the attempt between read and write
                tries.append(1)
                raw.hincrby(rstore._tk("a"), "attempts", 1)
            return evaluate(name, args)

        monkeypatch.setattr(rstore, "_eval", bumped)
        with pytest.raises(StoreConflict) as caught:
            rstore.fail("a", W1, RuntimeError("x"), now=T0 + 1)
        assert caught.value.task_id == "a" and caught.value.tries == len(tries) == 5
        task = rstore.get("a")
        assert task is not None and task.status is TaskStatus.DOING and task.history == ()
        assert isinstance(caught.value, ResileError)


class TestHeldChecks:
    """The scripts' own checks of who may change a task agree with _transitions' sets."""

    def test_status_and_owner_checks(self, rstore: RedisStore, raw: Any) -> None:
        """For each stored status and lease owner, each script accepts exactly when
        _transitions says the transition may leave that status (for that holder)."""
        cases = 0
        for status in TaskStatus:
            for owner in (W1, W2):
                for op in ("cancel", "requeue", "renew", "release", "fail", "complete", "edit"):
                    task_id = f"{op}-{status.value}-{owner}"
                    rstore.create(spec(id=task_id, queue=task_id), now=T0)
                    rstore.lease(task_id, owner, now=T0)
                    raw.hset(rstore._tk(task_id), "status", status.value)
                    at = T0 + 1
                    if op == "cancel":
                        got, want = rstore.cancel(task_id, now=at), T.can_cancel(status)
                    elif op == "requeue":
                        got = rstore.requeue(task_id, now=at) is not None
                        want = T.can_requeue(status)
                    elif op == "renew":
                        got = rstore.renew(task_id, W1, now=at)
                        want = T.is_held(status, owner, W1)
                    elif op == "release":
                        got = rstore.release(task_id, W1, now=at) is not None
                        want = T.is_held(status, owner, W1)
                    elif op == "fail":
                        got = rstore.fail(task_id, W1, RuntimeError("x"), now=at) is not None
                        want = T.is_held(status, owner, W1)
                    elif op == "complete":
                        got = rstore.complete(task_id, W1, now=at) is not None
                        want = T.is_held(status, owner, W1)
                    else:
                        got, want = rstore.progress(task_id, 5, now=at), T.can_edit(status)
                    assert got == want, (op, status, owner)
                    cases += 1
        assert cases == 5 * 2 * 7


class TestWorkerAndConflicts:
    """A worker treats StoreConflict as store trouble: it writes the outcome again later."""

    def test_the_outcome_is_written_again(
        self, make_store: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """fail raising StoreConflict once: logged, tried again, the task ends dead-lettered."""
        import resile

        store = make_store()
        queue = resile.connect(store)

        @queue.task(name="boom", max_retries=0)
        def boom() -> None:
            raise RuntimeError("boom")

        boom.enqueue()
        real, calls = store.fail, []

        def conflicted(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise StoreConflict("x", "fail", 5)
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "fail", conflicted)
        with caplog.at_level(logging.ERROR, logger="resile.queue"):
            resile.Worker(queue, concurrency=1).run(burst=True)
        assert len(calls) == 2
        assert "store error" in caplog.text
        (task,) = store.list()
        assert task.status is TaskStatus.FAILED
