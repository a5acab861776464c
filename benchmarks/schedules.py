"""Durable schedules: how late a tick starts, per store, and what 1,000 idle schedules cost.

(a) lateness: one ``Worker`` (threads) in this process serves a 1 s schedule
    (``@queue.periodic(every=1)``) for ``--seconds``; each run records
    ``time.time() - ctx.scheduled_for`` (tick start - fire time): p50, p99, max,
    per store. Stores: a SQLite file, a throwaway ``redis-server`` and, when their
    binaries are there, a throwaway PostgreSQL and MariaDB (``tests/_*_server.py``);
(b) idle cost: a worker on a SQLite file with no schedule, then with 1,000
    hourly schedules (none due during the run), each for ``--idle`` seconds
    after start-up: the process's CPU time / wall time, side by side.

Run: ``.venv/bin/python benchmarks/schedules.py [--seconds 20] [--idle 20] [--only sqlite,redis]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import _common as C

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import resile
from resile.queue.worker import Worker


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def lateness(url: str, seconds: float) -> list[float]:
    """Tick start - fire time of each run of a 1 s schedule served for ``seconds``."""
    q = resile.connect(url)
    late: list[float] = []

    @q.periodic(every=1, name=f"bench-{uuid.uuid4().hex[:8]}")
    def beat(ctx: resile.TaskContext) -> None:
        assert ctx.scheduled_for is not None
        late.append(time.time() - ctx.scheduled_for)

    w = Worker(q, concurrency=4)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    threading.Event().wait(seconds)
    w.stop()
    t.join(30)
    q.close()
    return late[1:]  # the first tick may fall inside the start-up


def idle_cpu(url: str, schedules: int, seconds: float) -> float:
    """CPU seconds per wall second of a worker holding ``schedules`` hourly schedules."""
    q = resile.connect(url)
    for i in range(schedules):
        q.periodic(every=3600, name=f"idle-{i:04d}")(lambda: None)
    w = Worker(q, concurrency=4)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    threading.Event().wait(3.0)  # start-up and reconcile are not idle time
    c0, t0 = _cpu(), time.monotonic()
    threading.Event().wait(seconds)
    c1, t1 = _cpu(), time.monotonic()
    w.stop()
    t.join(30)
    q.close()
    return (c1 - c0) / (t1 - t0)


def stores(only: list[str], scratch: Path) -> list[tuple[str, str, Callable[[], None]]]:
    """(name, URL, stop) of each store asked for that can be started here."""
    out: list[tuple[str, str, Callable[[], None]]] = []
    for name in only:
        if name == "sqlite":
            out.append(("SQLite", f"sqlite:///{scratch / 'sched.db'}", lambda: None))
        elif name == "redis":
            redis = C.RedisServer().start()
            out.append(("Redis", redis.url(), redis.stop))
        elif name in ("postgres", "mysql"):
            from queue_relational import start_server

            try:
                stop, make = start_server(name)
            except SystemExit as exc:
                print(f"{name}: skipped ({exc})", flush=True)
                continue
            out.append(("PostgreSQL" if name == "postgres" else "MariaDB", make(""), stop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="lateness run per store")
    parser.add_argument("--idle", type=float, default=20.0, help="idle-cost run per case")
    parser.add_argument("--only", default="sqlite,redis,postgres,mysql")
    args = parser.parse_args()
    print(f"durable schedules — {C.machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print("\n(a) tick start - fire time, 1 s schedule, one thread worker")
        print(f"{'store':<12} {'ticks':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, url, stop in stores([s for s in args.only.split(",") if s], Path(tmp)):
            try:
                late = lateness(url, args.seconds)
            finally:
                stop()
            ms = [x * 1000 for x in late]
            print(
                f"{name:<12} {len(ms):>6} {C.percentile(ms, 50):>8.1f} "
                f"{C.percentile(ms, 99):>8.1f} {max(ms):>8.1f}",
                flush=True,
            )
        print("\n(b) idle worker on a SQLite file: CPU time / wall time")
        for n in (0, 1000):
            url = f"sqlite:///{Path(tmp) / f'idle{n}.db'}"
            share = idle_cpu(url, n, args.idle)
            print(f"{n:>5} schedules: {share * 100:.2f} % of a core", flush=True)


if __name__ == "__main__":
    main()
