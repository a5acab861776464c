"""Periodic tasks in a FastAPI app: cache cleanup and energy management, as a server runs them.

Two tasks:

* ``cache_cleanup_task`` is started by hand in the app's own lifespan, with
  ``await cache_cleanup_task()``, which starts the loop and returns at once.
  Its first runs fail; ``on_exception`` sees each failure and the loop goes on.
* ``energy_management_task`` is started and stopped by
  ``resile.periodic.lifespan``, wrapped around the app's own lifespan.

Run it with ``python docs/examples/periodic_fastapi.py``: it starts the app
through its lifespan (as a server would), asks ``GET /tasks`` until both
tasks have run a few times, shuts the app down and prints what happened.
Serve ``app`` with any ASGI server (``uvicorn periodic_fastapi:app``) to keep
it running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

import resile.periodic
from resile import Periodic, repeat_every

logger = logging.getLogger("eos")
cache: dict[str, float] = {}
failures_seen: list[str] = []


def cache_cleanup_on_exception(exc: Exception) -> None:
    """Called with every failure of the cleanup task; the loop keeps going."""
    failures_seen.append(repr(exc))


@repeat_every(seconds=0.05, on_exception=cache_cleanup_on_exception)
def cache_cleanup_task() -> None:
    """Drop expired cache entries (a sync function: it runs in a worker thread)."""
    if len(failures_seen) < 2:
        raise OSError("cache directory not mounted yet")
    now = time.monotonic()
    for key in [k for k, expires in cache.items() if expires < now]:
        del cache[key]


@repeat_every(seconds=0.02, wait_first=True)
async def energy_management_task() -> None:
    """Recompute the energy plan (an async function: awaited on the event loop)."""
    cache[f"plan-{time.monotonic()}"] = time.monotonic() + 0.03


@asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lifespan: starts the cleanup loop by hand."""
    app.state.cleanup = await cache_cleanup_task()  # returns at once; runs in the background
    yield
    await app.state.cleanup.stop()  # waits for a run in progress, then the loop is over


# resile.periodic.lifespan starts energy_management_task after app_lifespan's
# startup and stops it before app_lifespan's shutdown.
app = FastAPI(lifespan=resile.periodic.lifespan(energy_management_task, inner=app_lifespan))


@app.get("/tasks")
async def tasks() -> dict[str, Any]:
    """The cleanup task's statistics."""
    cleanup: Periodic = app.state.cleanup
    return {"running": cleanup.running, **cleanup.statistics.as_dict()}


@asynccontextmanager
async def serve_lifespan(app: Any) -> AsyncIterator[None]:
    """Drive the app's ASGI lifespan protocol as a server does."""
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    server = asyncio.ensure_future(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await from_app.get()
    assert message["type"] == "lifespan.startup.complete", message
    yield
    await to_app.put({"type": "lifespan.shutdown"})
    message = await from_app.get()
    assert message["type"] == "lifespan.shutdown.complete", message
    await server


async def main() -> None:
    async with serve_lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://eos") as client:
            deadline = time.monotonic() + 10.0
            while True:
                stats = (await client.get("/tasks")).json()
                if stats["runs"] >= 4 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
        cleanup: Periodic = app.state.cleanup
    print(f"cleanup task: runs={stats['runs']} failures={stats['failures']}")
    print(f"on_exception saw: {failures_seen}")
    print(f"cleanup loop running after shutdown: {cleanup.running}")
    assert stats["runs"] >= 4 and stats["failures"] == 2 and not cleanup.running


if __name__ == "__main__":
    asyncio.run(main())
