"""Bulk enqueue on PostgreSQL: ``enqueue_many`` of 5,000 no-op tasks, this tree against another.

One throwaway cluster (``tests/_postgres_server.py``); each measurement is a
fresh process with ``PYTHONPATH=<tree>/src`` and a schema of its own, the best
of 3 calls after a warm-up; the trees take turns, round after round, so that
both see the same machine load.

Run: ``.venv/bin/python benchmarks/postgres_bulk_enqueue.py --compare /path/to/other/tree``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _postgres_server import PostgresServer, find_pg_bindir

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, uuid
import resile
q = resile.connect(sys.argv[1] + "?schema=b" + uuid.uuid4().hex[:10])
@q.task(name="noop", max_retries=0)
def noop() -> None: ...
n = int(sys.argv[2])
noop.enqueue_many([{}] * 100)
rates = []
for _ in range(3):
    t = time.perf_counter()
    noop.enqueue_many([{}] * n)
    rates.append(n / (time.perf_counter() - t))
print(max(rates))
q.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, help="another tree (its src/) to run alternately")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (initdb, pg_ctl)")
    trees = {"this": ROOT / "src"}
    if args.compare:
        trees = {"compare": args.compare / "src", **trees}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    server = PostgresServer(bindir).start()
    try:
        for r in range(args.rounds):
            for name, src in trees.items():
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, server.url, str(args.n)],
                    env=dict(os.environ, PYTHONPATH=str(src)),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode:
                    sys.exit(out.stderr[-2000:])
                rates[name].append(float(out.stdout.strip()))
                print(f"round {r + 1} {name:8} {rates[name][-1]:>9,.0f} tasks/s", flush=True)
    finally:
        server.stop()
    for name, values in rates.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:8} median {statistics.median(values):,.0f} tasks/s ({runs})")


if __name__ == "__main__":
    main()
