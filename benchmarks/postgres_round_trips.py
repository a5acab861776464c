"""Round trips of the PostgreSQL store's hot calls, counted from libpq's protocol trace.

On a throwaway cluster (``tests/_postgres_server.py``) with a pool of one
connection, each call runs with ``PQtrace`` on that connection; a round trip
is a turn from messages the client sent to messages the server sent. Counts
do not depend on the machine's load, unlike timings.

Run: ``.venv/bin/python benchmarks/postgres_round_trips.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _postgres_server import PostgresServer, find_pg_bindir
from resile.queue import TaskSpec
from resile.queue.store.postgres import PostgresStore


def round_trips(store: PostgresStore, call: Callable[[], object]) -> int:
    """How many client-to-server turns ``call()`` made on the store's one connection."""
    fd, path = tempfile.mkstemp(prefix="resile-pqtrace-")
    try:
        with store._db._ensure().connection() as conn:
            conn.pgconn.trace(fd)
        try:
            call()
        finally:
            with store._db._ensure().connection() as conn:
                conn.pgconn.untrace()
        turns, last = 0, ""
        for line in Path(path).read_text().splitlines():
            fields = line.split("\t")
            side = fields[1] if len(fields) > 1 else ""
            if side == "B" and last == "F":
                turns += 1
            if side in ("F", "B"):
                last = side
        return turns
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (initdb, pg_ctl)")
    server = PostgresServer(bindir).start()
    try:
        store = PostgresStore(
            server.url, schema="trips", listen=False, pool_size=1, vacuum_every=None
        )
        store.create_many([TaskSpec("h", max_retries=5) for _ in range(10)])
        store.lease("default", "w", limit=1)  # warm: the tally prune of the minute, done
        (a,) = store.lease("default", "w", limit=1)
        calls: dict[str, Callable[[], object]] = {
            "create (generated id)": lambda: store.create(TaskSpec("h")),
            "lease (1 due)": lambda: store.lease("default", "w", limit=1),
            "fail (a retry)": lambda: store.fail(a.id, "w", RuntimeError("x")),
            "next_due_at": lambda: store.next_due_at(["default"]),
        }
        for name, call in calls.items():
            print(f"{name:28} {round_trips(store, call)} round trips")
        (b,) = store.lease("default", "w", limit=1)
        done = round_trips(
            store, lambda: store.complete_then_lease([(b.id, None)], "default", "w", limit=1)
        )
        print(f"{'complete_then_lease':28} {done} round trips")
        store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
