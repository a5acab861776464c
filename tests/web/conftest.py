"""Fixtures of the dashboard tests: a store per backend, the dashboard served by uvicorn, a client.

The dashboard reads and acts through the store contract only, so its tests
run on every backend (``backend`` is a fixture parameter): SQLite and Redis.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from _redis_server import drop_namespace
from _web_server import serve
from resile.queue.store import Store, open_store
from resile.queue.task import TaskError, TaskSpec
from resile.web import create_app

CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


def _redis(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_url")
    namespace = f"web-{uuid.uuid4().hex}"
    request.addfinalizer(lambda: drop_namespace(url, namespace))
    return f"{url}{'&' if '?' in url else '?'}namespace={namespace}"


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": lambda request, tmp: f"sqlite:///{tmp / 'tasks.db'}",
    "redis": lambda request, tmp: _redis(request),
}


@pytest.fixture(params=sorted(BACKENDS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once per backend."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of an empty SQLite store (tests that need one backend only)."""
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    """An open, empty SQLite store (tests that need one backend only: the browser's)."""
    s = open_store(sqlite_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, empty store of the backend under test."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def serve_app() -> Iterator[Callable[..., str]]:
    """``serve_app(store_or_url, **create_app_options)`` -> the base URL of a running dashboard."""
    with ExitStack() as stack:

        def start(target: Any, **options: Any) -> str:
            return stack.enter_context(serve(create_app(target, **options)))

        yield start


@pytest.fixture
def dashboard(store: Store, serve_app: Callable[..., str]) -> str:
    """The base URL of a dashboard (no token, actions on) over ``store``."""
    return serve_app(store)


@pytest.fixture
def client(dashboard: str) -> Iterator[httpx.Client]:
    """An HTTP client of ``dashboard`` that keeps cookies and does not follow redirects."""
    with httpx.Client(base_url=dashboard, timeout=10) as c:
        yield c


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    """GET ``path`` (which sets the CSRF cookie) and return the token its forms carry."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    match = CSRF_INPUT.search(response.text)
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


def post(client: httpx.Client, path: str, data: dict[str, Any], page: str = "/") -> httpx.Response:
    """POST a form the way a browser on ``page`` would: its CSRF token and its own Origin."""
    token = csrf_of(client, page)
    return client.post(
        path, data={"csrf": token, **data}, headers={"origin": str(client.base_url).rstrip("/")}
    )


def dead_task(store: Store, **spec: Any) -> str:
    """A FAILED task (no retries left), made through the contract; returns its id."""
    fields: dict[str, Any] = {"handler": "send_mail", "queue": "mail", "max_retries": 0, **spec}
    error = fields.pop("error", TaskError("ConnectionError", "refused", "Traceback: ..."))
    task = store.create(TaskSpec(**fields))
    leased = store.lease(task.queue, "worker-1", limit=1000)
    assert task.id in {t.id for t in leased}
    for other in leased:
        if other.id != task.id:
            store.release(other.id, "worker-1")
    store.fail(task.id, "worker-1", error)
    return task.id
