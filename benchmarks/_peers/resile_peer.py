"""resile's runner (project ``.venv``): ``@queue.task`` handlers, ``enqueue``, ``Worker``.

Store: ``$BENCH_URL`` (``sqlite:////tmp/...db`` or ``redis://127.0.0.1:PORT/DB``).
Workers: ``resile_peer.py worker P C MODE`` starts P worker processes, each
``resile.Worker(queue, concurrency=C, mode=MODE).run()``: thread mode, but on
PostgreSQL the no-op task is an ``async def`` run by the async mode, 100 at once,
as pgqueuer (the peer there) runs its ``async def`` handlers, uncapped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C

import resile

URL = os.environ.get(C.ENV_URL, "sqlite:///:memory:")
queue = resile.connect(URL)
# The no-op task's form and worker: as the peers of this store run theirs.
ASYNC_NOOP = URL.startswith(("postgresql:", "postgres:"))

if ASYNC_NOOP:

    @queue.task(name="noop", max_retries=0)
    async def noop() -> None:
        C.mark_done()

else:

    @queue.task(name="noop", max_retries=0)
    def noop() -> None:
        C.mark_done()


@queue.task(name="flaky", backoff=resile.Constant(1.0), max_retries=1)
def flaky(i: int, ctx: resile.TaskContext) -> None:
    C.mark_event("S", i, ctx.attempt)
    if ctx.attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise RuntimeError("the first attempt fails")


@queue.task(name="sleep2", max_retries=5)
def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


CONCURRENCY = {"e2e": 100 if ASYNC_NOOP else 10, "lateness": 10, "kill": 20}


def _mode(kind: str) -> str:
    return "async" if ASYNC_NOOP and kind == "e2e" else "thread"


class ResilePeer(C.Peer):
    name = "resile"

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            noop.enqueue()

    def enqueue_noop_many(self, n: int) -> bool:
        for start in range(0, n, 5000):
            noop.enqueue_many([{}] * min(5000, n - start))
        return True

    def enqueue_flaky(self, i: int) -> None:
        flaky.enqueue(i=i)

    def fill_sleep(self, n: int) -> None:
        sleep2.enqueue_many([{"i": i} for i in range(n)])

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        return [sys.executable, __file__, "worker", str(procs), str(CONCURRENCY[kind]), _mode(kind)]

    def settings(self, kind: str, procs: int) -> str:
        slots = "async tasks" if _mode(kind) == "async" else "threads"
        return f"{procs} worker process(es) × {CONCURRENCY[kind]} {slots}, defaults otherwise"

    def inspect(self, n: int) -> dict[str, int]:
        stats = queue.stats()
        return {"stuck": stats[resile.TaskStatus.PENDING] + stats[resile.TaskStatus.DOING]}


def _worker(procs: int, concurrency: int, mode: str) -> None:
    if procs > 1:  # one process per worker: the others are children in our process group
        kids = [
            subprocess.Popen([sys.executable, __file__, "worker", "1", str(concurrency), mode])
            for _ in range(procs - 1)
        ]
    else:
        kids = []
    resile.Worker(queue, concurrency=concurrency, mode=mode).run()  # type: ignore[arg-type]
    for k in kids:
        k.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "thread")
    else:
        C.main(ResilePeer())
