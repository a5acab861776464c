"""Retry lateness through ``resile worker`` with default settings, on SQLite, Redis, PostgreSQL, MySQL.

The scenario of issue 9: ``--n`` tasks (100) are enqueued ``--gap`` apart
(10 ms) by this process; each fails its first attempt and is retried after
``--delay`` (0.3 s, ``Constant`` backoff, ``max_retries=1``). The worker is a
separate ``resile worker tasks:queue`` process with no option given (10
threads). Lateness of a retry = its start (the lease time in the task's
history) - (the time the first attempt raised, carried in its error message,
+ the delay): what a user sees, the time the worker took to record the failure
included; negative would be *early*.

    python benchmarks/retry_lateness.py                       # this tree, both stores
    python benchmarks/retry_lateness.py --rounds 3 --compare /work/baseline

``--compare TREE`` runs TREE's ``src`` and this tree's alternately, round
after round, so that both see the same machine load. Each measurement runs in
a fresh process with ``PYTHONPATH=<tree>/src`` (the enqueuer and the worker),
against a fresh SQLite file or a throwaway redis-server's fresh database
(never the machine's own Redis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent

TASKS = """
import os
import time

import resile

queue = resile.connect(os.environ["BENCH_URL"])


@queue.task(name="noop", max_retries=0)
def noop() -> None:
    pass


@queue.task(name="flaky", backoff=resile.Constant({delay!r}), max_retries=1)
def flaky(i: int, ctx: resile.TaskContext) -> None:
    if ctx.attempt == 1:
        # The raise time travels in the message: lateness is measured from it, as a user sees it.
        raise RuntimeError(f"raised_at={{time.time()!r}}")
"""


# -- tracing (--trace): what the worker's loop did around each late retry --------------------

TRACED = ("lease", "complete_then_lease", "fail", "next_due_at", "complete", "complete_many_flags")


def _traced_worker(trace_path: str, argv: list[str]) -> None:
    """Run ``resile worker ARGV`` with the loop's waits and store calls timed (wall clock)."""
    import atexit

    from resile.cli import main as cli_main
    from resile.queue.store.base import Store
    from resile.queue.worker import Worker

    events: list[tuple[str, float, float, Any]] = []
    wait = Worker._wait

    def timed_wait(self: Any, timeout: float, *rest: Any) -> None:
        t = time.time()
        wait(self, timeout, *rest)
        events.append(("wait", t, time.time(), [timeout, *rest]))

    Worker._wait = timed_wait  # type: ignore[method-assign]
    patched: set[tuple[type, str]] = set()

    def patch_store(store: Store) -> None:
        cls = type(store)
        for name in TRACED:
            if (cls, name) in patched or not hasattr(cls, name):
                continue
            patched.add((cls, name))
            fn = getattr(cls, name)

            def timed(self: Any, *a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
                t = time.time()
                out = __fn(self, *a, **k)
                n = len(out) if isinstance(out, list) else None
                events.append((__name, t, time.time(), n))
                return out

            setattr(cls, name, timed)

    serve = Worker._serve

    def traced_serve(self: Any, *a: Any, **k: Any) -> None:
        patch_store(self.store)
        serve(self, *a, **k)

    Worker._serve = traced_serve  # type: ignore[method-assign]
    atexit.register(lambda: Path(trace_path).write_text(json.dumps(events)))
    sys.argv = ["resile", *argv]
    with contextlib.suppress(SystemExit):
        cli_main()


def _explain(trace_path: Path, late: list[tuple[float, float, float]], top: int) -> list[str]:
    """For the ``top`` latest retries: the loop's events between the due time and the lease."""
    try:
        events = json.loads(trace_path.read_text())
    except (OSError, ValueError):
        return ["(no trace written)"]
    counts: dict[str, int] = {}
    for name, *_ in events:
        counts[name] = counts.get(name, 0) + 1
    # A timed wait that ran past its timeout: how late the loop's thread got the CPU back.
    overruns = []
    for name, t0, t1, info in events:
        if name == "wait":
            asked = min(x for x in info if isinstance(x, (int, float)))
            if asked > 0 and t1 - t0 >= asked:
                overruns.append((t1 - t0 - asked) * 1000.0)
    out = [
        f"loop events in the run: {json.dumps(counts, sort_keys=True)}",
        f"timed waits that ran out: {len(overruns)}, overrun p50 "
        f"{C.percentile(overruns, 50):.2f} ms, p99 {C.percentile(overruns, 99):.2f} ms, "
        f"max {max(overruns, default=float('nan')):.2f} ms",
    ]
    for lateness, due, start in sorted(late, reverse=True)[:top]:
        out.append(f"retry {lateness:.1f} ms late: due {due:.4f}, leased {start:.4f}")
        for name, t0, t1, info in events:
            if t1 >= due - 0.002 and t0 <= start + 0.001:
                out.append(
                    f"    {name:20} {(t0 - due) * 1000:+8.2f} .. {(t1 - due) * 1000:+8.2f} ms  {info}"
                )
    return out


# -- one measurement (run in a child process, on one tree's code) ---------------------------


def _measure(url: str, n: int, gap: float, delay: float, trace: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="resile-lateness-"))
    (work / "lateness_tasks.py").write_text(TASKS.format(delay=delay))
    sys.path.insert(0, str(work))
    os.environ["BENCH_URL"] = url
    import lateness_tasks  # type: ignore[import-not-found]

    import resile

    queue = lateness_tasks.queue
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(work), *sys.path]))
    cli = "import sys; from resile.cli import main; sys.argv[0] = 'resile'; sys.exit(main())"
    log = open(work / "worker.log", "wb")  # noqa: SIM115 - closed below
    trace_path = work / "trace.json"
    if trace:
        cmd = [sys.executable, str(HERE), "--worker-trace", str(trace_path)]
    else:
        cmd = [sys.executable, "-c", cli]
    worker = subprocess.Popen(
        [*cmd, "worker", "lateness_tasks:queue"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        warm = queue.enqueue("noop", {})
        if not C.wait_for(lambda: queue.get(warm.id).status is resile.TaskStatus.DONE, 60, 0.02):
            return {"error": "the worker ran no warm-up task in 60 s"}
        ids = []
        t0 = time.monotonic()
        for i in range(n):
            # An absolute schedule: the gaps do not drift with the enqueue time.
            pause = t0 + i * gap - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ids.append(queue.enqueue("flaky", {"i": i}).id)

        def finished() -> bool:
            return int(queue.stats()[resile.TaskStatus.DONE]) >= n + 1

        complete = C.wait_for(finished, 60, 0.05)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)
        log.close()
    late: list[float] = []
    timeline: list[tuple[float, float, float]] = []
    for tid in ids:
        task = queue.get(tid)
        if task is None or len(task.history) < 2:
            continue
        first, second = task.history[0], task.history[1]
        if second.started_at is None:
            continue
        raised = first.ended_at
        if first.error is not None and first.error.message.startswith("raised_at="):
            raised = float(first.error.message.partition("=")[2])
        due = raised + delay
        late.append((second.started_at - due) * 1000.0)
        timeline.append((late[-1], due, second.started_at))
    queue.close()
    extra = {"trace": _explain(trace_path, timeline, 5)} if trace else {}
    return {
        **extra,
        "n": n,
        "measured": len(late),
        "complete": complete,
        "p50_ms": C.percentile(late, 50),
        "p90_ms": C.percentile(late, 90),
        "p99_ms": C.percentile(late, 99),
        "max_ms": max(late) if late else None,
        "over_5_ms": sum(1 for x in late if x > 5.0),
        "early": sum(1 for x in late if x < 0),
    }


# -- the orchestrator -------------------------------------------------------------------------


def _run(tree: Path, url: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, str(HERE), "--child", url, "--n", str(args.n),
           "--gap", str(args.gap), "--delay", str(args.delay)]  # fmt: skip
    if args.trace:
        cmd.append("--trace")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd="/")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {"error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,redis", help="also: postgres, mysql")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--compare", type=Path, help="another tree to run alternately")
    parser.add_argument(
        "--trace", action="store_true", help="time the worker's waits and store calls"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--worker-trace", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker_trace:
        _traced_worker(args.worker_trace, rest)
        return
    if args.child:
        try:
            res = _measure(args.child, args.n, args.gap, args.delay, args.trace)
        except Exception as exc:  # one JSON line whatever happens
            res = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(res), flush=True)
        return

    trees = [("this", ROOT)]
    if args.compare is not None:
        trees = [("compare", args.compare.resolve()), *trees]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    redis = C.RedisServer().start() if "redis" in backends else None
    # PostgreSQL and MySQL: a throwaway server each (queue_relational.start_server).
    sql_servers: dict[str, Any] = {}
    for kind in ("postgres", "mysql"):
        if kind in backends:
            from queue_relational import start_server

            sql_servers[kind] = start_server(kind)
    rows: list[tuple[str, str, int, dict[str, Any]]] = []
    scratch = Path(tempfile.mkdtemp(prefix="resile-lateness-db-"))
    try:
        for r in range(args.rounds):
            for label, tree in trees:
                for backend in backends:
                    if backend == "redis":
                        assert redis is not None
                        redis.flush()
                        url = redis.url(0)
                    elif backend in sql_servers:
                        url = sql_servers[backend][1](str(scratch))
                    else:
                        url = f"sqlite:///{scratch / f'{label}-{r}.db'}"
                    res = _run(tree, url, args)
                    rows.append((label, backend, r + 1, res))
                    trace = res.pop("trace", None)
                    print(f"  round {r + 1} {label:8} {backend:6} {json.dumps(res)}", flush=True)
                    for line in trace or ():
                        print("   ", line)
    finally:
        if redis is not None:
            redis.stop()
        for stop, _ in sql_servers.values():
            stop()
    print()
    print(
        textwrap.dedent(f"""\
        Retry lateness, ms (n={args.n} enqueued {args.gap * 1000:g} ms apart, retry after
        {args.delay:g} s, `resile worker` defaults; trees: {", ".join(f"{k}={v}" for k, v in trees)})
        """)
    )
    print("| tree | store | round | p50 | p90 | p99 | max | > 5 ms | early |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, backend, r, res in rows:
        if "error" in res:
            print(f"| {label} | {backend} | {r} | error: {res['error'][:80]} |")
            continue
        print(
            f"| {label} | {backend} | {r} | {res['p50_ms']:.1f} | {res['p90_ms']:.1f} | "
            f"{res['p99_ms']:.1f} | {res['max_ms']:.1f} | {res['over_5_ms']} | {res['early']} |"
        )


if __name__ == "__main__":
    main()
