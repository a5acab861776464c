"""What instrumentation costs a ``@retry`` call: no hook, the Prometheus hook, another tree.

Each measurement runs in a fresh child process (``--child``), so the trees and
the hook settings never share an interpreter; the parent alternates them round
by round and reports the median nanoseconds per call:

  none        this tree, no hook installed
  prometheus  this tree, ``resile.metrics.install()`` on a private registry
  before      ``--compare TREE``: that tree's ``src`` (e.g. main before the hooks), no hook

Scenarios: (a) the sync success path, (b) 3 failures then success, zero waits
(the cost per retry of counting it).

``--queue URL`` measures instead a burst worker (thread mode, 10 slots)
draining ``--n`` no-op tasks end to end on that store (``sqlite`` for a fresh
file, or a ``redis://`` URL; each run uses a namespace of its own): tasks per
second, and the worker process's CPU time per task, with and without the
Prometheus hook (and the queue-depth collector) installed.

Run: ``.venv/bin/python benchmarks/instrument_overhead.py [--compare /path/to/tree] [--rounds 7]``
or ``... --queue redis://127.0.0.1:PORT/0 --n 5000``, or ``... --per-task`` (the events a
worker and a producer fire for one task, through the Prometheus hook, timed in-process:
the instrumentation's own CPU per task, without the store's noise).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _child(setting: str, n: int) -> dict[str, float]:
    import resile

    if setting == "prometheus":
        from prometheus_client import CollectorRegistry

        import resile.metrics

        resile.metrics.install(CollectorRegistry())

    left = [0]

    @resile.retry(stop=resile.after_attempts(5), backoff=resile.Constant(0.0))
    def call() -> int:
        if left[0]:
            left[0] -= 1
            raise ConnectionError("flaky")
        return 1

    out: dict[str, float] = {}
    for name, failures, calls in (("success", 0, n), ("3 failures", 3, max(1, n // 20))):
        for _ in range(calls // 10):  # warm up
            left[0] = failures
            call()
        gc.disable()
        start = time.perf_counter_ns()
        for _ in range(calls):
            left[0] = failures
            call()
        elapsed = time.perf_counter_ns() - start
        gc.enable()
        out[name] = elapsed / calls
    return out


def _queue_child(setting: str, n: int, url: str) -> dict[str, float]:
    import tempfile
    import uuid

    import resile
    from resile.queue.worker import Worker

    if url == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='resile-bench-')}/q.db"
    else:
        url = f"{url}{'&' if '?' in url else '?'}namespace=bench-{uuid.uuid4().hex}"
    q = resile.connect(url)

    @q.task(name="noop", max_retries=0)
    def noop() -> None:
        return None

    if setting == "prometheus":
        from prometheus_client import CollectorRegistry

        import resile.metrics

        resile.metrics.install(CollectorRegistry(), store=q.store)
    for start in range(0, n, 1000):
        noop.enqueue_many([{}] * min(1000, n - start))
    wall, cpu = time.perf_counter(), time.process_time()
    worker = Worker(q, mode="thread", concurrency=10)
    worker.run(burst=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert worker.stats.done == n, worker.stats
    q.close()
    return {"tasks/s": n / wall, "cpu us/task": cpu / n * 1e6}


def per_task(n: int, repeats: int) -> dict[str, float]:
    """Nanoseconds of instrumentation with the Prometheus hook, fastest of ``repeats``:
    what a worker spends on one task that succeeds at once (attempt started, attempt
    finished), what it spends once a loop round (the slots report), and what the
    producer spends on the enqueue (created)."""
    import timeit

    from prometheus_client import CollectorRegistry

    import resile.metrics
    from resile import instrument
    from resile.instrument import AttemptOutcome, Kind, SlotsEvent
    from resile.queue import TaskSpec
    from resile.queue.store._codec import created_task

    resile.metrics.install(CollectorRegistry())
    task = created_task(TaskSpec("noop"), "t-1", 1, 0.0, 0.0)
    ok = AttemptOutcome.SUCCEEDED

    def worker() -> None:  # what Worker._started and Worker._finished emit
        if instrument.hooks:
            if instrument.wants[Kind.TASK_LEASED]:
                instrument.emit(instrument.for_task(Kind.TASK_LEASED, task, worker_id="w"))
            instrument.emit(
                instrument.for_task(Kind.ATTEMPT_STARTED, task, worker_id="w", lateness=0.001)
            )
            instrument.emit(
                instrument.for_task(
                    Kind.ATTEMPT_FINISHED, task, worker_id="w", outcome=ok, duration=0.002
                )
            )

    def round_() -> None:
        instrument.emit(SlotsEvent(Kind.WORKER_SLOTS, "default", 10, 1, "w"))

    def producer() -> None:
        if instrument.hooks:
            instrument.emit(instrument.for_task(Kind.TASK_CREATED, task))

    def best(fn: Callable[[], None]) -> float:
        return min(timeit.repeat(fn, number=n, repeat=repeats)) / n * 1e9

    return {
        "worker, per task": best(worker),
        "worker, per loop round": best(round_),
        "producer, per enqueue": best(producer),
    }


def _run(tree: Path, setting: str, n: int, url: str | None = None) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    queue = [] if url is None else ["--queue", url]
    done = subprocess.run(
        [sys.executable, __file__, "--child", setting, "--n", str(n), *queue],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compare", type=Path, help="another checkout to measure with no hook")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=200_000, help="calls per measurement")
    parser.add_argument("--queue", help="measure a burst worker on this store instead")
    parser.add_argument(
        "--per-task", action="store_true", help="the instrumentation's own cost per queue task"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.per_task:
        import timeit

        costs = per_task(min(args.n, 50_000), max(args.rounds, 5))
        floor = min(timeit.repeat("f()", "def f(): pass", number=1_000_000, repeat=5)) * 1e3
        print(f"instrumentation with the Prometheus hook (fastest of {max(args.rounds, 5)}):")
        for what, ns in costs.items():
            print(f"  {what}: {ns:.0f} ns")
        print(f"(an empty Python function call on this machine now: {floor:.1f} ns)")
        return
    if args.child:
        if args.queue:
            print(json.dumps(_queue_child(args.child, args.n, args.queue)))
        else:
            print(json.dumps(_child(args.child, args.n)))
        return
    runs: list[tuple[str, Path, str]] = [("none", HERE, "none"), ("prometheus", HERE, "prometheus")]
    if args.compare is not None:
        runs.insert(1, ("before", args.compare.resolve(), "none"))
    samples: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, tree, setting in runs:
            for scenario, ns in _run(tree, setting, args.n, args.queue).items():
                samples[label].setdefault(scenario, []).append(ns)
    print(f"python {sys.version.split()[0]}, {args.rounds} alternated rounds of {args.n} calls")
    scenarios = list(samples["none"])
    print(f"{'':12}" + "".join(f"{s:>16}" for s in scenarios))
    med = {label: {s: statistics.median(v) for s, v in by.items()} for label, by in samples.items()}
    unit = "" if args.queue else " ns"
    for label in samples:
        print(f"{label:12}" + "".join(f"{med[label][s]:>13.1f}{unit}" for s in scenarios))
    if not args.queue:  # on a busy machine the fastest round is the least disturbed one
        best = {label: {s: min(v) for s, v in by.items()} for label, by in samples.items()}
        print("fastest round:")
        for label in samples:
            print(f"{label:12}" + "".join(f"{best[label][s]:>13.1f}{unit}" for s in scenarios))
        for s in scenarios:
            if "before" in best:
                ratio = best["none"][s] / best["before"][s]
                print(f"{s}: none / before = {ratio:.3f}x (fastest rounds)")
            extra = best["prometheus"][s] - best["none"][s]
            print(f"{s}: prometheus - none = {extra:+.1f} ns per call (fastest rounds)")
        print("medians:")
    if args.queue:
        for label in samples:
            cpus = " ".join(f"{v:.1f}" for v in samples[label]["cpu us/task"])
            print(f"{label:12} cpu us/task per round: {cpus}")
        rate, cpu = med["prometheus"]["tasks/s"], med["prometheus"]["cpu us/task"]
        print(f"metrics on / off, throughput: {rate / med['none']['tasks/s']:.3f}x")
        print(f"metrics on - off, CPU per task: {cpu - med['none']['cpu us/task']:+.1f} us")
        return
    for s in scenarios:
        if "before" in med:
            print(f"{s}: none / before = {med['none'][s] / med['before'][s]:.3f}x")
        extra = med["prometheus"][s] - med["none"][s]
        print(f"{s}: prometheus - none = {extra:+.1f} ns per call")


if __name__ == "__main__":
    main()
