"""RQ's runner (its own venv, ``.bench/venvs/rq``).

Workers: ``rq worker`` processes (RQ's default ``Worker``: a forked work horse
per job), one of them ``--with-scheduler`` (it moves due retries back to the
queue). Retries: ``Retry(max=1, interval=1)``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
from redis import Redis
from rq import Queue, Retry, get_current_job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

URL = os.environ.get(C.ENV_URL, "redis://127.0.0.1:6399/0")
QUEUE = "bench"


def noop() -> None:
    C.mark_done()


def flaky(i: int) -> None:
    job = get_current_job()
    attempt = 1 if job is not None and job.retries_left else 2  # retries left: 1, then 0
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise RuntimeError("the first attempt fails")


def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


PROCS = {"lateness": 2, "kill": 20}


class RQPeer(C.Peer):
    name = "rq"

    def __init__(self) -> None:
        self.conn = Redis.from_url(URL)
        self.q = Queue(QUEUE, connection=self.conn)

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            self.q.enqueue(noop)

    def enqueue_noop_many(self, n: int) -> bool:
        for start in range(0, n, 1000):
            jobs = [Queue.prepare_data(noop) for _ in range(min(1000, n - start))]
            self.q.enqueue_many(jobs)
        return True

    def enqueue_flaky(self, i: int) -> None:
        self.q.enqueue(flaky, i, retry=Retry(max=1, interval=1))

    def fill_sleep(self, n: int) -> None:
        for i in range(n):
            self.q.enqueue(sleep2, i, retry=Retry(max=3, interval=1))

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        count = PROCS.get(kind, procs)
        rq = shlex.quote(str(Path(sys.executable).parent / "rq"))
        one = f"{rq} worker -q -u {shlex.quote(URL)} {QUEUE}"
        cmds = [one + " --with-scheduler"] + [one] * (count - 1)
        return ["sh", "-c", " & ".join(cmds) + " & wait"]

    def settings(self, kind: str, procs: int) -> str:
        return f"{PROCS.get(kind, procs)} × `rq worker` (fork per job), one --with-scheduler"

    def inspect(self, n: int) -> dict[str, int]:
        started = StartedJobRegistry(QUEUE, connection=self.conn).count
        scheduled = ScheduledJobRegistry(QUEUE, connection=self.conn).count
        return {"stuck": len(self.q) + started + scheduled}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rq_peer

    C.main(rq_peer.RQPeer())
