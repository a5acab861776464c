"""arq's runner (its own venv, ``.bench/venvs/arq``).

Workers: ``arq arq_peer.WorkerSettings`` processes (arq's defaults:
``max_jobs=10``, ``poll_delay=0.5``). Retries: the handler raises
``arq.Retry(defer=1)``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
from arq import Retry, create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name

URL = os.environ.get(C.ENV_URL, "redis://127.0.0.1:6399/0")
SETTINGS = RedisSettings.from_dsn(URL)


async def noop(ctx: dict[str, Any]) -> None:
    C.mark_done()


async def flaky(ctx: dict[str, Any], i: int) -> None:
    attempt = int(ctx["job_try"])
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise Retry(defer=1)


async def sleep2(ctx: dict[str, Any], i: int) -> None:
    C.mark_event("S", i)
    await asyncio.sleep(2.0)
    C.mark_event("D", i)


class WorkerSettings:
    functions = [noop, flaky, sleep2]  # noqa: RUF012 - arq reads class attributes
    redis_settings = SETTINGS
    max_jobs = int(os.environ.get("BENCH_MAX_JOBS", "10"))


MAX_JOBS = {"e2e": 10, "lateness": 10, "kill": 20}


class ArqPeer(C.Peer):
    name = "arq"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(SETTINGS))

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def enqueue_noop(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.pool.enqueue_job("noop")

        self._run(go())

    def enqueue_flaky(self, i: int) -> None:
        self._run(self.pool.enqueue_job("flaky", i))

    def fill_sleep(self, n: int) -> None:
        async def go() -> None:
            for i in range(n):
                await self.pool.enqueue_job("sleep2", i)

        self._run(go())

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        count = procs if kind == "e2e" else 1
        arq = shlex.quote(str(Path(sys.executable).parent / "arq"))
        one = f"BENCH_MAX_JOBS={MAX_JOBS[kind]} {arq} arq_peer.WorkerSettings"
        return ["sh", "-c", " & ".join([one] * count) + " & wait"]

    def settings(self, kind: str, procs: int) -> str:
        count = procs if kind == "e2e" else 1
        return f"{count} × `arq` worker, max_jobs={MAX_JOBS[kind]}, poll_delay 0.5 s (default)"

    def inspect(self, n: int) -> dict[str, int]:
        return {"stuck": int(self._run(self.pool.zcard(default_queue_name)))}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import arq_peer

    C.main(arq_peer.ArqPeer())
