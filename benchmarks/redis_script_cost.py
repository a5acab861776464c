"""What the Redis store's lease + complete scripts cost redis-server per task, two trees alternated.

    .venv/bin/python benchmarks/redis_script_cost.py BEFORE_TREE [--tasks 5000] [--rounds 5]

A throwaway redis-server (``_common.RedisServer``); each run, in a child process with
that tree's ``src`` first on ``PYTHONPATH`` (this tree for "after"), creates
``--tasks`` tasks in a namespace of its own, resets the server's command statistics,
then leases them 100 at a time and completes each batch with ``complete_many``. It
prints the server's microseconds inside ``EVALSHA`` per task (``INFO commandstats``:
the scripts' own time, which the worker's CPU does not show) and the client's CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RedisServer

HERE = Path(__file__).resolve().parent.parent
CHILD = r"""
import sys, time, redis
from resile.queue.store.redis import RedisStore
from resile.queue.task import TaskSpec
url, ns, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = RedisStore.from_url(url + "?namespace=" + ns)
r = redis.Redis.from_url(url)
for start in range(0, n, 1000):
    s.create_many(TaskSpec("h", {"n": i}, queue="q") for i in range(start, min(n, start + 1000)))
r.config_resetstat()
t0 = time.process_time()
while leased := s.lease("q", "w", limit=100):
    s.complete_many([(t.id, None) for t in leased], "w")
cpu = time.process_time() - t0
st = r.info("commandstats")
usec = sum(v["usec"] for k, v in st.items() if k.startswith("cmdstat_eval"))
print(usec / n, cpu / n * 1e6)
s.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("before", type=Path, help="the other tree (its src is used)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = (("before", args.before.resolve() / "src"), ("after", HERE / "src"))
    with RedisServer() as srv:
        for i in range(args.rounds):
            for label, tree in trees:
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, srv.url(), f"{label}{i}", str(args.tasks)],
                    env={**os.environ, "PYTHONPATH": str(tree)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                server, client = (float(x) for x in done.stdout.split())
                print(
                    f"{label:6} redis-server in scripts {server:.1f} us/task,"
                    f" client CPU {client:.1f} us/task",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
