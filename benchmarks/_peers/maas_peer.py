"""The runner of ``maas-task-backoff-framework`` (its own venv, ``.bench/venvs/maas``).

It imports pebble, APScheduler 3 and GPUtil without declaring them and
installs a top-level ``backoff`` package, hence a venv of its own.

Workers: ``TaskBackoffScheduler(config).start()`` with the framework's
defaults (``SchedulerConfig(interval=10)``, ``batch_size=100``,
``ThreadPoolConfig(concurrency=10, proc_mode="process")``); retries:
``backoff_strategy="fixed"``, ``backoff_interval=1``. A handler returns
``ResultEntity.ok`` / ``ResultEntity.fail``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C
from backoff.scheduler.backoff_scheduler import (
    ResultEntity,
    SchedulerConfig,
    StorageConfig,
    TaskBackoffConfig,
    TaskBackoffScheduler,
    TaskConfig,
    ThreadPoolConfig,
)

URL = os.environ.get(C.ENV_URL, "redis://127.0.0.1:6399/0")
CONCURRENCY = {"e2e": 10, "lateness": 10, "kill": 20}


def make_scheduler(concurrency: int = 10) -> TaskBackoffScheduler:
    u = urlparse(URL)
    config = TaskBackoffConfig()
    config.storage = StorageConfig(
        type="redis", host=u.hostname or "127.0.0.1", port=u.port or 6379,
        database=int((u.path or "/0").lstrip("/") or 0), password="",
    )  # fmt: skip
    config.task = TaskConfig(
        biz_prefix="bench", max_retry_count=3, backoff_strategy="fixed", backoff_interval=1
    )
    config.threadpool = ThreadPoolConfig(
        concurrency=concurrency, exec_timeout=300, proc_mode="process"
    )
    config.scheduler = SchedulerConfig(interval=10)
    return TaskBackoffScheduler(config)


def handler(task: Any) -> Any:
    p = json.loads(task.param)
    kind, i = p["kind"], int(p.get("i", 0))
    if kind == "noop":
        C.mark_done()
    elif kind == "flaky":
        attempt = int(task.retry_count) + 1
        C.mark_event("S", i, attempt)
        if attempt == 1:
            C.mark_event("F", i, 1, time.time() + 1.0)
            return ResultEntity.fail(
                code=-1, message="the first attempt fails", task_id=task.task_id
            )
    elif kind == "sleep2":
        C.mark_event("S", i)
        time.sleep(2.0)
        C.mark_event("D", i)
    return ResultEntity.ok(result={}, task_id=task.task_id)


class MaasPeer(C.Peer):
    name = "maas-task-backoff-framework"

    def __init__(self) -> None:
        self.s = make_scheduler()

    def _create(self, params: dict[str, Any], task_id: str) -> None:
        ok, message = self.s.create_task(params, task_id=task_id)  # it requires an id
        if not ok:
            raise RuntimeError(f"create_task: {message}")

    def enqueue_noop(self, n: int) -> None:
        for k in range(n):
            self._create({"kind": "noop"}, f"noop-{k}")

    def enqueue_flaky(self, i: int) -> None:
        self._create({"kind": "flaky", "i": i}, f"flaky-{i}")

    def fill_sleep(self, n: int) -> None:
        for i in range(n):
            self._create({"kind": "sleep2", "i": i}, f"sleep2-{i}")

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        return [sys.executable, __file__, "worker", str(CONCURRENCY[kind])]

    def settings(self, kind: str, procs: int) -> str:
        return (
            f"1 scheduler, interval 10 s, batch_size 100 (defaults), "
            f"concurrency {CONCURRENCY[kind]}, process mode"
        )

    def inspect(self, n: int) -> dict[str, Any]:
        stats = self.s.get_queue_statistics()
        tasks = stats.get("tasks", {}) if isinstance(stats, dict) else {}
        held = 0
        for status, info in tasks.items():
            if status.lower() in ("pending", "processing", "doing") and isinstance(info, dict):
                held += int(info.get("total", 0))
        return {"stuck": held}


def _worker(concurrency: int) -> None:
    s = make_scheduler(concurrency)
    s.set_custom_task_handler(handler)
    s.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(int(sys.argv[2]))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import maas_peer

        C.main(maas_peer.MaasPeer())
