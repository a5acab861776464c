"""What each page shows, read from the store contract only (so every backend gets the dashboard).

Each ``*_view`` function is one synchronous read of the store that returns
the page's data as a dict; the app runs it in a thread through
``SharedReads`` and renders it with the page's template (the whole page) or
its live fragment (server-sent events). Nothing here knows HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resile.queue._names import Tally, TaskStatus
from resile.queue.registry import WorkerRecord
from resile.queue.store.base import Quantiles, Store, Timings
from resile.queue.task import Task
from resile.web._counters import Counters
from resile.web._filters import Cursor, TaskFilter, scan

__all__ = [
    "STATUSES",
    "TIMING_WINDOWS",
    "Bar",
    "Chart",
    "LeaseHolder",
    "NotFound",
    "chart",
    "overview_view",
    "slots",
    "task_view",
    "tasks_view",
    "workers_view",
]

STATUSES: tuple[TaskStatus, ...] = tuple(TaskStatus)
# Dead letters listed on the overview; running tasks read to list the workers holding them.
DEAD_LETTERS_SHOWN = 10
LEASES_READ = 1_000


class NotFound(LookupError):
    """The page names something the store does not hold (answered with a 404)."""


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """A worker seen holding leases: what the running tasks say about it."""

    worker: str
    running: int
    queues: tuple[str, ...]
    since: float | None
    lease_expires_at: float | None
    expired: bool


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of an outcome chart: its time and counts, and its stacked rectangles."""

    start: float
    counts: Mapping[Tally, int]
    rects: tuple[tuple[float, float, float, float, str], ...]  # x, y, width, height, tally


@dataclass(frozen=True, slots=True)
class Chart:
    """Outcomes per time step, drawn as stacked bars ``width`` x ``height`` (SVG units)."""

    title: str
    step: int
    bars: tuple[Bar, ...]
    totals: Mapping[Tally, int]
    peak: int
    width: int = 720
    height: int = 120


CHART_WIDTH, CHART_HEIGHT = 720, 120


def chart(
    title: str, tallies: Mapping[int, Mapping[Tally, int]], end: float, step: int, n: int
) -> Chart:
    """``n`` bars of ``step`` seconds ending at ``end``, from ``Store.tallies`` minutes."""
    first = (int(end) // step - n + 1) * step
    sums = [dict.fromkeys(Tally, 0) for _ in range(n)]
    for minute, counts in tallies.items():
        i = (minute - first) // step
        if 0 <= i < n:
            for kind, k in counts.items():
                sums[i][kind] += k
    peak = max((sum(c.values()) for c in sums), default=0)
    width, height = CHART_WIDTH, CHART_HEIGHT
    slot = width / n
    bars = []
    for i, counts in enumerate(sums):
        y = float(height)
        rects = []
        for kind in (Tally.DONE, Tally.RETRIED, Tally.DEAD):
            h = height * counts[kind] / peak if peak else 0.0
            if h > 0:
                y -= h
                rects.append((i * slot + 0.5, y, max(slot - 1.0, 0.5), h, kind.value))
        bars.append(Bar(first + i * step, counts, tuple(rects)))
    totals = {k: sum(c[k] for c in sums) for k in Tally}
    return Chart(title, step, tuple(bars), totals, peak, width, height)


def overview_view(store: Store, counters: Counters | None = None) -> dict[str, Any]:
    """Counts per queue and status, totals, the first dead letters, the paused queues, and
    the day's counters (through ``counters``, which keeps what it read of past minutes)."""
    counters = Counters() if counters is None else counters
    rows: list[tuple[str, Mapping[TaskStatus, int]]] = []
    totals = dict.fromkeys(STATUSES, 0)
    paused = store.paused()
    registered = store.workers()
    kept = store.counts()  # what the store keeps: no scan of the tasks
    for name in sorted(set(kept) | set(paused)):
        counts = kept.get(name) or dict.fromkeys(TaskStatus, 0)
        rows.append((name, counts))
        for status, n in counts.items():
            totals[status] += n
    dead = store.list(status=TaskStatus.FAILED, limit=DEAD_LETTERS_SHOWN)
    return {
        "rows": rows,
        "totals": totals,
        "failed": totals[TaskStatus.FAILED],
        "dead": dead,
        "paused": paused,
        "slots": slots(registered, store.now()),
        "charts": _charts(store, counters),
        "timings": _timings(store, counters, [name for name, _ in rows]),
    }


def _charts(store: Store, counters: Counters) -> tuple[Chart, Chart]:
    now = store.now()
    tallies = counters.tallies(store, now)
    return (
        chart("Last hour, per minute", tallies, now, 60, 60),
        chart("Last day, per hour", tallies, now, 3600, 24),
    )


# The windows the overview's run time and lateness cover: (key, seconds).
TIMING_WINDOWS = (("hour", 3600), ("day", 86_400))
_NONE = Timings(Quantiles(), Quantiles())


def _timings(store: Store, counters: Counters, queues: list[str]) -> dict[str, dict[str, Timings]]:
    """Per queue shown: window -> its ``Timings`` (none counted: n = 0, no percentiles)."""
    now = store.now()
    read = {key: counters.timings(store, now, span) for key, span in TIMING_WINDOWS}
    names = sorted(set(queues).union(*read.values()))
    return {q: {key: got.get(q, _NONE) for key, got in read.items()} for q in names}


def tasks_view(store: Store, flt: TaskFilter, cursor: Cursor | None, limit: int) -> dict[str, Any]:
    """One page of the task list under ``flt``."""
    page = scan(store, flt, cursor=cursor, limit=limit)
    return {"page": page, "filter": flt, "cursor": cursor, "limit": limit}


def task_view(store: Store, task_id: str) -> dict[str, Any]:
    """One task, whole.

    Raises:
        NotFound: no task has this id.
    """
    task = store.get(task_id)
    if task is None:
        raise NotFound(f"no task with id {task_id!r} (it may have been purged)")
    return {"task": task, "now": store.now()}


def _holders(running: list[Task], now: float) -> list[LeaseHolder]:
    by_worker: dict[str, list[Task]] = {}
    for task in running:
        by_worker.setdefault(task.lease_owner or "?", []).append(task)
    out = []
    for worker, tasks in sorted(by_worker.items()):
        starts = [t.started_at for t in tasks if t.started_at is not None]
        expiries = [t.lease_expires_at for t in tasks if t.lease_expires_at is not None]
        latest = max(expiries) if expiries else None
        out.append(
            LeaseHolder(
                worker=worker,
                running=len(tasks),
                queues=tuple(sorted({t.queue for t in tasks})),
                since=min(starts) if starts else None,
                lease_expires_at=latest,
                expired=latest is not None and latest < now,
            )
        )
    return out


def slots(workers: list[WorkerRecord], now: float) -> dict[str, int]:
    """Busy and total slots of the workers that beat, and how many they are."""
    alive = [w for w in workers if w.alive(now)]
    return {
        "workers": len(alive),
        "busy": sum(min(w.running, w.concurrency) for w in alive),
        "total": sum(w.concurrency for w in alive),
    }


def workers_view(store: Store) -> dict[str, Any]:
    """The registered workers (beating or gone) and the lease holders of the running tasks."""
    registered = store.workers()
    running = store.list(status=TaskStatus.DOING, limit=LEASES_READ)
    now = store.now()
    return {
        "registered": registered,
        "slots": slots(registered, now),
        "now": now,
        "holders": _holders(running, now),
        "truncated": len(running) == LEASES_READ,
    }


def schedules_view(store: Store) -> dict[str, Any]:
    """The stored schedules: rule, policies, template, last and next fire, pause state."""
    now = store.now()
    rows = []
    for rec in store.schedules():
        try:
            rule, next_fire = rec.rule.describe(), rec.next_fire()
        except (ValueError, ImportError):  # a rule this process cannot read (no cronsim)
            rule, next_fire = "(unreadable rule)", None
        task = rec.declaration.get("task") or {}
        rows.append(
            {
                "name": rec.name,
                "queue": rec.queue,
                "rule": rule,
                "missed": rec.declaration.get("missed", ""),
                "overlap": rec.declaration.get("overlap", ""),
                "handler": task.get("handler", rec.name),
                "params": json.dumps(task.get("params") or {}, sort_keys=True),
                "last": rec.last,
                "next": None if rec.paused else next_fire,
                "paused": rec.paused,
                "task": rec.task,
            }
        )
    return {"schedules": rows, "now": now}
