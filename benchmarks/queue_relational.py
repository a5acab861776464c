"""The durable queue on PostgreSQL and MySQL/MariaDB: resile's relational stores, one run.

The servers are throwaway ones (``tests/_postgres_server.py``: ``initdb`` in a
temporary directory, ``fsync=off``; ``tests/_mysql_server.py``: MariaDB,
``innodb_flush_log_at_trx_commit=2``), each on a free loopback port, or
``RESILE_TEST_POSTGRES_URL`` / ``RESILE_TEST_MYSQL_URL``. Each scenario runs in
a schema (PostgreSQL) or database (MySQL) of its own:

* enqueue: 5,000 no-op tasks one call at a time (and ``enqueue_many``);
* end to end: N no-op tasks already queued, then 1 or 2 worker processes
  start; throughput between the 5th and 95th percentile of finish times;
  median of 3 runs;
* retry lateness: 100 tasks (enqueued 20 ms apart) fail their first attempt
  and are retried after a 1 s backoff; lateness = start of the retry - (time
  the first attempt raised + 1 s). On PostgreSQL the retry is armed by the
  NOTIFY that the failing transaction sends (the due time in its payload); on
  MySQL by the worker's own timer on the next due time.

* kill -9 (PostgreSQL): 200 tasks of 2 s, one worker running 20 at once is
  killed with its process group once the first tasks have finished, a fresh
  worker starts at once; recovery = the time from the kill until every task
  that was running at the kill has started again (its lease lapsed), and
  whether all 200 finish, none lost.

procrastinate and pgqueuer run beside resile on the same kind of throwaway
cluster, each in its own virtualenv (``.bench/venvs/procrastinate``,
``.bench/venvs/pgqueuer``, from ``benchmarks/requirements-<peer>.txt``).

Run: ``.venv/bin/python benchmarks/queue_relational.py [--quick]
[--only postgres,procrastinate,pgqueuer,mysql]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import _common as C

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _mysql_server import MariaDBServer, create_database, find_mariadb, mysql_url_from_env
from _postgres_server import PostgresServer, find_pg_bindir, postgres_url_from_env


def start_server(kind: str) -> tuple[Callable[[], None], Callable[[str], str]]:
    """Start (or find) the ``kind`` server: a stop function and scratch -> a fresh store URL."""
    if kind == "postgres":
        base = postgres_url_from_env()
        pg: PostgresServer | None = None
        if base is None:
            bindir = find_pg_bindir()
            if bindir is None:
                sys.exit("no PostgreSQL binaries and RESILE_TEST_POSTGRES_URL is not set")
            pg = PostgresServer(bindir).start()
            base = pg.url
        return (pg.stop if pg else lambda: None), (
            lambda scratch: f"{base}?schema=bench_{uuid.uuid4().hex[:12]}"
        )
    if kind == "mysql":
        url = mysql_url_from_env()
        my: MariaDBServer | None = None
        if url is None:
            found = find_mariadb()
            if found is None:
                sys.exit("no MariaDB binaries and RESILE_TEST_MYSQL_URL is not set")
            my = MariaDBServer(*found).start()
            url = my.url
        base_url = url

        def fresh(scratch: str) -> str:
            return create_database(base_url, f"bench_{uuid.uuid4().hex[:12]}")

        return (my.stop if my else lambda: None), fresh
    sys.exit(f"--only: unknown store {kind!r} (postgres, mysql)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short run (< 2 minutes)")
    parser.add_argument(
        "--only", default="", help="comma-separated: postgres,procrastinate,pgqueuer,mysql"
    )
    args = parser.parse_args()
    quick = args.quick
    runs = 1 if quick else 3
    n_enqueue = 1000 if quick else 5000
    n_e2e = 1500 if quick else 10000
    n_late = 20 if quick else 100
    n_kill, window = (40, 50.0) if quick else (200, 90.0)

    peers = {"procrastinate", "pgqueuer"}
    parser_only = [w for w in args.only.split(",") if w] or [
        "postgres",
        "procrastinate",
        "pgqueuer",
        "mysql",
    ]
    started = time.time()
    print(f"queue on SQL servers — {C.machine()} — {'quick' if quick else 'full'} run", flush=True)
    results: dict[str, dict[str, dict[str, object]]] = {}
    for kind in parser_only:
        stop, make_url = start_server("postgres" if kind in peers else kind)
        c = (
            C.Contender(kind, f"{kind}_peer.py", kind, make_url)
            if kind in peers
            else C.Contender(f"resile {kind}", "resile_peer.py", None, make_url)
        )
        try:
            c.prepare()
            results[c.label] = r = {}
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
            if kind != "mysql":
                r["kill"] = c.run("kill", "--n", str(n_kill), "--window", str(window))
                C.log_result(c.label, "kill", r["kill"])
        finally:
            stop()
    print(f"\ntook {time.time() - started:.0f} s")
    path = C.save_results(
        "queue_relational", {"machine": C.machine(), "quick": quick, "results": results}
    )
    print(f"raw results: {path.relative_to(C.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
