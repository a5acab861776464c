"""What the overview's counter reads cost once the counters carry run time and lateness buckets.

    .venv/bin/python benchmarks/timings_read.py [--queues 4] [--keys 15] [--rounds 21]

Fills a fresh SQLite store's counters as 24 h of traffic would leave them: each minute
of each queue has ``--keys`` counters (``done:<run>``, ``retried:<run>:<late>`` ...: the
distinct buckets a minute saw; 3 is what a store without the buckets writes), then times
``tallies`` over the day and ``timings`` over the hour and the day, as the overview reads
them (median ms of ``--rounds``). ``--keys 3`` gives the plain counters' cost for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from resile.queue._names import TALLIES_TABLE
from resile.queue.store.sqlite import SQLiteStore


def keys(n: int) -> list[str]:
    out = ["done", "retried", "dead"]
    if n <= 3:
        return out[:n]
    extra = [f"done:{b}" for b in range(6, 14)] + [f"retried:{b}:{b}" for b in range(6, 14)]
    return (extra + [f"dead:{b}" for b in range(6, 14)])[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--keys", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "t.db"))
        try:
            first = int(now // 60) - 24 * 60 + 1
            rows = [
                (f"q{q}", m, k, 7)
                for q in range(args.queues)
                for m in range(first, first + 24 * 60)
                for k in keys(args.keys)
            ]
            insert = f"INSERT INTO {TALLIES_TABLE} VALUES (?, ?, ?, ?)"
            store._write(lambda c: c.executemany(insert, rows))
            reads = {
                "tallies, 24 h": lambda: store.tallies(since=now - 86_400 + 1),
                "timings, 1 h": lambda: store.timings(since=now - 3_600 + 1),
                "timings, 24 h": lambda: store.timings(since=now - 86_400 + 1),
            }
            took: dict[str, list[float]] = {name: [] for name in reads}
            for _ in range(args.rounds):
                for name, read in reads.items():
                    t0 = time.perf_counter()
                    read()
                    took[name].append((time.perf_counter() - t0) * 1e3)
        finally:
            store.close()
    print(f"{len(rows):,} counter rows ({args.queues} queues x 1,440 minutes x {args.keys} keys)")
    for name, ms in took.items():
        print(f"  {name}: {statistics.median(ms):.1f} ms (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
