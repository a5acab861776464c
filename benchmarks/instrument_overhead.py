"""What instrumentation costs a ``@retry`` call: no hook, the Prometheus hook, another tree.

Each measurement runs in a fresh child process (``--child``), so the trees and
the hook settings never share an interpreter; the parent alternates them round
by round and reports the median nanoseconds per call:

  none        this tree, no hook installed
  prometheus  this tree, ``resile.metrics.install()`` on a private registry
  before      ``--compare TREE``: that tree's ``src`` (e.g. main before the hooks), no hook

Scenarios: (a) the sync success path, (b) 3 failures then success, zero waits
(the cost per retry of counting it).

Run: ``.venv/bin/python benchmarks/instrument_overhead.py [--compare /path/to/tree] [--rounds 7]``.
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


def _run(tree: Path, setting: str, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    done = subprocess.run(
        [sys.executable, __file__, "--child", setting, "--n", str(n)],
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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.n)))
        return
    runs: list[tuple[str, Path, str]] = [("none", HERE, "none"), ("prometheus", HERE, "prometheus")]
    if args.compare is not None:
        runs.insert(1, ("before", args.compare.resolve(), "none"))
    samples: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, tree, setting in runs:
            for scenario, ns in _run(tree, setting, args.n).items():
                samples[label].setdefault(scenario, []).append(ns)
    print(f"python {sys.version.split()[0]}, {args.rounds} alternated rounds of {args.n} calls")
    scenarios = list(samples["none"])
    print(f"{'':12}" + "".join(f"{s:>16}" for s in scenarios))
    med = {
        label: {s: statistics.median(v) for s, v in by.items()} for label, by in samples.items()
    }
    for label in samples:
        print(f"{label:12}" + "".join(f"{med[label][s]:>13.1f} ns" for s in scenarios))
    for s in scenarios:
        if "before" in med:
            print(f"{s}: none / before = {med['none'][s] / med['before'][s]:.3f}x")
        extra = med["prometheus"][s] - med["none"][s]
        print(f"{s}: prometheus - none = {extra:+.1f} ns per call")


if __name__ == "__main__":
    main()
