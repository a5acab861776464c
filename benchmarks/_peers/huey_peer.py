"""huey's runner (its own venv, ``.bench/venvs/huey``): ``SqliteHuey`` or ``RedisHuey``.

Store: ``$BENCH_URL``, ``sqlite:////path.db`` (SqliteHuey, huey's defaults: WAL)
or ``redis://...`` (RedisHuey, blocking pop). Workers: huey's own consumer,
``huey_consumer huey_peer.huey -k process -w P`` (scheduler interval 1 s, huey's default).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
from huey import RedisHuey, SqliteHuey

URL = os.environ.get(C.ENV_URL, "sqlite:////tmp/huey-bench.db")
if URL.startswith("sqlite"):
    # "?fsync=off" turns huey's fsync off (PRAGMA synchronous=OFF); huey's default leaves
    # SQLite's own default, synchronous=FULL (an fsync per commit).
    path, _, query = URL[len("sqlite:///") :].partition("?")
    fsync = False if query == "fsync=off" else None
    huey = SqliteHuey("bench", filename=path, fsync=fsync)
else:
    huey = RedisHuey("bench", url=URL)


@huey.task(name="noop")
def noop() -> None:
    C.mark_done()


@huey.task(retries=1, retry_delay=1, context=True, name="flaky")
def flaky(i: int, task=None) -> None:  # type: ignore[no-untyped-def]
    attempt = 1 if task.retries >= 1 else 2  # huey counts retries left down
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise RuntimeError("the first attempt fails")


@huey.task(retries=5, name="sleep2")
def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


# Process workers for CPU-bound no-ops (one per core); threads for the sleeping tasks.
WORKERS = {"e2e": ("process", None), "lateness": ("thread", 10), "kill": ("thread", 20)}


class HueyPeer(C.Peer):
    name = "huey"

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            noop()

    def enqueue_flaky(self, i: int) -> None:
        flaky(i)

    def fill_sleep(self, n: int) -> None:
        for i in range(n):
            sleep2(i)

    def _workers(self, kind: str, procs: int) -> tuple[str, int]:
        wtype, count = WORKERS[kind]
        return wtype, count if count is not None else procs

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        wtype, count = self._workers(kind, procs)
        consumer = str(Path(sys.executable).parent / "huey_consumer")
        return [sys.executable, consumer, "huey_peer.huey", "-k", wtype, "-w", str(count), "-q"]

    def settings(self, kind: str, procs: int) -> str:
        wtype, count = self._workers(kind, procs)
        return f"huey_consumer -k {wtype} -w {count}, defaults otherwise"

    def inspect(self, n: int) -> dict[str, int]:
        return {"stuck": huey.pending_count() + huey.scheduled_count()}


if __name__ == "__main__":
    # Enqueue through the module the consumer imports, so task names match ("huey_peer.noop").
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import huey_peer

    C.main(huey_peer.HueyPeer())
