"""Does the Redis store slow down as the queue grows? 10,000 against 1,000,000 delayed tasks.

    .venv/bin/python benchmarks/redis_scale.py                # starts its own redis-server
    .venv/bin/python benchmarks/redis_scale.py --big 200000   # a quicker look
    .venv/bin/python benchmarks/redis_scale.py --url redis://127.0.0.1:6390/0   # a Redis of yours
                                                              # (it is FLUSHed: give it a spare db)

For each size the store is filled with that many tasks due in a day (loaded
with ``create_many`` in batches of 10,000), then the operations a queue does
all the time are timed, one call at a time, in rounds (median of the rounds):

* ``enqueue``: ``create`` of a task due now;
* ``enqueue delayed``: ``create`` of a task due in an hour (it lands *inside*
  the delayed set, not at its head);
* ``lease``: ``lease(limit=1)`` taking one due task, the million delayed ones
  sitting beside it;
* ``lease x100``: ``lease(limit=100)``, per task;
* ``complete``: ``complete`` of a leased task.

Two costs per operation: the wall time seen by the caller (round trip
included; noisy on a busy machine) and the Redis CPU time of the script
(``INFO commandstats``: what grows if a script's work grows with the queue).
The target (issue 4): the 1M cost within 1.5x of the 10k cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from _common import RedisServer, machine, table

import resile
from resile.queue import TaskSpec
from resile.queue.store.redis import RedisStore

LOAD_BATCH = 10_000
DAY = 86_400.0


def evalsha_usec(raw: Any) -> int:
    """Microseconds Redis spent in EVALSHA so far (the scripts' CPU time)."""
    return int(raw.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def measure(
    raw: Any, fn: Callable[[int], None], ops: int, rounds: int, per_call: int = 1
) -> tuple[float, float]:
    """Median over rounds of (wall µs, Redis script µs) per operation."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        u0 = evalsha_usec(raw)
        t0 = time.perf_counter()
        fn(ops)
        wall = time.perf_counter() - t0
        u1 = evalsha_usec(raw)
        n = ops * per_call
        walls.append(wall / n * 1e6)
        cpus.append((u1 - u0) / n)
    return statistics.median(walls), statistics.median(cpus)


def load(store: RedisStore, n: int) -> float:
    """Fill the queue with ``n`` tasks due in about a day; returns seconds taken."""
    t0 = time.perf_counter()
    now = time.time()
    done = 0
    while done < n:
        k = min(LOAD_BATCH, n - done)
        store.create_many(
            [
                TaskSpec("noop", {"i": done + i}, due_at=now + DAY + (done + i) * 0.001)
                for i in range(k)
            ],
            now=now,
        )
        done += k
    return time.perf_counter() - t0


def run_size(url: str, raw: Any, size: int, ops: int, rounds: int) -> dict[str, Any]:
    raw.flushdb()
    store = RedisStore(url, namespace="scale", retention=None)
    try:
        loaded = load(store, size)
        mem = int(raw.info("memory")["used_memory"])
        res: dict[str, Any] = {"size": size, "load_s": loaded, "memory_mb": mem / 1e6}

        def enqueue(n: int) -> None:
            for i in range(n):
                store.create(TaskSpec("noop", {"i": i}))

        def enqueue_delayed(n: int) -> None:
            for i in range(n):
                store.create(TaskSpec("noop", {"i": i}, delay=3600.0 + i * 0.01))

        res["enqueue"] = measure(raw, enqueue, ops, rounds)
        res["enqueue delayed"] = measure(raw, enqueue_delayed, ops, rounds)

        # Leases: the due tasks made above (rounds * ops of them) and more, one at a time.
        wid = f"bench-{uuid.uuid4().hex[:6]}"
        store.create_many([TaskSpec("noop", {"i": i}) for i in range(ops * rounds * 2)])
        leased: list[str] = []

        def lease_one(n: int) -> None:
            for _ in range(n):
                leased.extend(t.id for t in store.lease("default", wid, limit=1))

        res["lease"] = measure(raw, lease_one, ops, rounds)

        def complete(n: int) -> None:
            for _ in range(n):
                store.complete(leased.pop(), wid, None)

        res["complete"] = measure(raw, complete, ops, rounds)

        batch_calls = max(1, ops // 100)
        store.create_many([TaskSpec("noop", {"i": i}) for i in range(batch_calls * 100 * rounds)])

        def lease_batch(n: int) -> None:
            for _ in range(n):
                store.lease("default", wid, limit=100)

        res["lease x100"] = measure(raw, lease_batch, batch_calls, rounds, per_call=100)
        res["pending"] = store.stats()[resile.TaskStatus.PENDING]
        return res
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="a Redis to use (FLUSHed!); default: start a throwaway one")
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--ops", type=int, default=1_000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    server: RedisServer | None = None
    url = args.url
    if url is None:
        server = RedisServer().start()
        url = server.url()
    raw = redis.Redis.from_url(url, decode_responses=True)
    try:
        version = raw.info("server")["redis_version"]
        print(f"# Redis store at scale: {machine()}, Redis {version}", flush=True)
        results = []
        for size in (args.small, args.big):
            print(f"loading {size:,} delayed tasks ...", flush=True)
            r = run_size(url, raw, size, args.ops, args.rounds)
            print(
                f"  loaded in {r['load_s']:.1f} s ({size / r['load_s']:,.0f} tasks/s with "
                f"create_many), Redis memory {r['memory_mb']:,.0f} MB",
                flush=True,
            )
            results.append(r)
        small, big = results
        rows = []
        worst = 0.0
        for op in ("enqueue", "enqueue delayed", "lease", "lease x100", "complete"):
            (w_s, c_s), (w_b, c_b) = small[op], big[op]
            rows.append(
                [
                    op,
                    f"{w_s:.0f}",
                    f"{w_b:.0f}",
                    f"{w_b / w_s:.2f}x",
                    f"{c_s:.1f}",
                    f"{c_b:.1f}",
                    f"{c_b / c_s:.2f}x",
                ]
            )
            worst = max(worst, c_b / c_s)
        print()
        print(
            table(
                [
                    "operation",
                    f"wall µs @{small['size']:,}",
                    f"wall µs @{big['size']:,}",
                    "ratio",
                    f"Redis µs @{small['size']:,}",
                    f"Redis µs @{big['size']:,}",
                    "ratio",
                ],
                rows,
            )
        )
        verdict = "within" if worst <= 1.5 else "NOT within"
        print(f"\nworst Redis-time ratio {worst:.2f}x: {verdict} the 1.5x target")
        print(
            "command: .venv/bin/python benchmarks/redis_scale.py"
            + (f" --big {args.big}" if args.big != 1_000_000 else "")
        )
    finally:
        raw.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
