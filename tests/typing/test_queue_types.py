"""Queue API usages that ``mypy --strict`` checks (and pytest runs).

``@queue.task`` must keep the function's signature for direct calls, and
``enqueue`` must return a ``Task``. Each ``# type: ignore[code]`` marks a
call that must be rejected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

import resile
from resile import Queue, Task, TaskContext, TaskStatus
from resile.queue import TaskFunction, TaskSpec


def test_queue_api_types() -> None:
    """Decorated handlers keep their signatures; the queue calls return typed values."""
    queue: Queue = resile.connect("sqlite:///:memory:")

    @queue.task(max_retries=2, backoff=resile.Exponential(1.0, max_delay=60), timeout=30)
    def add(a: int, b: int) -> int:
        return a + b

    @queue.task
    async def fetch(url: str, ctx: TaskContext | None = None) -> bytes:
        return url.encode()

    total: int = add(1, 2)
    assert total == 3
    with pytest.raises(TypeError):
        add("1", 2)  # type: ignore[arg-type]
    coro: Coroutine[Any, Any, bytes] = fetch("u")
    assert asyncio.run(coro) == b"u"

    fn: TaskFunction[[int, int], int] = add
    task: Task = fn.enqueue(1, b=2, priority=5)
    status: TaskStatus = task.status
    assert status is TaskStatus.PENDING
    spec: TaskSpec = add.spec(1, 2)
    many: list[Task] = queue.enqueue_many([spec])
    maybe: Task | None = queue.get(task.id)
    counts: dict[TaskStatus, int] = queue.stats()
    canceled: bool = queue.cancel(task.id)
    assert maybe is not None and canceled and counts[TaskStatus.PENDING] == 2 and many
    queue.close()


def test_async_queue_api_types() -> None:
    """The async twins return the same types, awaited."""

    async def main() -> None:
        async with resile.connect("sqlite:///:memory:") as queue:

            @queue.task
            def add(a: int, b: int) -> int:
                return a + b

            task: Task = await add.enqueue_async(1, b=2)
            many: list[Task] = await add.enqueue_many_async([{"a": 1, "b": 2}])
            by_name: Task = await queue.enqueue_async(add, {"a": 3, "b": 4}, priority=1)
            more: list[Task] = await queue.enqueue_many_async([add.spec(5, 6)])
            maybe: Task | None = await queue.get_async(task.id)
            canceled: bool = await queue.cancel_async(by_name.id)
            counts: dict[TaskStatus, int] = await queue.stats_async()
            assert maybe is not None and canceled and many and more
            assert counts[TaskStatus.PENDING] == 3

    asyncio.run(main())


def test_queue_looking_methods_types() -> None:
    """`with` gives the Queue; get / list / stats keep the Store contract's signatures."""
    with resile.connect("sqlite:///:memory:") as queue:
        same: Queue = queue
        tasks: list[Task] = same.list(status=TaskStatus.PENDING, limit=10, after=None)
        maybe: Task | None = same.get("nope")
        counts: dict[TaskStatus, int] = same.stats("default")
        assert tasks == [] and maybe is None and sum(counts.values()) == 0
        with pytest.raises(TypeError):
            same.list(stauts="PENDING")  # type: ignore[call-arg]


def test_periodic_types() -> None:
    """``@queue.periodic`` keeps the function's signature; the schedule API is typed."""
    from datetime import timedelta

    from resile.queue.schedules import ScheduleRecord

    queue: Queue = resile.connect("sqlite:///:memory:")

    @queue.periodic(every=timedelta(minutes=5), missed="latest", overlap="skip", name="refresh")
    def refresh(ctx: TaskContext) -> int:
        when: float | None = ctx.scheduled_for
        return 0 if when is None else 1

    fn: TaskFunction[[TaskContext], int] = refresh
    assert fn.name == "refresh"
    with pytest.raises(ValueError):
        queue.periodic(every=60, missed="sometimes")  # type: ignore[arg-type]
    records: list[ScheduleRecord] = queue.list_schedules()
    assert records == [] and queue.pause_schedule("refresh") is False
    queue.close()
