"""Enqueue from async code: a FastAPI app that stores tasks without blocking its event loop.

``POST /emails`` enqueues with ``await send_email.enqueue_async(...)`` and
``GET /emails/{id}`` reads the task with ``await queue.get_async(...)``. On
Redis under asyncio these use an asyncio client of the running loop; on SQLite
(or under trio) the store call runs in a worker thread. The queue is closed in
the app's lifespan with ``await queue.aclose()``.

Run it with ``python docs/examples/queue_fastapi.py`` (a SQLite file in a
temporary directory) or with ``RESILE_URL=redis://localhost:6379/0`` set: it
starts the app through its lifespan, posts three emails, lets a worker drain
the queue, reads the three tasks back and prints their status.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

import resile

URL = os.environ.get("RESILE_URL") or f"sqlite:///{tempfile.mkdtemp()}/tasks.db"
queue = resile.connect(URL)
sent: list[str] = []


@queue.task(backoff=resile.Exponential(0.5, max_delay=30), max_retries=5)
def send_email(to: str, subject: str) -> dict[str, str]:
    """The handler: runs in a worker (here one started in this process, for the demo)."""
    sent.append(to)
    return {"to": to, "status": "sent"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with queue:  # at shutdown: await queue.aclose()
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/emails")
async def post_email(to: str, subject: str) -> dict[str, str]:
    task = await send_email.enqueue_async(to=to, subject=subject)
    return {"id": task.id, "status": task.status.value}


@app.get("/emails/{task_id}")
async def get_email(task_id: str) -> dict[str, Any]:
    task = await queue.get_async(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}")
    return {"id": task.id, "status": task.status.value, "result": task.result}


async def main() -> None:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            ids = []
            for to in ("ada@example.com", "bob@example.com", "cy@example.com"):
                reply = (await client.post("/emails", params={"to": to, "subject": "hi"})).json()
                ids.append(reply["id"])
            await asyncio.to_thread(resile.Worker(queue).run, burst=True)  # or: resile worker
            for task_id in ids:
                print((await client.get(f"/emails/{task_id}")).json())
            stats = await queue.stats_async()
    print(f"done: {stats[resile.TaskStatus.DONE]}, sent to: {sorted(sent)}")
    assert stats[resile.TaskStatus.DONE] == 3 and len(sent) == 3


if __name__ == "__main__":
    asyncio.run(main())
