"""The PostgreSQL store's hot table under churn: does it stay near its live size?

A producer and a worker loop in this process run at full speed against a
throwaway cluster (``tests/_postgres_server.py``, autovacuum at the server's
defaults, the table settings the migration writes, the store's own
``vacuum_every`` and ``reindex``): each round creates 500
tasks and leases and completes 500, keeping about ``--backlog`` live tasks.
Every ``--sample`` seconds it prints the hot table's size with its indexes
(``pg_total_relation_size``); at the end it compares that with the size
``VACUUM FULL`` rebuilds it to, which is the live size. Issue 12's target is
within 2x after a 30-minute run.

Run: ``.venv/bin/python benchmarks/postgres_bloat.py --minutes 30``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg

from _postgres_server import PostgresServer, find_pg_bindir
from resile.queue import TaskSpec
from resile.queue.store import open_store

SCHEMA = "bloat"
HOT = f"{SCHEMA}.resile_tasks"


def size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (HOT,)).fetchone()
    return int(row[0]) if row else 0


def parts(url: str) -> str:
    """The heap's and each index's size in kB: where the growth is."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
            " WHERE c.oid = %s::regclass OR c.oid IN"
            " (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass) ORDER BY c.relname",
            (HOT, HOT),
        ).fetchall()
    return "  ".join(
        f"{name.removeprefix('resile_tasks') or 'heap'} {n // 1024}k" for name, n in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--sample", type=float, default=30.0)
    parser.add_argument(
        "--vacuum-every", default="1", help="the store's vacuum_every option (seconds, or none)"
    )
    parser.add_argument(
        "--reindex", default="true", help="the store's reindex option (true or false)"
    )
    args = parser.parse_args()
    # The store's index rebuilds (INFO) and any failure (WARNING), timestamped.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("resile.queue").setLevel(logging.DEBUG)  # the index rebuilds are DEBUG lines
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (initdb, pg_ctl)")
    server = PostgresServer(bindir).start()
    try:
        store = open_store(
            f"{server.url}?schema={SCHEMA}&listen=false&vacuum_every={args.vacuum_every}"
            f"&reindex={args.reindex}"
        )
        store.create_many([TaskSpec("noop") for _ in range(args.backlog)])
        end = time.monotonic() + args.minutes * 60
        next_sample = time.monotonic()
        done = 0
        started = time.monotonic()
        while time.monotonic() < end:
            store.create_many([TaskSpec("noop") for _ in range(500)])
            for _ in range(5):
                got = store.lease("default", "w", limit=100)
                store.complete_many_flags([(t.id, None) for t in got], "w")
                done += len(got)
            if time.monotonic() >= next_sample:
                live = store.stats()
                print(
                    f"{time.monotonic() - started:7.0f} s  done {done:>9,}  "
                    f"live {sum(live[s] for s in live if not s.terminal):>6,}  "
                    f"hot table + indexes {size(server.url) / 1e6:8.2f} MB  ({parts(server.url)})",
                    flush=True,
                )
                next_sample += args.sample
        before = size(server.url)
        print(f"before VACUUM FULL: {parts(server.url)}")
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"VACUUM FULL {HOT}")
        after = size(server.url)
        print(f"after VACUUM FULL:  {parts(server.url)}")
        rate = done / (time.monotonic() - started)
        print(
            f"\n{done:,} tasks in {args.minutes:g} min ({rate:,.0f}/s): hot table + indexes "
            f"{before / 1e6:.2f} MB, live size (VACUUM FULL) {after / 1e6:.2f} MB: "
            f"{before / after:.2f}x"
        )
        store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
