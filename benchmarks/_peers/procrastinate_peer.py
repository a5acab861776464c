"""procrastinate's runner (its own venv, ``.bench/venvs/procrastinate``): ``PsycopgConnector``.

Store: ``$BENCH_URL``, ``postgresql://...?schema=NAME``; the schema is made and
procrastinate's own schema applied in it (``search_path``). Workers:
``procrastinate_peer.py worker P C`` starts P processes, each
``app.run_worker(concurrency=C)`` with procrastinate's defaults otherwise
(LISTEN/NOTIFY for new jobs, a 5 s fetch poll for delayed and retried ones).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
import procrastinate
import psycopg

URL = os.environ.get(C.ENV_URL, "postgresql:///bench?schema=public")
_parts = urlsplit(URL)
SCHEMA = dict(parse_qsl(_parts.query)).get("schema", "public")
BASE = urlunsplit(_parts._replace(query=""))
CONNINFO = f"{BASE}?options=-c%20search_path%3D{SCHEMA}"
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=CONNINFO))


@app.task(name="noop")
def noop() -> None:
    C.mark_done()


@app.task(
    name="flaky", pass_context=True, retry=procrastinate.RetryStrategy(max_attempts=1, wait=1)
)
def flaky(context: procrastinate.JobContext, i: int) -> None:
    attempt = (context.job.attempts or 0) + 1
    C.mark_event("S", i, attempt)
    if attempt == 1:
        C.mark_event("F", i, 1, time.time() + 1.0)
        raise RuntimeError("the first attempt fails")


@app.task(name="sleep2", retry=5)
def sleep2(i: int) -> None:
    C.mark_event("S", i)
    time.sleep(2.0)
    C.mark_event("D", i)


CONCURRENCY = {"e2e": 10, "lateness": 10, "kill": 20}


class ProcrastinatePeer(C.Peer):
    name = "procrastinate"

    def __init__(self) -> None:
        with psycopg.connect(BASE, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
        app.open()
        try:
            app.schema_manager.apply_schema()
        except Exception as exc:  # applied already by an earlier scenario in this schema
            if "already exists" not in str(exc):
                raise

    def enqueue_noop(self, n: int) -> None:
        for _ in range(n):
            noop.defer()

    def enqueue_noop_many(self, n: int) -> bool:
        for start in range(0, n, 5000):
            noop.batch_defer(*([{}] * min(5000, n - start)))
        return True

    def enqueue_flaky(self, i: int) -> None:
        flaky.defer(i=i)

    def fill_sleep(self, n: int) -> None:
        sleep2.batch_defer(*({"i": i} for i in range(n)))

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        return [sys.executable, __file__, "worker", str(procs), str(CONCURRENCY[kind])]

    def settings(self, kind: str, procs: int) -> str:
        return f"{procs} worker process(es), concurrency {CONCURRENCY[kind]}, defaults otherwise"


def _worker(procs: int, concurrency: int) -> None:
    kids = [
        subprocess.Popen([sys.executable, __file__, "worker", "1", str(concurrency)])
        for _ in range(procs - 1)
    ]
    app.run_worker(concurrency=concurrency)
    for k in kids:
        k.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        C.main(ProcrastinatePeer())
