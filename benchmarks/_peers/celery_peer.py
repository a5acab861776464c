"""Celery's runner (its own venv, ``.bench/venvs/celery``): Redis as the broker, no result backend.

Workers: ``celery -A celery_peer worker -P prefork -c C`` with gossip,
mingle and worker heartbeats off; otherwise Celery's defaults (early acks,
prefetch multiplier 4). Retries: ``self.retry(countdown=1)`` (the ETA is
held in the worker's memory until due).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
from celery import Celery

URL = os.environ.get(C.ENV_URL, "redis://127.0.0.1:6399/0")
app = Celery("celery_peer", broker=URL)
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False


@app.task(name="noop")
def noop() -> None:
    C.mark_done()


@app.task(name="flaky", bind=True, max_retries=1)
def flaky(self, i: int) -> None:  # type: ignore[no-untyped-def]
    attempt = int(self.request.retries) + 1
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise self.retry(countdown=1)


@app.task(name="sleep2")
def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


CONCURRENCY = {"lateness": 2, "kill": 20}


class CeleryPeer(C.Peer):
    name = "celery"

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            noop.delay()

    def enqueue_flaky(self, i: int) -> None:
        flaky.delay(i)

    def fill_sleep(self, n: int) -> None:
        for i in range(n):
            sleep2.delay(i)

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        exe = str(Path(sys.executable).parent / "celery")
        c = CONCURRENCY.get(kind, procs)
        return [exe, "-A", "celery_peer", "worker", "-P", "prefork", "-c", str(c), "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip

    def settings(self, kind: str, procs: int) -> str:
        return (
            f"celery worker -P prefork -c {CONCURRENCY.get(kind, procs)} (early ack, prefetch ×4)"
        )

    def inspect(self, n: int) -> dict[str, int]:
        with app.connection_for_write() as conn:
            client = conn.default_channel.client
            return {"stuck": int(client.llen("celery")) + int(client.hlen("unacked"))}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import celery_peer

    C.main(celery_peer.CeleryPeer())
