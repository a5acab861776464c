"""Dramatiq's runner (its own venv, ``.bench/venvs/dramatiq``): ``RedisBroker``.

Workers: Dramatiq's CLI, ``dramatiq dramatiq_peer --processes P --threads T``
(its defaults: one process per core, 8 threads). Retries: the handler raises
``dramatiq.Retry(delay=1000)`` (an exact 1 s; the middleware's own backoff is
jittered).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

URL = os.environ.get(C.ENV_URL, "redis://127.0.0.1:6399/0")
broker = RedisBroker(url=URL)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop() -> None:
    C.mark_done()


@dramatiq.actor(queue_name="bench", max_retries=1)
def flaky(i: int) -> None:
    msg = CurrentMessage.get_current_message()
    attempt = 1 + int(msg.options.get("retries", 0)) if msg is not None else 1
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise dramatiq.Retry("the first attempt fails", delay=1000)


@dramatiq.actor(queue_name="bench", max_retries=3, time_limit=60_000)
def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


THREADS = {"e2e": 8, "lateness": 8, "kill": 20}


class DramatiqPeer(C.Peer):
    name = "dramatiq"

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            noop.send()

    def enqueue_flaky(self, i: int) -> None:
        flaky.send(i)

    def fill_sleep(self, n: int) -> None:
        for i in range(n):
            sleep2.send(i)

    def _procs(self, kind: str, procs: int) -> int:
        return procs if kind == "e2e" else 1

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        exe = str(Path(sys.executable).parent / "dramatiq")
        return [exe, "dramatiq_peer", "--processes", str(self._procs(kind, procs)),
                "--threads", str(THREADS[kind]), "--queues", "bench"]  # fmt: skip

    def settings(self, kind: str, procs: int) -> str:
        return f"dramatiq --processes {self._procs(kind, procs)} --threads {THREADS[kind]}"

    def inspect(self, n: int) -> dict[str, int]:
        c = broker.client
        queued = c.llen("dramatiq:bench") + c.llen("dramatiq:bench.DQ")
        acks = sum(c.scard(k) for k in c.scan_iter("dramatiq:__acks__.*"))
        return {"stuck": queued + acks}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dramatiq_peer

    C.main(dramatiq_peer.DramatiqPeer())
