"""The durable queue on SQLite: resile beside huey's ``SqliteHuey``, one run, one machine.

Measured for each contender, each in its own process (huey in its own
virtualenv, ``.bench/venvs/huey``, created on first run from
``benchmarks/requirements-huey.txt``), each scenario on a fresh database file:

* enqueue: 5,000 no-op tasks one call at a time (and resile's ``enqueue_many``);
* end to end: N no-op tasks already queued, then 1 or 2 worker processes
  start; throughput is measured between the 5th and 95th percentile of finish
  times (worker start-up and stragglers left out); median of 3 runs;
* retry lateness: 100 tasks (enqueued 20 ms apart) each fail their first
  attempt and are retried after a 1 s backoff; lateness = start of the retry
  - (time the first attempt raised + 1 s): p50, p99, max, and how many
  retries started early.

Durability differs by default: resile runs SQLite with ``synchronous=NORMAL``
(WAL: a commit survives a crash of the process, not a power cut), huey leaves
SQLite's ``synchronous=FULL`` (an fsync per commit). Both are also run at the
other's level: resile ``?synchronous=full``, huey ``fsync=False``
(``synchronous=OFF``, the nearest huey offers to NORMAL).

Run: ``.venv/bin/python benchmarks/queue_sqlite.py [--quick] [--only resile,huey]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _common as C


def contenders() -> list[C.Contender]:
    def db(query: str = "") -> object:
        return lambda scratch: f"sqlite:///{os.path.join(scratch, 'bench.db')}{query}"

    return [
        C.Contender("resile", "resile_peer.py", None, db()),  # type: ignore[arg-type]
        C.Contender("resile sync=FULL", "resile_peer.py", None, db("?synchronous=full")),  # type: ignore[arg-type]
        C.Contender("huey (fsync default)", "huey_peer.py", "huey", db()),  # type: ignore[arg-type]
        C.Contender("huey fsync=False", "huey_peer.py", "huey", db("?fsync=off")),  # type: ignore[arg-type]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short run of everything (< 2 minutes)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated labels' first words: resile,huey"
    )
    args = parser.parse_args()
    quick = args.quick
    runs = 1 if quick else 3
    n_enqueue = 1000 if quick else 5000
    n_e2e = 1500 if quick else 10000
    n_late = 20 if quick else 100

    chosen = [
        c for c in contenders() if not args.only or c.label.split()[0] in args.only.split(",")
    ]
    started = time.time()
    print(f"queue on SQLite — {C.machine()} — {'quick' if quick else 'full'} run", flush=True)
    results: dict[str, dict[str, dict[str, object]]] = {}
    for c in chosen:
        c.prepare()
        r: dict[str, dict[str, object]] = {}
        results[c.label] = r
        r["enqueue"] = c.run("enqueue", "--n", str(n_enqueue))
        C.log_result(c.label, "enqueue", r["enqueue"])
        if c.label.startswith("resile"):
            r["enqueue_many"] = c.run("enqueue_many", "--n", str(n_enqueue))
            C.log_result(c.label, "enqueue_many", r["enqueue_many"])
        for procs in (1, 2):
            key = f"e2e{procs}"
            r[key] = C.median_of(
                c, runs, "e2e", "--n", str(n_e2e), "--procs", str(procs), "--timeout", "60"
            )
            C.log_result(c.label, f"e2e {procs} proc", r[key])
        r["lateness"] = c.run("lateness", "--n", str(n_late), "--timeout", "30")
        C.log_result(c.label, "lateness", r["lateness"])

    print(f"\ntook {time.time() - started:.0f} s\n")
    print(render(results))
    path = C.save_results(
        "queue_sqlite", {"machine": C.machine(), "quick": quick, "results": results}
    )
    print(f"\nraw results: {path.relative_to(C.ROOT)}")


def render(results: dict[str, dict[str, dict[str, object]]]) -> str:
    def get(label: str, key: str, field: str = "rate") -> float | None:
        res = results.get(label, {}).get(key, {})
        value = res.get(field) if "error" not in res else None
        return value if isinstance(value, (int, float)) else None

    headers = ["", "enqueue /s", "enqueue_many /s", "e2e 1 proc /s", "e2e 2 procs /s",
               "retry p50 ms", "p99 ms", "max ms", "early"]  # fmt: skip
    rows = []
    for label in results:
        rows.append([
            label,
            C.fmt(get(label, "enqueue")),
            C.fmt(get(label, "enqueue_many")),
            C.fmt(get(label, "e2e1")),
            C.fmt(get(label, "e2e2")),
            C.fmt(get(label, "lateness", "p50_ms"), 1),
            C.fmt(get(label, "lateness", "p99_ms"), 1),
            C.fmt(get(label, "lateness", "max_ms"), 1),
            C.fmt(get(label, "lateness", "early")),
        ])  # fmt: skip
    out = [C.table(headers, rows)]
    ref = "resile"
    if ref in results:
        headers = ["resile vs", "enqueue", "e2e 1 proc", "e2e 2 procs", "retry p99"]
        rows = []
        for label in results:
            if label.startswith("resile"):
                continue
            rows.append([
                label,
                C.ratio(get(ref, "enqueue"), get(label, "enqueue")),
                C.ratio(get(ref, "e2e1"), get(label, "e2e1")),
                C.ratio(get(ref, "e2e2"), get(label, "e2e2")),
                C.ratio(get(ref, "lateness", "p99_ms"), get(label, "lateness", "p99_ms"), False),
            ])  # fmt: skip
        if rows:
            out.append("\nratios (above 1×: resile is better by that factor):\n")
            out.append(C.table(headers, rows))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
