"""Where does the Redis store spend its time? Rates and Redis CPU per script.

    .venv/bin/python benchmarks/_profile_redis.py            # rates + INFO commandstats
    .venv/bin/python benchmarks/_profile_redis.py --cprofile enqueue   # Python profile of one op
    .venv/bin/python benchmarks/_profile_redis.py --threads 1,2,4,8     # enqueue from K threads
    .venv/bin/python benchmarks/_profile_redis.py --worker              # CPU per task, one Worker
    .venv/bin/python benchmarks/_profile_redis.py --async               # create_async: native vs thread
    .venv/bin/python benchmarks/_profile_redis.py --fail                # the failure path: fail()

Starts its own throwaway redis-server (``_common.RedisServer``). Measures, on one
thread: ``noop.enqueue()`` one call at a time, ``enqueue_many`` in chunks of 5,000,
and lease(limit=10) + complete_many of what was leased (the worker's store
calls, without the worker). Prints per-op wall µs and the Redis µs per script call.
``--threads`` measures single-call enqueue from K producer threads at once (each
thread has its own connection), resile only. ``--worker`` runs one ``Worker``
(10 threads, burst mode) over 20,000 queued no-op tasks and prints the CPU per
task of the worker process and of Redis. ``--async`` times ``create_async`` from
asyncio, one await at a time and 50 at once, on the store's own asyncio client
and through a worker thread (the base class's default). ``--fail`` times
lease + fail (retried) of one task at a time, the failure path of a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from _common import RedisServer

import resile
from resile.queue import TaskSpec
from resile.queue.store.base import Store

N = 5000


def cmdstats(raw: Any) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec) so far."""
    out = {}
    for name, d in raw.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(d["calls"]), int(d["usec"]))
    return out


def redis_cpu(raw: Any) -> float:
    """Seconds of CPU the server has used (user + system)."""
    info = raw.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str:
    parts = []
    for name, (calls, usec) in sorted(after.items()):
        c0, u0 = before.get(name, (0, 0))
        if calls - c0 > 0 and name in ("evalsha", "eval"):
            parts.append(f"{name}: {calls - c0} calls, {(usec - u0) / (calls - c0):.1f} µs/call")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cprofile", choices=["enqueue", "many", "work"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="", help="comma-separated thread counts, e.g. 1,2,4,8")
    ap.add_argument("--worker", action="store_true", help="CPU per task of one Worker")
    ap.add_argument("--async", dest="async_", action="store_true", help="native vs thread")
    ap.add_argument("--fail", action="store_true", help="the failure path")
    args = ap.parse_args()
    with RedisServer() as server:
        raw = redis.Redis.from_url(server.url(0))
        queue = resile.connect(server.url(0))

        @queue.task(name="noop", max_retries=0)
        def noop() -> None:
            pass

        def enqueue() -> None:
            for _ in range(N):
                noop.enqueue()

        def many() -> None:
            noop.enqueue_many([{}] * N)

        store = queue.store

        def work() -> None:
            left = N
            while left > 0:
                got = store.lease("default", "w1", limit=10)
                if not got:
                    break
                store.complete_many([(t.id, None) for t in got], "w1")
                left -= len(got)

        ops: dict[str, Callable[[], None]] = {"enqueue": enqueue, "many": many, "work": work}
        if args.worker:
            for _ in range(args.rounds):
                for _ in range(4):
                    many()  # 4 x N queued
                cpu0, redis0, t0 = time.process_time(), redis_cpu(raw), time.perf_counter()
                resile.Worker(queue, concurrency=10).run(burst=True)
                wall = time.perf_counter() - t0
                n = 4 * N
                print(
                    f"worker: {n / wall:9.0f} tasks/s; CPU per task: worker "
                    f"{(time.process_time() - cpu0) / n * 1e6:.0f} µs, Redis "
                    f"{(redis_cpu(raw) - redis0) / n * 1e6:.0f} µs"
                )
            return
        if args.async_:
            async_rates(store, args.rounds)
            return
        if args.fail:
            fail_rates(store, raw, args.rounds)
            return
        if args.threads:
            for k in (int(x) for x in args.threads.split(",")):
                rates = []
                for _ in range(args.rounds):
                    threads = [threading.Thread(target=enqueue) for _ in range(k)]
                    t0 = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    rates.append(k * N / (time.perf_counter() - t0))
                print(f"enqueue from {k} thread(s): {statistics.median(rates):9.0f} tasks/s")
            return
        if args.cprofile:
            if args.cprofile == "work":
                many()
            prof = cProfile.Profile()
            prof.runcall(ops[args.cprofile])
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
            return
        for name in ("enqueue", "many", "work"):
            rates = []
            for _ in range(args.rounds):
                if name == "work":
                    many()
                before = cmdstats(raw)
                t0 = time.perf_counter()
                ops[name]()
                dt = time.perf_counter() - t0
                rates.append(N / dt)
                info = delta(before, cmdstats(raw))
            med = statistics.median(rates)
            print(f"{name:8s} {med:9.0f} tasks/s  ({1e6 / med:6.1f} µs/task)  last: {info}")
        queue.close()


def async_rates(store: Any, rounds: int) -> None:
    """create_async per second: the store's asyncio client vs a thread per call."""
    spec = TaskSpec(handler="noop")

    async def native() -> None:
        await store.create_async(spec)

    async def thread() -> None:
        await Store.create_async(store, spec)

    async def run(one: Callable[[], Any], width: int) -> float:
        t0 = time.perf_counter()
        for _ in range(N // width):
            await asyncio.gather(*(one() for _ in range(width)))
        return N / (time.perf_counter() - t0)

    async def main_() -> None:
        for width in (1, 50):
            for name, one in (("native asyncio", native), ("thread offload", thread)):
                rates = [await run(one, width) for _ in range(rounds)]
                print(
                    f"create_async, {width:2d} at once, {name}: "
                    f"{statistics.median(rates):8.0f} calls/s"
                )

    asyncio.run(main_())


def fail_rates(store: Any, raw: Any, rounds: int) -> None:
    """lease + fail (the first failure: a retry, due later) of one task at a time, and the
    Redis commands each pair sent."""
    spec = TaskSpec(handler="noop", max_retries=3, backoff=resile.Constant(60.0).to_dict())
    for _ in range(rounds):
        store.create_many([spec] * N)
        before = cmdstats(raw)
        t0 = time.perf_counter()
        for _ in range(N):
            (task,) = store.lease("default", "w1")
            store.fail(task.id, "w1", RuntimeError("boom"))
        dt = time.perf_counter() - t0
        after = cmdstats(raw)
        sent = {k: (c - before.get(k, (0, 0))[0]) / N for k, (c, _) in after.items()}
        per = ", ".join(f"{k} {v:.2f}" for k, v in sorted(sent.items()) if v >= 0.01)
        print(f"lease + fail: {N / dt:8.0f} /s ({dt / N * 1e6:6.1f} µs per pair); per pair: {per}")


if __name__ == "__main__":
    main()
