"""``make demo`` / ``resile demo``: the durable queue against a flaky service.

A few hundred tasks call a simulated service that fails 30 % of the time
(``--failure-rate``) after a random latency (``--latency``); a few poison
tasks always fail. Workers (threads, or several worker processes on the one
SQLite file) retry each failure on ``Exponential(0.05, max_delay=1)`` with
full jitter, up to 4 retries, then dead-letter it. A live bar shows done /
retrying / dead; a summary table ends the run with attempts, retries, dead
letters, retry lateness (start - due, measured by each retry from its task's
stored due time) and throughput.

``resile demo --retry`` runs the small in-process ``@retry`` demo instead.
Run ``python -m resile.demo --help`` (or ``resile demo --help``) for the flags;
they are parsed here (standard library), so the demo needs no ``cli`` extra.
The output uses ``rich`` when it is installed and falls back to plain lines,
also when stdout is not a terminal (CI).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import resile
from resile.queue._names import TaskStatus
from resile.queue.api import Queue
from resile.queue.context import TaskContext
from resile.queue.task import Task

__all__ = ["DemoConfig", "Summary", "build_queue", "main", "retry_demo", "run"]

HANDLER = "demo.call_service"
QUEUE = "demo"
BACKOFF = resile.Exponential(0.05, max_delay=1.0)
MAX_RETRIES = 4
# Worker processes read their settings from these (the parent sets them).
_ENV = {
    "db": "RESILE_DEMO_DB",
    "failure_rate": "RESILE_DEMO_FAILURE_RATE",
    "latency": "RESILE_DEMO_LATENCY",
    "seed": "RESILE_DEMO_SEED",
}


@dataclass(frozen=True)
class DemoConfig:
    """The simulated service: how often it fails and how slow it is.

    Attributes:
        failure_rate: probability that one call fails (0 <= p < 1).
        latency: mean seconds per call (exponentially distributed, capped at 5x).
        seed: makes each (task, attempt) outcome reproducible.
    """

    failure_rate: float = 0.3
    latency: float = 0.2
    seed: int = 0


_config = DemoConfig()


def _call_service(n: int, poison: bool, ctx: TaskContext) -> dict[str, Any]:
    """One call of the flaky service; retries record how late they started."""
    started = time.time()
    cfg = _config
    if ctx.attempt > 1:
        saved = ctx.checkpoint if isinstance(ctx.checkpoint, dict) else {}
        ctx.save_checkpoint({"late": [*saved.get("late", []), started - ctx.task.due_at]})
    rng = random.Random(f"{cfg.seed}:{n}:{ctx.attempt}")
    if cfg.latency > 0:
        time.sleep(min(rng.expovariate(1.0 / cfg.latency), 5 * cfg.latency))
    if poison:
        raise RuntimeError(f"500 Internal Server Error: task {n}'s payload crashes the service")
    if rng.random() < cfg.failure_rate:
        raise ConnectionError("503 Service Unavailable")
    return {"n": n, "attempt": ctx.attempt}


def build_queue(url: str) -> Queue:
    """A queue on ``url`` with the demo's handler registered."""
    queue = resile.connect(url, queue=QUEUE)
    queue.task(name=HANDLER, backoff=BACKOFF, max_retries=MAX_RETRIES)(_call_service)
    return queue


def __getattr__(name: str) -> Any:
    """``resile.demo:queue`` for the demo's worker processes (settings from the environment)."""
    if name != "queue":
        raise AttributeError(name)
    global _config
    _config = DemoConfig(
        failure_rate=float(os.environ[_ENV["failure_rate"]]),
        latency=float(os.environ[_ENV["latency"]]),
        seed=int(os.environ[_ENV["seed"]]),
    )
    queue = build_queue(f"sqlite:///{os.environ[_ENV['db']]}")
    globals()["queue"] = queue
    return queue


# -- reporting --------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a demo run did, read back from the store."""

    tasks: int
    done: int
    dead: int
    poison_dead: int
    attempts: int
    lateness: list[float]
    seconds: float

    @property
    def retries(self) -> int:
        """Attempts beyond each task's first."""
        return self.attempts - self.tasks

    @property
    def throughput(self) -> float:
        """Finished tasks per second of wall time."""
        return (self.done + self.dead) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The ``q``-quantile of the retry lateness in seconds, ``None`` without retries."""
        if not self.lateness:
            return None
        if len(self.lateness) == 1:
            return self.lateness[0]
        cuts = statistics.quantiles(self.lateness, n=1000, method="inclusive")
        return cuts[min(998, max(0, round(q * 1000) - 1))]

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows."""

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.1f} ms"

        return [
            ("tasks", str(self.tasks)),
            ("done", str(self.done)),
            ("attempts", str(self.attempts)),
            ("retries", str(self.retries)),
            ("dead letters", f"{self.dead} ({self.poison_dead} poison)"),
            ("retry start - due p50", ms(self.percentile(0.50))),
            ("retry start - due p99", ms(self.percentile(0.99))),
            ("retry start - due max", ms(max(self.lateness) if self.lateness else None)),
            ("wall time", f"{self.seconds:.2f} s"),
            ("throughput", f"{self.throughput:.1f} tasks/s"),
        ]


def _all_tasks(queue: Queue) -> list[Task]:
    out: list[Task] = []
    after: int | None = None
    while True:
        page = queue.list(queue=QUEUE, limit=500, after=after)
        out.extend(page)
        if len(page) < 500:
            return out
        after = page[-1].sequence


def _summarize(queue: Queue, seconds: float) -> Summary:
    tasks = _all_tasks(queue)
    lateness: list[float] = []
    for t in tasks:
        if isinstance(t.checkpoint, dict):
            lateness.extend(float(x) for x in t.checkpoint.get("late", []))
    dead = [t for t in tasks if t.status is TaskStatus.FAILED]
    return Summary(
        tasks=len(tasks),
        done=sum(1 for t in tasks if t.status is TaskStatus.DONE),
        dead=len(dead),
        poison_dead=sum(1 for t in dead if t.params.get("poison")),
        attempts=sum(t.attempts for t in tasks),
        lateness=lateness,
        seconds=seconds,
    )


def _counts(queue: Queue) -> dict[str, int]:
    counts = dict.fromkeys(("done", "dead", "running", "retrying", "retries"), 0)
    for t in _all_tasks(queue):
        counts["retries"] += max(0, t.attempts - 1)
        if t.status is TaskStatus.DONE:
            counts["done"] += 1
        elif t.status is TaskStatus.FAILED:
            counts["dead"] += 1
        elif t.status is TaskStatus.DOING:
            counts["running"] += 1
        if t.attempts > (0 if t.status is TaskStatus.PENDING else 1) and not t.terminal:
            counts["retrying"] += 1
    return counts


class _Display:
    """A live rich progress bar on a terminal; a plain line per second elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.rich: Any = None
        self._last_line = 0.0
        self._start = time.monotonic()
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        console = Console()
        if not console.is_terminal:
            return
        self.rich = Progress(
            TextColumn("[bold]queue[/]"),
            BarColumn(bar_width=36, complete_style="green", finished_style="green"),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("[green]done {task.fields[done]}[/]"),
            TextColumn("[cyan]running {task.fields[running]}[/]"),
            TextColumn("[yellow]retrying {task.fields[retrying]}[/]"),
            TextColumn("[magenta]retries {task.fields[retries]}[/]"),
            TextColumn("[red]dead {task.fields[dead]}[/]"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=10,
        )
        self.rich.start()
        self._bar = self.rich.add_task(
            "queue", total=total, done=0, running=0, retrying=0, retries=0, dead=0
        )

    def update(self, counts: dict[str, int], final: bool = False) -> None:
        finished = counts["done"] + counts["dead"]
        if self.rich is not None:
            self.rich.update(self._bar, completed=finished, **counts)
            return
        now = time.monotonic()
        if final or now - self._last_line >= 1.0:
            self._last_line = now
            print(
                f"  t={now - self._start:5.1f}s  finished {finished}/{self.total}  "
                f"done {counts['done']}  running {counts['running']}  "
                f"retrying {counts['retrying']}  dead {counts['dead']}  "
                f"retries so far {counts['retries']}",
                flush=True,
            )

    def close(self) -> None:
        if self.rich is not None:
            self.rich.stop()


def _print_summary(summary: Summary, setup: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"resile demo summary ({setup})")
        for label, value in summary.rows():
            print(f"  {label:<20} {value}")
        return
    table = Table(title="resile demo: summary", caption=setup, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for label, value in summary.rows():
        table.add_row(label, value)
    Console().print(table)


# -- running ----------------------------------------------------------------------------------


def _reset(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + suffix).unlink()


def run(
    *,
    tasks: int = 300,
    failure_rate: float = 0.3,
    latency: float = 0.2,
    workers: int = 10,
    processes: int = 1,
    poison: int = 5,
    seed: int | None = None,
    db_path: str | None = None,
    dashboard: int | None = None,
) -> int:
    """Run the demo; returns the exit code (0 when every task finished, DONE or dead).

    Args:
        tasks: how many tasks (poison ones included).
        failure_rate: probability that one service call fails.
        latency: mean seconds per call.
        workers: concurrent attempts per worker process (threads).
        processes: 1 runs the worker in this process; more start that many
            ``resile worker`` processes on the same SQLite file.
        poison: tasks that always fail (they end dead after 4 retries).
        seed: reproducible failures (default: random).
        db_path: the SQLite file, reset at start (default: a temporary file, removed at the end).
        dashboard: a port (0: any free one): serve the dashboard on 127.0.0.1 from the
            start, and keep it open after the summary until Ctrl-C (needs ``resile[web]``).

    Raises:
        ValueError: a value out of range, named with its value.
    """
    global _config
    if tasks < 1 or not 0 <= poison <= tasks:
        raise ValueError(f"demo: need tasks >= 1 and 0 <= poison <= tasks, got {tasks}, {poison}")
    if not 0 <= failure_rate < 1 or latency < 0 or workers < 1 or processes < 1:
        raise ValueError(
            "demo: need 0 <= failure_rate < 1, latency >= 0, workers >= 1, processes >= 1; got "
            f"{failure_rate}, {latency}, {workers}, {processes}"
        )
    seed = random.randrange(1_000_000) if seed is None else seed
    tmpdir = None
    if db_path is None:
        tmpdir = tempfile.mkdtemp(prefix="resile-demo-")
        path = Path(tmpdir) / "resile-demo.db"
    else:
        path = Path(db_path).resolve()
        _reset(path)
    _config = DemoConfig(failure_rate=failure_rate, latency=latency, seed=seed)
    queue = build_queue(f"sqlite:///{path}")
    setup = (
        f"{tasks} tasks, {poison} poison, failure rate {failure_rate:.0%}, latency ~{latency * 1000:g} ms, "
        f"{processes} process(es) x {workers} threads, seed {seed}"
    )
    print(f"resile demo: {setup}")
    board = None
    if dashboard is not None:
        from resile.web import Background

        board = Background(f"sqlite:///{path}", port=dashboard)
        print(f"  dashboard: {board.start()}", flush=True)
    print(
        f"  store {path} · backoff Exponential(0.05 s, x2, cap 1 s, full jitter) · "
        f"max_retries {MAX_RETRIES}",
        flush=True,
    )
    rng = random.Random(seed)
    poisoned = set(rng.sample(range(tasks), poison))
    fn = queue.handlers[HANDLER]
    fn.enqueue_many(
        [{"n": n, "poison": n in poisoned} for n in range(tasks)],
        ids=[f"job-{n:04d}" for n in range(tasks)],
    )
    display = _Display(tasks)
    started = time.monotonic()
    stop: threading.Event | None = None
    children: list[subprocess.Popen[bytes]] = []
    worker: Any = None
    thread: threading.Thread | None = None
    try:
        if processes == 1:
            worker = resile.Worker(queue, concurrency=workers, mode="thread")
            thread = threading.Thread(target=worker.run, kwargs={"burst": True}, daemon=True)
            thread.start()
        else:
            env = dict(
                os.environ,
                **{
                    _ENV["db"]: str(path),
                    _ENV["failure_rate"]: repr(failure_rate),
                    _ENV["latency"]: repr(latency),
                    _ENV["seed"]: str(seed),
                },
            )
            cmd = [sys.executable, "-m", "resile", "worker", "resile.demo:queue"]
            cmd += ["--concurrency", str(workers), "--burst"]
            children = [
                subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL) for _ in range(processes)
            ]
        stop = threading.Event()
        while True:
            counts = _counts(queue)
            display.update(counts)
            if counts["done"] + counts["dead"] >= tasks:
                break
            if thread is not None and not thread.is_alive():
                break
            if children and all(c.poll() is not None for c in children):
                break
            stop.wait(0.2)
        elapsed = time.monotonic() - started
        display.update(_counts(queue), final=True)
    except KeyboardInterrupt:
        display.close()
        print("resile demo: interrupted")
        if board is not None:
            board.stop()
        return 130
    finally:
        display.close()
        if worker is not None:
            worker.stop()
        if thread is not None:
            thread.join(10)
        for c in children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    summary = _summarize(queue, elapsed)
    queue.close()
    _print_summary(summary, f"{processes} process(es) x {workers} threads")
    print("(a retry's start - due includes its wait for a free thread)")
    if board is not None:
        print(f"the dashboard stays open at {board.url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()  # until Ctrl-C (SIGINT)
        except KeyboardInterrupt:
            pass
        finally:
            board.stop()
    elif tmpdir is None:
        print(f"see it in the dashboard: resile dashboard --db sqlite:///{path}")
    else:
        print(
            "see it in the dashboard: resile demo --dashboard "
            "(or resile demo --db demo.db, then resile dashboard --db sqlite:///demo.db)"
        )
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0 if summary.done + summary.dead == summary.tasks else 1


def retry_demo(*, failures: int = 4, seed: int | None = None) -> int:
    """The small in-process demo: a flaky call retried by ``@resile.retry``; returns 0."""
    start = time.monotonic()
    left = failures

    def log_retry(state: resile.RetryState) -> None:
        print(
            f"  t={time.monotonic() - start:6.3f}s  attempt {state.attempt} failed: "
            f"{state.exception!r}; next in {state.next_delay * 1000:6.1f} ms"
        )

    @resile.retry(
        on=ConnectionError,
        backoff=resile.Exponential(0.05, max_delay=1.0, seed=seed),
        stop=resile.after_attempts(failures + 2) | resile.after_elapsed(30),
        on_retry=log_retry,
    )
    def call_flaky_service() -> str:
        nonlocal left
        if left:
            left -= 1
            raise ConnectionError("service unavailable")
        return "200 OK"

    print("resile retry demo: Exponential(0.05 s, x2, cap 1 s, full jitter)")
    result = call_flaky_service()
    print(f"  t={time.monotonic() - start:6.3f}s  succeeded: {result}")
    print(f"  statistics: {call_flaky_service.statistics}")  # type: ignore[attr-defined]
    return 0


def _number(kind: type[int] | type[float], low: float, high: float | None = None) -> Any:
    """An argparse type: a ``kind`` number with ``low <= x`` (and ``x < high``), else a usage error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < low or (high is not None and value >= high):
            bound = f">= {low:g}" + ("" if high is None else f" and < {high:g}")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


def _parser(prog: str = "python -m resile.demo") -> argparse.ArgumentParser:
    """The demo's flags (``resile demo`` and ``python -m resile.demo`` take the same)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="The queue against a flaky service: live progress, then a summary (make demo).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--tasks", type=_number(int, 1), default=300, help="How many tasks.")
    p.add_argument(
        "--failure-rate",
        type=_number(float, 0, 1),
        default=0.3,
        help="Probability that one service call fails.",
    )
    p.add_argument(
        "--latency",
        type=_number(float, 0),
        default=0.2,
        metavar="SECONDS",
        help="Mean latency of the simulated service.",
    )
    p.add_argument(
        "--workers", type=_number(int, 1), default=10, help="Threads per worker process."
    )
    p.add_argument(
        "--processes",
        type=_number(int, 1),
        default=1,
        help="Worker processes on the one SQLite file.",
    )
    p.add_argument("--poison", type=_number(int, 0), default=5, help="Tasks that always fail.")
    p.add_argument("--seed", type=int, default=None, help="Seed of the simulated failures.")
    p.add_argument(
        "--db",
        dest="db_path",
        default=None,
        metavar="PATH",
        help="The SQLite file (default: a temporary one; reset at start).",
    )
    p.add_argument(
        "--dashboard",
        nargs="?",
        type=_number(int, 0, 65535),
        const=8080,
        default=None,
        metavar="PORT",
        help="Serve the dashboard on 127.0.0.1:PORT (default 8080; 0: any free port) while the "
        "demo runs, and keep it open after the summary until Ctrl-C (pip install 'resile[web]').",
    )
    p.add_argument(
        "--retry",
        dest="retry_demo",
        action="store_true",
        help="Run the small @retry demo instead.",
    )
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m resile.demo") -> int:
    """``python -m resile.demo [flags]`` and ``resile demo [flags]``; returns the exit code.

    A bad flag value prints a usage error naming the flag and returns 2; a
    ``--db`` file that cannot be made or opened prints one line naming it
    and returns 1.
    """
    p = _parser(prog)
    try:
        args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.poison > args.tasks:
            p.error(
                f"argument --poison: {args.poison} poison tasks is more than --tasks {args.tasks}"
            )
    except SystemExit as exc:  # argparse exits: 0 after --help, 2 on a usage error
        return exc.code if isinstance(exc.code, int) else 2
    if args.retry_demo:
        return retry_demo(seed=args.seed)
    options = vars(args)
    del options["retry_demo"]
    try:
        return run(**options)
    except (sqlite3.Error, OSError) as exc:  # the --db file cannot be made or opened
        where = args.db_path if args.db_path is not None else "the temporary store"
        print(f"{prog}: error: --db {where}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
