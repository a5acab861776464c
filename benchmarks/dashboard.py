"""How fast the dashboard's pages answer over a store of a million tasks (SQLite or Redis).

    .venv/bin/python benchmarks/dashboard.py [--backend sqlite|redis] [--tasks 1000000]
                                             [--requests 40] [--db PATH]

The store looks like a busy one: 80 % DONE, 4 % FAILED (half of them
``ConnectionError``), 1 % CANCELED, the rest PENDING, over four queues.

* SQLite (kept at ``--db``, reused while it holds ``--tasks`` tasks): the tasks
  are created through ``Store.create_many`` in batches, then one SQL ``UPDATE``
  per state moves them to their state.
* Redis (a throwaway redis-server on a free loopback port, never 6379): the
  tasks are created through ``create_many`` (the PENDING ones due tomorrow),
  then leased 1,000 at a time and completed (``complete_many``), failed or
  canceled through the contract.

Then it serves the dashboard with uvicorn on a loopback port and times
sequential GETs of each page with ``refresh`` near zero, so every request
reads the store (the "cold" figures: what one read of a view costs); and the
overview and a filtered list again with the default ``refresh`` (the "shared"
figures: what a viewer pays while one read serves every viewer; a slow read
stays shared for ``SharedReads.DUTY`` times its duration). It prints p50 / p95 / max in ms and
the server process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn

from resile.metrics import QueueCollector
from resile.queue._names import TASKS_TABLE, TaskStatus
from resile.queue.store import Store, open_store
from resile.queue.store.sqlite import SQLiteStore
from resile.queue.task import TaskError, TaskSpec
from resile.web import create_app

QUEUES = ("mail", "images", "reports", "media")
HANDLERS = {"mail": "send_mail", "images": "resize", "reports": "render", "media": "encode"}


def _state(i: int) -> TaskStatus:
    """The state task number ``i`` ends in (the same split for both backends)."""
    r = i % 100
    if r < 80:
        return TaskStatus.DONE
    if r < 84:
        return TaskStatus.FAILED
    if r == 84:
        return TaskStatus.CANCELED
    return TaskStatus.PENDING


def build_redis(store: Store, n: int) -> None:
    """Fill a Redis store with ``n`` tasks through the contract."""
    started = time.perf_counter()
    batch = 20_000
    for start in range(0, n, batch):
        store.create_many(
            TaskSpec(
                HANDLERS[QUEUES[i % 4]],
                {"n": i, "to": f"user{i}@example.com"},
                id=f"t{i}",
                queue=QUEUES[i % 4],
                max_retries=0,
                delay=86_400.0 if _state(i) is TaskStatus.PENDING else 0.0,
            )
            for i in range(start, min(n, start + batch))
        )
    created = time.perf_counter() - started
    errors = [TaskError("ConnectionError", "refused"), TaskError("ValueError", "bad address")]
    for queue in QUEUES:
        while leased := store.lease(queue, "bench-worker", limit=1_000, lease_seconds=3600):
            done = []
            for task in leased:
                i = int(task.id[1:])
                state = _state(i)
                if state is TaskStatus.DONE:
                    done.append((task.id, 1))
                elif state is TaskStatus.FAILED:
                    store.fail(task.id, "bench-worker", errors[i % 2], permanent=True)
                else:
                    store.cancel(task.id)
            store.complete_many(done, "bench-worker")
    print(
        f"built a Redis store: {n:,} tasks in {created:.1f} s"
        f" + {time.perf_counter() - started - created:.1f} s of transitions"
    )


def build(path: Path, n: int) -> None:
    """Fill ``path`` with ``n`` tasks unless it already holds them."""
    if path.exists():
        with sqlite3.connect(path) as db:
            (have,) = db.execute(f"SELECT COUNT(*) FROM {TASKS_TABLE}").fetchone()
        if have == n:
            print(f"reusing {path} ({have:,} tasks)")
            return
        path.unlink()
    started = time.perf_counter()
    store = SQLiteStore(str(path))
    batch = 20_000
    try:
        for start in range(0, n, batch):
            store.create_many(
                TaskSpec(
                    HANDLERS[QUEUES[i % 4]],
                    {"n": i, "to": f"user{i}@example.com"},
                    queue=QUEUES[i % 4],
                )
                for i in range(start, min(n, start + batch))
            )
    finally:
        store.close()
    created = time.perf_counter() - started
    error = json.dumps({"type": "ConnectionError", "message": "refused", "traceback": ""})
    other = json.dumps({"type": "ValueError", "message": "bad address", "traceback": ""})
    now = time.time()
    with sqlite3.connect(path) as db:
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, attempts = 1, progress = 100,"
            " result = '1', finished_at = ?, updated_at = ? WHERE seq % 100 < 80",
            (TaskStatus.DONE.value, now, now),
        )
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, attempts = 4, last_error ="
            " CASE WHEN seq % 2 = 0 THEN ? ELSE ? END, finished_at = ?, updated_at = ?"
            " WHERE seq % 100 BETWEEN 80 AND 83",
            (TaskStatus.FAILED.value, error, other, now, now),
        )
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, finished_at = ?, updated_at = ?"
            " WHERE seq % 100 = 84",
            (TaskStatus.CANCELED.value, now, now),
        )
    print(
        f"built {path}: {n:,} tasks in {created:.1f} s + {time.perf_counter() - started - created:.1f} s of updates"
    )


class Server:
    """The dashboard app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: object) -> None:
        import socket

        self.sock = socket.socket()
        # Accepted sockets inherit it: without it, h11 writes headers and body apart and
        # the second write waits out the client's delayed ACK (~40 ms a response).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    """``n`` sequential GETs of ``path``; milliseconds each (a non-200 aborts)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
    return out


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(f"  {name:<58} p50 {statistics.median(ms):7.1f}  p95 {p95:7.1f}  max {ms[-1]:7.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--db", type=Path, default=Path("/tmp/resile-bench/dashboard.db"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.backend == "sqlite":
            args.db.parent.mkdir(parents=True, exist_ok=True)
            build(args.db, args.tasks)
            opened = time.perf_counter()
            store: Store = SQLiteStore(str(args.db))
            # A file made before the counts table is counted once here (the migration).
            print(f"opened {args.db} in {time.perf_counter() - opened:.2f} s")
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from _common import RedisServer

            server = RedisServer().start()
            stack.callback(server.stop)
            store = open_store(server.url())
            build_redis(store, args.tasks)
            print(f"redis-server {server.version()}")
        stack.callback(store.close)
        measure(store, args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (store, dashboard and client): {rss:.0f} MB")
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    return 0


def measure(store: Store, args: argparse.Namespace) -> None:
    """Time each page over ``store``."""
    some = store.list(queue="mail", status=TaskStatus.FAILED, limit=1)[0]
    page = store.list(queue="mail", limit=60)
    cursor = page[-1].sequence
    pages = {
        "overview /": "/",
        "tasks, no filter": "/tasks",
        "tasks, page 2 (cursor)": f"/tasks?cursor={cursor}",
        "tasks ?queue=mail&status=FAILED": "/tasks?queue=mail&status=FAILED",
        "tasks ?status=FAILED (every queue)": "/tasks?status=FAILED",
        "tasks ?queue=mail&status=FAILED&error=ConnectionError": (
            "/tasks?queue=mail&status=FAILED&error=ConnectionError"
        ),
        "tasks ?task=send_mail (scan, budget 1,000 rows)": "/tasks?task=send_mail",
        "task page /tasks/{id}": f"/tasks/{some.id}",
        "workers": "/workers",
    }
    print(f"\n{args.backend}: {args.tasks:,} tasks; {args.requests} sequential GETs a page; ms")
    print(" cold (refresh=0.001 s: every request reads the store)")
    cold = create_app(store, refresh=0.001)
    cold.state.dashboard.reads.DUTY = 0.0  # no slow-read stretch: every request reads
    with Server(cold) as url, httpx.Client(base_url=url) as c:
        for name, path in pages.items():
            timed(c, path, 2)  # warm the page cache of SQLite and the templates
            report(name, timed(c, path, args.requests))
    print(" the store's counts and the resile_queue_tasks collector (no HTTP)")
    collector = QueueCollector(store, ttl=0.0)
    for name, fn in (
        ("Store.counts()", getattr(store, "counts", None)),
        (
            "{q: Store.stats(q) for q in Store.queues()}",
            lambda: {q: store.stats(q) for q in store.queues()},
        ),
        ("QueueCollector.collect() (resile_queue_tasks, oldest due age)", collector.collect),
    ):
        if fn is None:  # a tree from before Store.counts
            continue
        fn()
        report(name, [_ms(fn) for _ in range(args.requests)])
    print(" shared (default refresh=0.75 s: the answer one read gave serves every viewer)")
    with Server(create_app(store)) as url, httpx.Client(base_url=url) as c:
        for name in ("overview /", "tasks ?queue=mail&status=FAILED"):
            timed(c, pages[name], 2)
            report(name, timed(c, pages[name], args.requests))


if __name__ == "__main__":
    raise SystemExit(main())
