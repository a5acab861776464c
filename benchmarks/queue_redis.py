"""The durable queue on Redis: resile beside huey, RQ, Dramatiq, arq, Celery and maas-task-backoff-framework.

One run, one machine, one throwaway ``redis-server`` (started here on a free
loopback port, never the machine's own on 6379; flushed between peers). Each
peer runs in its own virtualenv (``.bench/venvs/<peer>``, created on first run
from ``benchmarks/requirements-<peer>.txt``); resile runs in the project's
``.venv``. Every peer's runner is ``benchmarks/_peers/<peer>_peer.py``.

(a) enqueue: 5,000 no-op tasks, one call at a time (resile's ``enqueue_many``
    and RQ's ``enqueue_many`` separately), median of 3 runs; printed beside the
    round-trip floor (raw-socket PINGs per second, one at a time);
(b) end to end: N no-op tasks queued, then the workers start (settings that
    fit 2 cores, listed under the table); throughput between the 5th and 95th
    percentile of finish times; median of 3 runs;
(c) retry lateness: 100 tasks (enqueued 20 ms apart) fail their first attempt
    and are retried after 1 s; lateness = retry start - (time the first
    attempt raised + 1 s): p50, p99, max, early starts;
(d) kill -9: 200 tasks of 2 s, a worker (20 at once) is killed with
    ``kill -9`` on its whole process group once the first tasks have
    finished; a fresh worker starts at once; 60 s after the kill we count the
    tasks completed, those the peer still holds (queued or marked running:
    "stuck") and the rest ("lost"). This phase runs for all peers at once,
    each on its own Redis database, to keep the run under 10 minutes.

Run: ``.venv/bin/python benchmarks/queue_redis.py [--quick] [--only resile,rq]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from typing import Any

import _common as C

# peer -> (label, e2e task count in a full run, e2e timeout s, e2e runs are medians?)
PEERS: dict[str, tuple[str, int, float]] = {
    "resile": ("resile", 15000, 60.0),
    "huey": ("huey (RedisHuey)", 15000, 60.0),
    "rq": ("RQ", 300, 60.0),
    "dramatiq": ("Dramatiq", 10000, 60.0),
    "arq": ("arq", 1000, 60.0),
    "celery": ("Celery", 3000, 60.0),
    "maas": ("maas-task-backoff-framework", 300, 25.0),  # capped: 100 per 10 s
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one run of each scenario, smaller batches"
    )
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(PEERS)}")
    args = parser.parse_args()
    quick = args.quick
    only = [p for p in args.only.split(",") if p] or list(PEERS)
    unknown = set(only) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {','.join(PEERS)}")
    runs = 1 if quick else 3
    n_enqueue = 1000 if quick else 5000
    n_late = 10 if quick else 100
    n_kill, window = (40, 25.0) if quick else (200, 60.0)

    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    with C.RedisServer() as server:
        print(
            f"queue on Redis {server.version()} — {C.machine()} — "
            f"{'quick' if quick else 'full'} run",
            flush=True,
        )
        floor = server.ping_rate()
        print(
            f"round-trip floor: {floor:,.0f} PINGs/s, one at a time over a raw socket "
            "(no single-call enqueue that waits for its reply can beat it)",
            flush=True,
        )
        contenders: dict[str, C.Contender] = {}
        for peer in only:
            label = PEERS[peer][0]
            c = C.Contender(
                label,
                f"{peer}_peer.py",
                None if peer == "resile" else peer,
                lambda scratch: server.url(0),
                reset=server.flush_db0,
            )
            try:
                c.prepare()
            except Exception as exc:
                print(f"  {label}: cannot set up its venv: {exc}", flush=True)
                results[label] = {"setup": {"error": str(exc)}}
                continue
            contenders[peer] = c

        def measure_enqueue(peer: str, c: C.Contender) -> None:
            r: dict[str, Any] = results.setdefault(c.label, {})
            r["enqueue"] = C.median_of(c, runs, "enqueue", "--n", str(n_enqueue))
            C.log_result(c.label, "enqueue", r["enqueue"])
            if peer in ("resile", "rq"):
                r["enqueue_many"] = C.median_of(c, runs, "enqueue_many", "--n", str(n_enqueue))
                C.log_result(c.label, "enqueue_many", r["enqueue_many"])

        def measure(peer: str, c: C.Contender) -> None:
            _, n_e2e, e2e_timeout = PEERS[peer]
            r: dict[str, Any] = results.setdefault(c.label, {})
            capped = peer == "maas"  # its rate is its poll interval: once is enough
            # A quick run keeps the full task count: with fewer, the fast peers finish
            # before their second worker process is up, and the rate says little.
            n = n_e2e
            t = e2e_timeout if not (quick and capped) else 12.0
            r["e2e"] = C.median_of(
                c, 1 if capped else runs, "e2e", "--n", str(n), "--procs", "2",
                "--timeout", str(t),
            )  # fmt: skip
            C.log_result(c.label, "e2e", r["e2e"])
            late_timeout = "25" if capped else ("10" if quick else "20")
            r["lateness"] = c.run("lateness", "--n", str(n_late), "--timeout", late_timeout)
            C.log_result(c.label, "lateness", r["lateness"])

        for peer, c in contenders.items():
            measure_enqueue(peer, c)
            if peer != "maas":
                measure(peer, c)

        # (d) all peers at once, each on its own Redis database 1..k (db 0 is flushed
        # between scenarios, the others are left alone). maas-task-backoff-framework's own
        # measurements run meanwhile on db 0: they take a minute of its 10 s ticks
        # and use next to no CPU, nor do 2-second sleeping tasks (its enqueue rate, which
        # would feel the load, was measured above).
        server.flush()
        print(f"  kill -9 phase: {len(contenders)} peers at once, {window:g} s each", flush=True)
        with concurrent.futures.ThreadPoolExecutor(len(contenders) or 1) as pool:
            futures = {}
            for db, (peer, c) in enumerate(contenders.items(), start=1):
                k = C.Contender(c.label, c.script, c.venv, lambda s, db=db: server.url(db))
                k.python = c.python
                futures[peer] = pool.submit(
                    k.run, "kill", "--n", str(n_kill), "--window", str(window),
                    timeout=window + 120,
                )  # fmt: skip
            if "maas" in contenders:
                measure("maas", contenders["maas"])
            for peer, fut in futures.items():
                label = contenders[peer].label
                results.setdefault(label, {})["kill"] = fut.result()
                C.log_result(label, "kill", results[label]["kill"])

    print(f"\ntook {time.time() - started:.0f} s\n")
    print(render(results))
    print(f"\nround-trip floor: {floor:,.0f} PINGs/s (raw socket, one at a time)")
    path = C.save_results(
        "queue_redis",
        {"machine": C.machine(), "quick": quick, "ping_floor": floor, "results": results},
    )
    print(f"\nraw results: {path.relative_to(C.ROOT)}")


def _get(results: dict[str, Any], label: str, key: str, field: str = "rate") -> Any:
    res = results.get(label, {}).get(key, {})
    if not isinstance(res, dict) or "error" in res:
        return None
    return res.get(field)


def render(results: dict[str, dict[str, Any]]) -> str:
    g = _get
    headers = ["", "enqueue /s", "bulk /s", "e2e /s", "retry p50 ms", "p99 ms", "max ms",
               "early", "kill: done", "stuck", "lost", "dup"]  # fmt: skip
    rows = []
    for label in results:
        e2e = g(results, label, "e2e")
        unfinished = g(results, label, "e2e", "complete") is False
        e2e_s = f"{C.fmt(e2e, 1)}*" if unfinished else C.fmt(e2e)
        kill_n = g(results, label, "kill", "n")
        done = g(results, label, "kill", "completed")
        rows.append([
            label,
            C.fmt(g(results, label, "enqueue")),
            C.fmt(g(results, label, "enqueue_many")),
            e2e_s,
            C.fmt(g(results, label, "lateness", "p50_ms"), 1),
            C.fmt(g(results, label, "lateness", "p99_ms"), 1),
            C.fmt(g(results, label, "lateness", "max_ms"), 1),
            C.fmt(g(results, label, "lateness", "early")),
            f"{done}/{kill_n}" if done is not None else "—",
            C.fmt(g(results, label, "kill", "stuck")),
            C.fmt(g(results, label, "kill", "lost")),
            C.fmt(g(results, label, "kill", "duplicates")),
        ])  # fmt: skip
    out = [C.table(headers, rows)]
    ref = "resile"
    if ref in results:
        out.append("\nratios (above 1×: resile is better by that factor):\n")
        rows = []
        for label in results:
            if label == ref:
                continue
            rows.append([
                label,
                C.ratio(g(results, ref, "enqueue"), g(results, label, "enqueue")),
                C.ratio(g(results, ref, "e2e"), g(results, label, "e2e")),
                C.ratio(g(results, ref, "lateness", "p99_ms"),
                        g(results, label, "lateness", "p99_ms"), False),
            ])  # fmt: skip
        out.append(C.table(["resile vs", "enqueue", "e2e", "retry p99"], rows))
    out.append("\nworker settings:")
    for label in results:
        for key in ("e2e", "lateness", "kill"):
            s = g(results, label, key, "settings")
            if s:
                out.append(f"- {label}, {key}: {s}")
    notes = [(label, g(results, label, "e2e", "note")) for label in results]
    for label, note in notes:
        if note:
            out.append(
                f"* {label}: end to end did not finish ({note}); its rate is what it did in that time"
            )
    for label in results:
        for key, res in results[label].items():
            if isinstance(res, dict) and "error" in res:
                out.append(f"! {label} {key}: {str(res['error'])[-200:]}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
