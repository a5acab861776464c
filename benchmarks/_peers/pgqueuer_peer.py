"""pgqueuer's runner (its own venv, ``.bench/venvs/pgqueuer``): asyncpg, ``QueueManager``.

Store: ``$BENCH_URL``, ``postgresql://...?schema=NAME``; the schema is made and
pgqueuer's own tables installed in it (``search_path``). Workers:
``pgqueuer_peer.py worker P KIND`` starts P processes, each one
``QueueManager.run()`` on one asyncpg connection with pgqueuer's defaults
(LISTEN/NOTIFY for new jobs, ``batch_size=10``, no cap on concurrent jobs,
a 30 s dequeue timeout shortened to the next job's ``execute_after``, a 30 s
heartbeat timeout before a job of a dead worker is picked again); for the
``kill`` scenario ``max_concurrent_tasks=20``, as the others run 20 at once.
Handlers are ``async def`` (pgqueuer's own form); the 2 s task awaits
``asyncio.sleep``. A retry is ``RetryRequested(delay=1 s)``, pgqueuer's
database-level retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager, RetryRequested

URL = os.environ.get(C.ENV_URL, "postgresql:///bench?schema=public")
_parts = urlsplit(URL)
SCHEMA = dict(parse_qsl(_parts.query)).get("schema", "public")
BASE = urlunsplit(_parts._replace(query=""))
T = TypeVar("T")


async def _connect() -> asyncpg.Connection:
    return await asyncpg.connect(BASE, server_settings={"search_path": SCHEMA})


def _i(job: Job) -> int:
    return int(json.loads(job.payload or b"{}").get("i", -1))


def _register(qm: QueueManager) -> None:
    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        C.mark_done()

    @qm.entrypoint("flaky")
    async def flaky(job: Job) -> None:
        attempt = job.attempts + 1
        C.mark_event("S", _i(job), attempt)
        if attempt == 1:
            C.mark_event("F", _i(job), 1, time.time() + 1.0)
            raise RetryRequested(delay=timedelta(seconds=1), reason="the first attempt fails")

    @qm.entrypoint("sleep2")
    async def sleep2(job: Job) -> None:
        C.mark_event("S", _i(job))
        await asyncio.sleep(2.0)
        C.mark_event("D", _i(job))


def _run(make: Callable[[Queries], Awaitable[T]]) -> T:
    """``make(queries)`` on a fresh connection, closed afterwards."""

    async def go() -> T:
        conn = await _connect()
        try:
            return await make(Queries(AsyncpgDriver(conn)))
        finally:
            await conn.close()

    return asyncio.run(go())


def _payloads(items: list[dict[str, Any]]) -> list[bytes | None]:
    return [json.dumps(x).encode() for x in items]


class PgqueuerPeer(C.Peer):
    name = "pgqueuer"

    def __init__(self) -> None:
        async def install(q: Queries) -> None:
            conn = q.driver  # the install needs the schema in place first
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
            try:
                await q.install()
            except Exception as exc:  # installed already by an earlier scenario in this schema
                if "already exists" not in str(exc):
                    raise

        _run(install)

    def enqueue_noop(self, n: int) -> None:
        async def go(q: Queries) -> None:
            for _ in range(n):
                await q.enqueue("noop", None)

        _run(go)

    def enqueue_noop_many(self, n: int) -> bool:
        async def go(q: Queries) -> None:
            for start in range(0, n, 5000):
                k = min(5000, n - start)
                await q.enqueue(["noop"] * k, [None] * k, [0] * k)

        _run(go)
        return True

    def enqueue_flaky(self, i: int) -> None:
        _run(lambda q: q.enqueue("flaky", json.dumps({"i": i}).encode()))

    def fill_sleep(self, n: int) -> None:
        _run(lambda q: q.enqueue(["sleep2"] * n, _payloads([{"i": i} for i in range(n)]), [0] * n))

    def inspect(self, n: int) -> dict[str, Any]:
        async def go(q: Queries) -> int:
            rows = await q.driver.fetch("SELECT COUNT(*) AS n FROM pgqueuer")
            return int(rows[0]["n"])  # done jobs are deleted: what is left is held or queued

        return {"stuck": _run(go)}

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        return [sys.executable, __file__, "worker", str(procs), kind]

    def settings(self, kind: str, procs: int) -> str:
        cap = "max_concurrent_tasks=20" if kind == "kill" else "no cap on concurrent jobs"
        return f"{procs} worker process(es), batch_size=10, {cap}, defaults otherwise"


async def _serve(kind: str) -> None:
    conn = await _connect()
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    _register(qm)
    await qm.run(max_concurrent_tasks=20 if kind == "kill" else None)


def _worker(procs: int, kind: str) -> None:
    kids = [
        subprocess.Popen([sys.executable, __file__, "worker", "1", kind]) for _ in range(procs - 1)
    ]
    asyncio.run(_serve(kind))
    for k in kids:
        k.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(int(sys.argv[2]), sys.argv[3])
    else:
        C.main(PgqueuerPeer())
