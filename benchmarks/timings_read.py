"""What the overview's counter reads cost once the counters carry run time and lateness buckets.

    .venv/bin/python benchmarks/timings_read.py [--queues 4] [--keys 15] [--rounds 21] [--redis]

Fills a fresh SQLite store's counters as 24 h of traffic would leave them: each minute
of each queue has ``--keys`` counters (``done:<run>``, ``retried:<run>:<late>`` ...: the
distinct buckets a minute saw; 3 is what a store without the buckets writes), then times
``tallies`` over the day and ``timings`` over the hour and the day, as the overview reads
them (median ms of ``--rounds``). ``--keys 3`` gives the plain counters' cost for comparison.
``--redis``: the same counters in a throwaway redis-server (``_common.RedisServer``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RedisServer

from resile.queue._names import TALLIES_TABLE
from resile.queue.store import Store
from resile.queue.store.redis import _keys as K
from resile.queue.store.sqlite import SQLiteStore


def keys(n: int) -> list[str]:
    out = ["done", "retried", "dead"]
    if n <= 3:
        return out[:n]
    extra = [f"done:{b}" for b in range(6, 14)] + [f"retried:{b}:{b}" for b in range(6, 14)]
    return (extra + [f"dead:{b}" for b in range(6, 14)])[:n]


def fill_sqlite(store: SQLiteStore, rows: list[tuple[str, int, str, int]]) -> None:
    insert = f"INSERT INTO {TALLIES_TABLE} VALUES (?, ?, ?, ?)"
    store._write(lambda c: c.executemany(insert, rows))


def fill_redis(url: str, root: str, rows: list[tuple[str, int, str, int]]) -> None:
    """The scripts' layout: outcomes in a hash per queue and hour ("<minute>/<tally>"), the
    buckets per minute in another ("<minute>/<counter>") and per hour in one a day."""
    import redis

    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for q in {r[0] for r in rows}:
        pipe.hset(K.queues_key(root), q, 1)
    for q, minute, key, n in rows:
        tally, _, buckets = key.partition(":")
        pipe.hincrby(K.tally_key(root, minute // 60, q), f"{minute}/{tally}", n)
        if buckets:
            pipe.hincrby(K.timing_key(root, minute // 60, q), f"{minute}/{key}", n)
            hour = minute // 60
            pipe.hincrby(K.timing_hours_key(root, hour // 24, q), f"{hour}/{key}", n)
    pipe.execute()
    client.close()


def measure(store: Store, now: float, rounds: int) -> dict[str, float]:
    reads: dict[str, Callable[[], object]] = {
        "tallies, 24 h": lambda: store.tallies(since=now - 86_400 + 1),
        "timings, 1 h": lambda: store.timings(since=now - 3_600 + 1),
        "timings, 24 h": lambda: store.timings(since=now - 86_400 + 1),
    }
    took: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(rounds):
        for name, read in reads.items():
            t0 = time.perf_counter()
            read()
            took[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ms) for name, ms in took.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--keys", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--redis", action="store_true", help="a throwaway redis-server")
    args = parser.parse_args()
    now = time.time()
    first = int(now // 60) - 24 * 60 + 1
    rows = [
        (f"q{q}", m, k, 7)
        for q in range(args.queues)
        for m in range(first, first + 24 * 60)
        for k in keys(args.keys)
    ]
    if args.redis:
        from resile.queue.store.redis import RedisStore

        with RedisServer() as server:
            redis_store = RedisStore.from_url(server.url())
            try:
                fill_redis(server.url(), redis_store.root, rows)
                got = measure(redis_store, now, args.rounds)
            finally:
                redis_store.close()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(str(Path(tmp) / "t.db"))
            try:
                fill_sqlite(store, rows)
                got = measure(store, now, args.rounds)
            finally:
                store.close()
    where = "redis" if args.redis else "sqlite"
    print(f"{where}: {len(rows):,} counters ({args.queues} queues x 1,440 minutes x {args.keys})")
    for name, ms in got.items():
        print(f"  {name}: {ms:.1f} ms (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
