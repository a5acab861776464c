"""Durable schedules across real processes: three `resile worker`s, one killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import resile
from _backends import BACKENDS, SHARED_BACKENDS
from _waits import wait_for
from resile.queue import TaskStatus
from resile.queue.schedules import parse_tick_id

APP = """
import os
import resile

queue = resile.connect(os.environ["FLEET_URL"])


@queue.periodic(every=1, name="beat")
def beat(ctx: resile.TaskContext) -> int:
    with open(os.environ["FLEET_LOG"], "a") as log:  # one line per run: fire time, pid
        log.write(f"{ctx.scheduled_for!r} {os.getpid()}\\n")
    return os.getpid()
"""

RUN_FOR = 10.0  # seconds of ticks watched
KILL_AT = 4.0  # one worker is killed this long into them


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(SHARED_BACKENDS))
def test_three_workers_fire_every_tick_exactly_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Three worker processes on one store run a 1 s schedule for 10 s while one of them is
    killed with SIGKILL: every tick has exactly one task and ran once, with no gap."""
    url = BACKENDS[backend](request, tmp_path)
    (tmp_path / "fleetapp.py").write_text(textwrap.dedent(APP))
    log = tmp_path / "runs.log"
    env = {**os.environ, "FLEET_URL": url, "FLEET_LOG": str(log), "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "resile", "worker", "fleetapp:queue", "--concurrency", "2"]
    errs = [tmp_path / f"worker{i}.err" for i in range(3)]
    procs = []
    for err in errs:
        with err.open("w") as sink:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=sink))
    q = resile.connect(url)
    try:
        wait_for(lambda: len(q.store.workers()) == 3, timeout=60, what="three workers")
        started = time.time()
        wait_for(lambda: time.time() >= started + KILL_AT, timeout=KILL_AT + 5, what="kill time")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        wait_for(lambda: time.time() >= started + RUN_FOR, timeout=RUN_FOR + 5, what="the run")
        stopped = time.time()
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            assert p.wait(timeout=60) == 0, [e.read_text() for e in errs]
        ticks = {}
        for task in q.list(limit=1000):
            tick = parse_tick_id(task.id)
            assert tick is not None and tick[0] == "beat"
            ticks[tick[1]] = task
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        q.close()
    # A tick is enqueued 0.2 s before its time: one due after the stop is left PENDING.
    late = [t for t in ticks if t >= stopped and ticks[t].status is TaskStatus.PENDING]
    fired = sorted(t for t in ticks if t not in late)
    assert len(late) <= 1
    window = [t for t in fired if started <= t <= started + RUN_FOR - 1]
    assert len(window) >= RUN_FOR - 2, fired
    assert fired == [fired[0] + i for i in range(len(fired))], "a tick is missing"
    runs = [float(line.split()[0]) for line in log.read_text().splitlines()]
    assert len(runs) == len(set(runs)), "a tick ran twice"
    # A tick the killed worker was running stays DOING until its lease lapses (20 s).
    held = [t for t in fired if ticks[t].status is TaskStatus.DOING]
    assert len(held) <= 1
    assert sorted(runs) == [t for t in fired if t not in held] or set(runs) == set(fired)
    assert all(ticks[t].status is TaskStatus.DONE for t in fired if t not in held)
