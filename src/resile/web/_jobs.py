"""Bulk actions on everything a filter matches: bounded batches in a thread, with progress.

A job scans the filter's tasks one bounded page at a time (``scan_all``) and
applies its action to each task of the batch, one atomic store call per
task, so any task that changed state meanwhile is simply skipped by the
store. Its progress (scanned, changed, skipped) is readable at any time and
the job can be stopped between batches.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from resile.queue.store.base import Store
from resile.queue.task import Task
from resile.web._filters import TaskFilter, scan_all

__all__ = ["Job", "Jobs"]

audit = logging.getLogger("resile.web.audit")


@dataclass(frozen=True, slots=True)
class Job:
    """A bulk action's progress (a snapshot; ``Jobs.get`` returns the latest one).

    Attributes:
        state: ``running``, ``done``, ``stopped`` or ``failed``.
        expected: how many tasks the filter matched when the job started, when known cheaply.
        changed: tasks the action changed; ``skipped``: matched, but in another state by then.
    """

    id: str
    action: str
    filter: TaskFilter
    client: str
    started_at: float
    state: str = "running"
    expected: int | None = None
    changed: int = 0
    skipped: int = 0
    batches: int = 0
    finished_at: float | None = None
    error: str | None = None

    @property
    def done(self) -> int:
        """Tasks handled so far."""
        return self.changed + self.skipped

    @property
    def percent(self) -> float | None:
        """Progress in percent, when the number expected is known."""
        if self.state == "done":
            return 100.0
        if not self.expected:
            return None
        return min(100.0, 100.0 * self.done / self.expected)


class Jobs:
    """The bulk jobs of one dashboard: start, read, stop.

    Args:
        store: where the tasks are.
        batch: tasks per batch (each batch is one bounded scan, then one call per task).
        keep: finished jobs remembered at most.
    """

    def __init__(self, store: Store, *, batch: int = 200, keep: int = 100) -> None:
        self.store = store
        self.batch = batch
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(
        self,
        action: str,
        apply: Callable[[Task], bool],
        flt: TaskFilter,
        *,
        client: str,
        expected: int | None = None,
        on_batch: Callable[[], None] = lambda: None,
    ) -> Job:
        """Run ``apply`` on every task ``flt`` matches, in a thread; returns the job at once.

        ``apply(task)`` returns True when it changed the task. ``on_batch`` runs after each batch.
        """
        job = Job(
            id=uuid.uuid4().hex[:16],
            action=action,
            filter=flt,
            client=client,
            started_at=time.time(),
            expected=expected,
        )
        stop = threading.Event()
        with self._lock:
            self._jobs[job.id] = job
            self._stops[job.id] = stop
            while len(self._jobs) > self.keep:
                old = next(iter(self._jobs))
                if self._jobs[old].state == "running":
                    break
                self._jobs.pop(old)
                self._stops.pop(old, None)
                self._threads.pop(old, None)
        thread = threading.Thread(
            target=self._run,
            args=(job.id, apply, flt, stop, on_batch),
            name=f"resile-web-job-{job.id}",
            daemon=True,
        )
        with self._lock:
            self._threads[job.id] = thread
        thread.start()
        return job

    def _update(self, job_id: str, **changes: object) -> Job:
        with self._lock:
            job = self._jobs[job_id] = replace(self._jobs[job_id], **changes)  # type: ignore[arg-type]
            return job

    def _run(
        self,
        job_id: str,
        apply: Callable[[Task], bool],
        flt: TaskFilter,
        stop: threading.Event,
        on_batch: Callable[[], None],
    ) -> None:
        job = self._jobs[job_id]
        changed, skipped, batches = 0, 0, 0
        try:
            for tasks in scan_all(self.store, flt, batch=self.batch, stop=stop.is_set):
                ids = []
                for task in tasks:
                    if apply(task):
                        changed += 1
                        ids.append(task.id)
                    else:
                        skipped += 1
                batches += 1
                job = self._update(job_id, changed=changed, skipped=skipped, batches=batches)
                audit.info(
                    "bulk %s job=%s batch=%d changed=%s client=%s",
                    job.action,
                    job_id,
                    batches,
                    ",".join(ids),
                    job.client,
                )
                on_batch()
        except Exception as exc:
            job = self._update(job_id, state="failed", error=repr(exc), finished_at=time.time())
            audit.warning("bulk %s job=%s failed: %r", job.action, job_id, exc)
            return
        job = self._update(
            job_id, state="stopped" if stop.is_set() else "done", finished_at=time.time()
        )
        audit.info(
            "bulk %s job=%s %s: changed=%d skipped=%d filter=%s client=%s",
            job.action,
            job_id,
            job.state,
            changed,
            skipped,
            flt.to_params(),
            job.client,
        )

    def get(self, job_id: str) -> Job | None:
        """The job's latest progress, or ``None`` for an unknown id."""
        with self._lock:
            return self._jobs.get(job_id)

    def stop(self, job_id: str) -> bool:
        """Ask a running job to stop after its current batch; False for an unknown id."""
        with self._lock:
            event = self._stops.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop every job and wait (up to ``timeout`` seconds each) for its thread."""
        with self._lock:
            stops = list(self._stops.values())
            threads = list(self._threads.values())
        for event in stops:
            event.set()
        for thread in threads:
            thread.join(timeout)
