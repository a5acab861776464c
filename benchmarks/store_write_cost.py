"""What a store's write path costs per task on SQLite: create, lease, complete (one process).

    .venv/bin/python benchmarks/store_write_cost.py [--tasks 20000] [--rounds 3]

Each round makes a fresh SQLite file, creates ``--tasks`` tasks with ``create_many``
(batches of 1,000), then leases them 100 at a time and completes each batch with
``complete_many``; it prints the CPU microseconds of this process per task for each
phase, the median of the rounds (CPU time moves less than wall time on a loaded
machine; the file's fsyncs are not in it). Run it with another tree's ``src`` first
on ``PYTHONPATH`` to compare two trees on one machine, alternating the runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from resile.queue.store.sqlite import SQLiteStore
from resile.queue.task import TaskSpec


def one_round(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "cost.db"))
        try:
            t0 = time.process_time()
            for start in range(0, n, 1000):
                store.create_many(
                    TaskSpec("h", {"n": i}, queue=f"q{i % 4}")
                    for i in range(start, min(n, start + 1000))
                )
            created = time.process_time() - t0
            t0 = time.process_time()
            queues = [f"q{i}" for i in range(4)]
            while leased := store.lease(queues, "w", limit=100):
                store.complete_many([(t.id, None) for t in leased], "w")
            ran = time.process_time() - t0
        finally:
            store.close()
    return created / n * 1e6, ran / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round(args.tasks) for _ in range(args.rounds)]
    create = statistics.median(r[0] for r in rounds)
    run = statistics.median(r[1] for r in rounds)
    print(f"create {create:.1f} us/task, lease+complete {run:.1f} us/task ({args.tasks:,} tasks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
