"""How fast the dashboard's pages answer over a store of a million tasks, and its memory.

    .venv/bin/python benchmarks/dashboard.py [--backend sqlite|redis|postgres]
        [--tasks 1000000] [--requests 40] [--keep /tmp/resile-bench]

The store looks like a busy one: 80 % DONE, 4 % FAILED (half of each queue's
``ConnectionError``), 1 % CANCELED, the rest PENDING, over four queues; task
``i`` (sequence ``i + 1``) is in queue ``i % 4``. It is
built once and kept under ``--keep``; a later run that finds it whole reuses it
(building is the CPU-heavy part on a shared machine):

* SQLite (``KEEP/dashboard.db``): the tasks are created through
  ``Store.create_many`` in batches, then one SQL ``UPDATE`` per state moves them.
* Redis (a redis-server this script starts on a free loopback port, never
  6379, with its dump in ``KEEP/redis``): ``create_many`` (the PENDING ones due
  tomorrow), then leased 1,000 at a time and completed (``complete_many``),
  failed or canceled through the contract; saved to ``dump.rdb`` once built.
* PostgreSQL (a throwaway cluster, ``tests/_postgres_server.py``, its data in
  ``KEEP/postgres``, never 5432): ``create_many`` in batches, then one SQL
  statement per state moves the finished ones from the hot table into the
  finished one (``DELETE ... RETURNING`` into ``INSERT``), then ``VACUUM ANALYZE``.

The dashboard runs in a process of its own, so its peak RSS (``VmHWM`` of
``/proc/PID/status``) is the dashboard's alone:

* "cold": ``create_app(URL, refresh=0.001)`` with no slow-read stretch
  (``SharedReads.DUTY = 0``) served by uvicorn (this script with ``--serve``):
  every GET reads the store, so a figure is what one read of a view costs;
* "shared": ``python -m resile dashboard --db URL --port P``, the command an
  operator runs (default ``refresh``: one read serves every viewer).

Each page gets ``--requests`` sequential GETs (fewer when a page takes long:
at most ``--page-seconds`` of GETs, three at least). It prints p50 / p95 / max in
ms, then each dashboard process's peak and last RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from resile.metrics import QueueCollector
from resile.queue._names import TASKS_TABLE, TaskStatus
from resile.queue.store import Store, open_store
from resile.queue.store.sqlite import SQLiteStore
from resile.queue.task import TaskError, TaskSpec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import RedisServer, free_port, wait_for  # noqa: E402

from _process import end  # noqa: E402

QUEUES = ("mail", "images", "reports", "media")
# Finished tasks end SPACING seconds apart (by sequence), so times sort as in a real store.
SPACING = 0.0002
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
                    store.fail(task.id, "bench-worker", errors[i // 4 % 2], permanent=True)
                else:
                    store.cancel(task.id)
            store.complete_many(done, "bench-worker")
    print(
        f"built a Redis store: {n:,} tasks in {created:.1f} s"
        f" + {time.perf_counter() - started - created:.1f} s of transitions"
    )


# Per minute and queue, the attempts that write the overview's counters (fill_counters).
PER_MINUTE = 16
_FILLER_PRIORITY = -(2**62)  # leased before the store's own PENDING tasks


def fill_counters(store: Store, now: float) -> None:
    """A day of per-minute counters and timings up to ``now``, written by real transitions.

    For each minute of the last 24 h that counted nothing yet, and each queue,
    ``PER_MINUTE`` tasks are created, leased and ended through the contract with
    ``now=`` in that minute: run times spread log-uniformly over 1 ms ..
    10 s, a quarter fail once and are leased again 1 ms .. 2 s after their retry was
    due, then complete. That gives each minute and queue about as many distinct
    counters (outcome x run bucket x lateness bucket) as a busy queue writes. The tasks
    are deleted afterwards: the counters stay, the store's tasks are as built.
    """
    import random

    from resile.backoff import Constant

    rng = random.Random(11)
    day = now - 86_400.0
    have = store.tallies(since=day, until=now)
    first = int(day // 60 + 1) * 60
    missing = [float(m) for m in range(first, int(now // 60) * 60, 60) if m not in have]
    minutes = len(missing)
    if not minutes:
        print("the per-minute counters are up to date")
        return
    started = time.perf_counter()
    error = TaskError("ConnectionError", "refused")
    for t0 in missing:
        for queue in QUEUES:
            ids = [f"fill-{queue}-{int(t0)}-{i}" for i in range(PER_MINUTE)]
            store.create_many(
                [
                    TaskSpec(HANDLERS[queue], id=tid, queue=queue, max_retries=3,
                             backoff=Constant(1.0), priority=_FILLER_PRIORITY)
                    for tid in ids
                ],
                now=t0,
            )  # fmt: skip
            at = t0 + 0.5
            for k, task in enumerate(store.lease(queue, "filler", limit=PER_MINUTE, now=at)):
                end = at + 10 ** rng.uniform(-3, 1)
                if k % 4 == 0:
                    store.fail(task.id, "filler", error, now=end)
                    again = end + 1.0 + 10 ** rng.uniform(-3, 0.3)
                    for retry in store.lease(queue, "filler", limit=1, now=again):
                        store.complete(
                            retry.id, "filler", None, now=again + 10 ** rng.uniform(-3, 1)
                        )
                else:
                    store.complete(task.id, "filler", None, now=end)
            for tid in ids:
                store.delete(tid)
    print(
        f"wrote {minutes:,} minutes of counters ({minutes * len(QUEUES) * PER_MINUTE:,} tasks,"
        f" deleted after) in {time.perf_counter() - started:.1f} s"
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
    # Finished one after another, 0.2 ms apart, the last one now (not all at one instant).
    at = f"({time.time()} - ({n} - seq) * {SPACING})"
    with sqlite3.connect(path) as db:
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, attempts = 1, progress = 100,"
            f" result = '1', finished_at = {at}, updated_at = {at} WHERE seq % 100 < 80",
            (TaskStatus.DONE.value,),
        )
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, attempts = 4, last_error ="
            f" CASE WHEN (seq - 1) / 4 % 2 = 0 THEN ? ELSE ? END, finished_at = {at}, updated_at = {at}"
            " WHERE seq % 100 BETWEEN 80 AND 83",
            (TaskStatus.FAILED.value, error, other),
        )
        db.execute(
            f"UPDATE {TASKS_TABLE} SET status = ?, ready = 0, finished_at = {at}, updated_at = {at}"
            " WHERE seq % 100 = 84",
            (TaskStatus.CANCELED.value,),
        )
    print(
        f"built {path}: {n:,} tasks in {created:.1f} s + {time.perf_counter() - started - created:.1f} s of updates"
    )


def _total(store: Store) -> int:
    return sum(sum(by_status.values()) for by_status in store.counts().values())


# -- PostgreSQL ---------------------------------------------------------------------------------


def build_postgres(url: str, n: int) -> None:
    """Fill the PostgreSQL store at ``url`` with ``n`` tasks: ``create_many``, then SQL moves."""
    import psycopg

    hot, fin = "resile.resile_tasks", "resile.resile_finished"
    error = json.dumps({"type": "ConnectionError", "message": "refused", "traceback": ""})
    other = json.dumps({"type": "ValueError", "message": "bad address", "traceback": ""})
    at = f"(%(now)s - (%(n)s - seq) * {SPACING})"
    moves = (
        ("seq %% 100 < 80", {"status": "'DONE'", "attempts": "1", "progress": "100",
                            "result": "'1'"}),
        ("seq %% 100 BETWEEN 80 AND 83", {"status": "'FAILED'", "attempts": "4",
            "last_error": "CASE WHEN (seq - 1) / 4 %% 2 = 0 THEN %(error)s ELSE %(other)s END"}),
        ("seq %% 100 = 84", {"status": "'CANCELED'"}),
    )  # fmt: skip
    started = time.perf_counter()
    moving = 0.0
    store = open_store(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'resile' AND table_name = 'resile_tasks'"
                    " ORDER BY ordinal_position"
                ).fetchall()
            ]
            names = ", ".join(cols)
            now = time.time()
            batch = 20_000
            for start in range(0, n, batch):
                store.create_many(
                    TaskSpec(HANDLERS[QUEUES[i % 4]], {"n": i, "to": f"user{i}@example.com"},
                             queue=QUEUES[i % 4])
                    for i in range(start, min(n, start + batch))
                )  # fmt: skip
                # The finished ones of this batch move on now (the hot table stays the
                # size of a backlog, as under a steady load).
                t0 = time.perf_counter()
                for where, values in moves:
                    values = {**values, "finished_at": at, "updated_at": at}
                    exprs = ", ".join(values.get(c, c) for c in cols)
                    conn.execute(
                        f"WITH m AS (DELETE FROM {hot} WHERE {where} RETURNING *)"
                        f" INSERT INTO {fin} ({names}) SELECT {exprs} FROM m",
                        {"error": error, "other": other, "now": now, "n": n},
                    )
                moving += time.perf_counter() - t0
            t0 = time.perf_counter()
            conn.execute(f"VACUUM ANALYZE {hot}")
            conn.execute(f"VACUUM ANALYZE {fin}")
            moving += time.perf_counter() - t0
    finally:
        store.close()
    created = time.perf_counter() - started - moving
    print(
        f"built a PostgreSQL store: {n:,} tasks in {created:.1f} s"
        f" + {moving:.1f} s of moves and VACUUM ANALYZE"
    )


def kept_postgres(home: Path) -> tuple[object, bool]:
    """A throwaway cluster whose data stays in ``home`` (reused when there); whether it was."""
    from _postgres_server import PostgresServer, find_pg_bindir

    bindir = find_pg_bindir()
    if bindir is None:
        raise SystemExit("no initdb / pg_ctl found")

    class Kept(PostgresServer):
        def __init__(self) -> None:
            super().__init__(bindir)
            shutil.rmtree(self.dir, ignore_errors=True)
            home.mkdir(parents=True, exist_ok=True)
            self.dir, self.data, self.log = home, home / "data", home / "server.log"
            if self.run_as is not None:
                import pwd

                entry = pwd.getpwnam(self.run_as)
                os.chown(home, entry.pw_uid, entry.pw_gid)
            secret = home / "secret.json"
            self.reused = (self.data / "PG_VERSION").exists() and secret.exists()
            if self.reused:
                self.password = json.loads(secret.read_text())["password"]
                with (self.data / "postgresql.conf").open("a") as f:
                    f.write(f"port = {self.port}\n")  # a port free now (the last line wins)
                self._initialized = True
            else:
                shutil.rmtree(self.data, ignore_errors=True)
                secret.write_text(json.dumps({"password": self.password}))
                secret.chmod(0o600)

        def stop(self, *, remove: bool = False) -> None:
            super().stop(remove=False)

    server = Kept()
    return server.start(), server.reused


# -- Redis --------------------------------------------------------------------------------------


class KeptRedis(RedisServer):
    """A throwaway redis-server whose dump stays in ``home`` (loaded at start when there)."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        shutil.rmtree(self.dir, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        self.dir = home

    def save(self) -> None:
        """``SAVE`` the data set to ``dump.rdb`` in ``home`` (blocking; this server is ours)."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=600) as s:
            s.sendall(b"*1\r\n$4\r\nSAVE\r\n")
            if not s.recv(64).startswith(b"+OK"):
                raise RuntimeError("redis SAVE failed")

    def stop(self) -> None:
        proc, self.process = self.process, None
        end(proc, 30)


# -- the dashboard in a process of its own ------------------------------------------------------


def serve_cold(url: str, port: int) -> None:
    """``--serve``: the dashboard of ``url`` on ``127.0.0.1:port`` with every GET reading the store."""
    import uvicorn

    from resile.web import create_app
    from resile.web._serve import _socket

    app = create_app(url, refresh=0.001)
    app.state.dashboard.reads.DUTY = 0.0  # no slow-read stretch: every request reads
    sock = _socket("127.0.0.1", port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def _memory(pid: int) -> str:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return f"peak RSS (VmHWM) {fields['VmHWM']:.0f} MB, RSS now {fields['VmRSS']:.0f} MB"


@contextlib.contextmanager
def dashboard_process(cmd: list[str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """Run ``cmd`` (a dashboard on ``port``) until the block ends; yields (its URL, its pid)."""
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited ({proc.returncode}); see {log}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/workers", timeout=5).status_code == 200
        return False

    try:
        if not wait_for(up, 180.0, 0.1):
            raise RuntimeError(f"the dashboard did not answer within 180 s; see {log}")
        yield url, proc.pid
    finally:
        end(proc, 30)


def timed(client: httpx.Client, path: str, n: int, seconds: float) -> list[float]:
    """Up to ``n`` sequential GETs of ``path`` (at most ``seconds`` of them, three at least);
    milliseconds each (a non-200 aborts)."""
    out: list[float] = []
    end = time.perf_counter() + seconds
    while len(out) < n and (len(out) < 3 or time.perf_counter() < end):
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


def report(name: str, ms: list[float], requests: int) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    short = "" if len(ms) >= requests else f"  ({len(ms)} GETs)"
    print(
        f"  {name:<62} p50 {statistics.median(ms):7.1f}  p95 {p95:7.1f}  max {ms[-1]:7.1f}{short}",
        flush=True,
    )


SORTED = {
    "tasks ?queue=mail&status=DONE&sort=updated&order=desc": (
        "queue=mail&status=DONE&sort=updated&order=desc"
    ),
    "tasks ?queue=mail&status=PENDING&sort=due": "queue=mail&status=PENDING&sort=due",
    "tasks ?status=FAILED&sort=updated&order=desc": "status=FAILED&sort=updated&order=desc",
    "tasks ?sort=updated&order=desc (every task)": "sort=updated&order=desc",
}


def pages_of(client: httpx.Client) -> dict[str, str]:
    """The pages to time, with ids and cursors read through the JSON API."""
    some = client.get("/api/tasks?queue=mail&status=FAILED&limit=1").json()["tasks"][0]["id"]
    first = client.get("/api/tasks?queue=mail").json()["next"]
    pages = {
        "overview /": "/",
        "tasks, no filter": "/tasks",
        "tasks, page 2 (cursor)": f"/tasks?cursor={first}",
        "tasks ?queue=mail&status=FAILED": "/tasks?queue=mail&status=FAILED",
        "tasks ?status=FAILED (every queue)": "/tasks?status=FAILED",
        "tasks ?queue=mail&status=FAILED&error=ConnectionError": (
            "/tasks?queue=mail&status=FAILED&error=ConnectionError"
        ),
        "tasks ?task=send_mail (scan, budget 1,000 rows)": "/tasks?task=send_mail",
    }
    for name, query in SORTED.items():
        pages[name] = f"/tasks?{query}"
        if "every task" not in name:
            got = client.get(f"/api/tasks?{query}", timeout=600).json()["next"]
            pages["  page 2 (cursor)" + " " * len(name)] = f"/tasks?{query}&cursor={got}"
    pages["task page /tasks/{id}"] = f"/tasks/{some}"
    pages["workers"] = "/workers"
    return pages


def measure(url: str, store: Store, args: argparse.Namespace) -> None:
    """Time each page of a dashboard process over ``url``; then the counts without HTTP."""
    log = args.keep / f"dashboard-{args.backend}.log"
    print(
        f"\n{args.backend}: {args.tasks:,} tasks; up to {args.requests} sequential GETs a page; ms"
    )
    print(f" load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    print(" cold (refresh=0.001 s, DUTY=0: every request reads the store)")
    port = free_port()
    cold = [sys.executable, __file__, "--serve", url, "--port", str(port)]
    with (
        dashboard_process(cold, port, log) as (base, pid),
        httpx.Client(base_url=base, timeout=600) as c,
    ):
        pages = pages_of(c)
        for name, path in pages.items():
            timed(c, path, 2, 0)  # warm the page cache and the templates
            shown = name if not name.startswith("  page 2") else "  page 2 (cursor)"
            report(shown, timed(c, path, args.requests, args.page_seconds), args.requests)
        print(f" the cold dashboard process: {_memory(pid)}")
    print(f" load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(" the store's counts and the resile_queue_tasks collector (no HTTP, this process)")
    collector = QueueCollector(store, ttl=0.0)
    for name, fn in (
        ("Store.counts()", store.counts),
        ("QueueCollector.collect() (resile_queue_tasks, oldest due age)", collector.collect),
    ):
        fn()
        report(name, [_ms(fn) for _ in range(args.requests)], args.requests)
    print(" shared: python -m resile dashboard --db URL --port P (default refresh)")
    port = free_port()
    shared = [sys.executable, "-m", "resile", "dashboard", "--db", url, "--port", str(port)]
    with (
        dashboard_process(shared, port, log) as (base, pid),
        httpx.Client(base_url=base, timeout=600) as c,
    ):
        for name in ("overview /", "tasks ?queue=mail&status=FAILED"):
            timed(c, pages[name], 2, 0)
            report(name, timed(c, pages[name], args.requests, args.page_seconds), args.requests)
        print(f" the `resile dashboard` process: {_memory(pid)}")
    print(f" load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "redis", "postgres"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--page-seconds", type=float, default=20.0)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/resile-bench"))
    parser.add_argument("--build-only", action="store_true", help="build (or check) the store")
    parser.add_argument(
        "--counters",
        action="store_true",
        help="first write a day of per-minute counters and timings (fill_counters)",
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_cold(args.serve, args.port)
        return 0
    args.keep.mkdir(parents=True, exist_ok=True)
    args.keep.chmod(0o755)
    with contextlib.ExitStack() as stack:
        if args.backend == "sqlite":
            path = args.keep / "dashboard.db"
            build(path, args.tasks)
            url = f"sqlite:///{path}"
            opened = time.perf_counter()
            store: Store = SQLiteStore(str(path))
            # A file made before a migration is migrated once here.
            print(f"opened {path} in {time.perf_counter() - opened:.2f} s")
        elif args.backend == "redis":
            redis = KeptRedis(args.keep / "redis")
            redis.start(timeout=300.0)  # loading a dump of a million tasks
            stack.callback(redis.stop)
            url = redis.url()
            store = open_store(url)
            if _total(store) != args.tasks:
                redis.flush()
                build_redis(store, args.tasks)
                redis.save()
            else:
                print(f"reusing the Redis dump in {redis.dir} ({args.tasks:,} tasks)")
            print(f"redis-server {redis.version()}")
        else:
            pg, reused = kept_postgres(args.keep / "postgres")
            stack.callback(pg.stop)  # type: ignore[attr-defined]
            url = pg.url  # type: ignore[attr-defined]
            store = open_store(url)
            if not reused or _total(store) != args.tasks:
                store.close()
                import psycopg

                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA IF EXISTS resile CASCADE")
                build_postgres(url, args.tasks)
                store = open_store(url)
            else:
                print(f"reusing the PostgreSQL cluster in {pg.dir} ({args.tasks:,} tasks)")  # type: ignore[attr-defined]
        stack.callback(store.close)
        if args.counters:
            fill_counters(store, time.time())
        if not args.build_only:
            measure(url, store, args)
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
