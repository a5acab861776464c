"""The durable queue on PostgreSQL: resile's PostgreSQL store, one run, one machine.

The server is a throwaway cluster (``tests/_postgres_server.py``: ``initdb`` in
a temporary directory, a free loopback port, ``fsync=off`` as for the tests),
or ``RESILE_TEST_POSTGRES_URL``. Each scenario runs in a schema of its own:

* enqueue: 5,000 no-op tasks one call at a time (and ``enqueue_many``);
* end to end: N no-op tasks already queued, then 1 or 2 worker processes
  start; throughput between the 5th and 95th percentile of finish times;
  median of 3 runs;
* retry lateness: 100 tasks (enqueued 20 ms apart) fail their first attempt
  and are retried after a 1 s backoff; lateness = start of the retry - (time
  the first attempt raised + 1 s). The retry is armed by the NOTIFY that the
  failing transaction sends (the due time in its payload), not by polling.

The peers of issue 12 (procrastinate, pgqueuer) are not in this runner yet.

Run: ``.venv/bin/python benchmarks/queue_postgres.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import _common as C

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _postgres_server import PostgresServer, find_pg_bindir, postgres_url_from_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short run (< 2 minutes)")
    args = parser.parse_args()
    quick = args.quick
    runs = 1 if quick else 3
    n_enqueue = 1000 if quick else 5000
    n_e2e = 1500 if quick else 10000
    n_late = 20 if quick else 100

    server: PostgresServer | None = None
    base = postgres_url_from_env()
    if base is None:
        bindir = find_pg_bindir()
        if bindir is None:
            sys.exit("no PostgreSQL binaries (initdb, pg_ctl) and RESILE_TEST_POSTGRES_URL unset")
        server = PostgresServer(bindir).start()
        base = server.url

    def url(scratch: str) -> str:
        return f"{base}?schema=bench_{uuid.uuid4().hex[:12]}"

    c = C.Contender("resile", "resile_peer.py", None, url)
    started = time.time()
    print(f"queue on PostgreSQL — {C.machine()} — {'quick' if quick else 'full'} run", flush=True)
    try:
        c.prepare()
        r: dict[str, dict[str, object]] = {}
        r["enqueue"] = c.run("enqueue", "--n", str(n_enqueue))
        C.log_result(c.label, "enqueue", r["enqueue"])
        r["enqueue_many"] = c.run("enqueue_many", "--n", str(n_enqueue))
        C.log_result(c.label, "enqueue_many", r["enqueue_many"])
        for procs in (1, 2):
            key = f"e2e{procs}"
            r[key] = C.median_of(
                c, runs, "e2e", "--n", str(n_e2e), "--procs", str(procs), "--timeout", "120"
            )
            C.log_result(c.label, f"e2e {procs} proc", r[key])
        r["lateness"] = c.run("lateness", "--n", str(n_late), "--timeout", "60")
        C.log_result(c.label, "lateness", r["lateness"])
    finally:
        if server is not None:
            server.stop()
    print(f"\ntook {time.time() - started:.0f} s")
    path = C.save_results("queue_postgres", {"machine": C.machine(), "quick": quick, "results": r})
    print(f"raw results: {path.relative_to(C.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
