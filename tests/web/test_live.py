"""Live pages: a store change reaches open pages within a second, at one read per refresh."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from _waits import wait_for
from resile.queue.store.sqlite import SQLiteStore
from resile.queue.task import TaskSpec, TaskStatus
from resile.web._live import SharedReads, sse


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the contract calls the dashboard makes."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.calls[name] += 1

    def counts(self) -> dict[str, dict[TaskStatus, int]]:
        self._count("counts")
        return super().counts()

    def list(self, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        self._count("list")
        return super().list(**kwargs)


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[CountingStore]:
    """A counting SQLite store, closed at the end."""
    store = CountingStore(str(tmp_path / "tasks.db"))
    try:
        yield store
    finally:
        store.close()


def updates(response: httpx.Response) -> Iterator[str]:
    """The data of each ``update`` event of a server-sent event stream."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "":
            if event == "update":
                yield "\n".join(data)
            event, data = None, []


class TestSharedReads:
    @pytest.mark.anyio
    async def test_single_flight(self) -> None:
        """Twenty concurrent readers of a stale view cause one load."""
        reads = SharedReads(1.0)
        release = threading.Event()
        loads = 0

        def load() -> int:
            nonlocal loads
            loads += 1
            release.wait(10)  # held until every reader is waiting on this one read
            return loads

        results: list[int] = []

        async def reader() -> None:
            results.append(await reads.get("k", load))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(reader)
            await wait_all_tasks_blocked()
            release.set()
        assert loads == 1 and results == [1] * 20

    @pytest.mark.anyio
    async def test_fresh_then_stale(self) -> None:
        """An answer is served from memory for ``refresh`` seconds, then read again."""
        now = [100.0]
        reads = SharedReads(0.75, clock=lambda: now[0])
        values = iter(range(10))
        assert await reads.get("k", lambda: next(values)) == 0
        now[0] += 0.7
        assert await reads.get("k", lambda: next(values)) == 0
        assert reads.expires_in("k") == pytest.approx(0.05)
        now[0] += 0.1
        assert await reads.get("k", lambda: next(values)) == 1
        reads.clear()
        assert await reads.get("k", lambda: next(values)) == 2

    @pytest.mark.anyio
    async def test_slow_reads_stay_fresh_longer(self) -> None:
        """A read that took 1 s is served for DUTY seconds: the store is never read back to back."""
        now = [0.0]
        reads = SharedReads(0.75, clock=lambda: now[0])

        def slow() -> str:
            now[0] += 1.0
            return "counts"

        await reads.get("k", slow)
        assert reads.expires_in("k") == pytest.approx(SharedReads.DUTY - 1.0)
        now[0] += SharedReads.DUTY - 1.5
        assert await reads.get("k", lambda: "new") == "counts"

    @pytest.mark.anyio
    async def test_errors_reach_every_waiter(self) -> None:
        """A failed load raises in each caller that waited for it, and is retried when stale."""
        now = [0.0]
        reads = SharedReads(1.0, clock=lambda: now[0])

        def broken() -> int:
            raise OSError("store down")

        for _ in range(2):
            with pytest.raises(OSError, match="store down"):
                await reads.get("k", broken)
        now[0] += 1.0
        assert await reads.get("k", lambda: 5) == 5

    @pytest.mark.anyio
    async def test_bounded_keys(self) -> None:
        """At most ``max_keys`` answers are kept."""
        reads = SharedReads(10.0, max_keys=3)
        for i in range(10):
            await reads.get(i, lambda i=i: i)  # type: ignore[misc]
        assert len(reads._entries) == 3

    def test_sse_format(self) -> None:
        """An event's data spans one ``data:`` line per line of HTML."""
        assert (
            sse("update", "<p>a</p>\n<p>b</p>")
            == "event: update\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
        )


class TestStreams:
    def test_new_task_reaches_an_open_overview(
        self, counting: CountingStore, serve_app: Callable[..., str]
    ) -> None:
        """A task created while the overview's stream is open shows in it within a second."""
        base = serve_app(counting)
        with httpx.Client(base_url=base, timeout=10) as c, c.stream("GET", "/live/overview") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            stream = updates(r)
            assert "No tasks yet." in next(stream)
            created = time.monotonic()
            counting.create(TaskSpec("resize", queue="images"))
            fragment = next(stream)
            latency = time.monotonic() - created
        assert 'href="/tasks?queue=images&amp;status=PENDING">1</a>' in fragment
        assert latency < 1.0, f"the change took {latency:.2f} s to show"

    def test_task_page_stream_follows_its_state(
        self, counting: CountingStore, serve_app: Callable[..., str]
    ) -> None:
        """The task page's stream shows the task leaving PENDING for DOING."""
        task = counting.create(TaskSpec("resize"))
        base = serve_app(counting)
        with (
            httpx.Client(base_url=base, timeout=10) as c,
            c.stream("GET", f"/live/tasks/{task.id}") as r,
        ):
            stream = updates(r)
            assert "s-pending" in next(stream)
            counting.lease("default", "w-9")
            fragment = next(stream)
        assert "s-doing" in fragment and "w-9" in fragment

    def test_many_viewers_one_read_per_refresh(
        self, counting: CountingStore, serve_app: Callable[..., str]
    ) -> None:
        """Eight open overviews for two seconds read the store about once per refresh, not 8x."""
        counting.create(TaskSpec("resize", queue="images"))
        refresh = 0.5
        base = serve_app(counting, refresh=refresh)
        seen = [0] * 8
        stop = threading.Event()

        def viewer(i: int) -> None:
            with (
                httpx.Client(base_url=base, timeout=10) as c,
                c.stream("GET", "/live/overview") as r,
            ):
                for line in r.iter_lines():
                    if line.startswith(("event:", ":")):
                        seen[i] += 1
                    if stop.is_set():
                        return

        threads = [threading.Thread(target=viewer, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: all(n >= 1 for n in seen), 10, "every viewer's first event")
        before = counting.calls["counts"]
        window = 2.0
        stop.wait(window)  # the measurement window itself, not a wait for readiness
        reads = counting.calls["counts"] - before
        stop.set()
        for t in threads:
            t.join(5)
        assert reads <= window / refresh + 2, f"{reads} overview reads in {window} s"
        assert reads >= 2, "the viewers were not refreshed"
        assert min(seen) >= 3, f"every viewer got ticks: {seen}"

    def test_stream_of_an_unknown_task_says_so(
        self, counting: CountingStore, serve_app: Callable[..., str]
    ) -> None:
        """A stream for a task that is gone sends a fragment naming the problem."""
        base = serve_app(counting)
        with httpx.Client(base_url=base, timeout=10) as c, c.stream("GET", "/live/tasks/gone") as r:
            assert "no task with id" in next(updates(r))
