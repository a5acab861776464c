"""The ``store`` fixture: every conformance test runs once per backend.

A backend is one entry of ``BACKENDS``: a name and a function returning the
URL of a fresh, empty store for one test. Adding a backend (Redis) is one
line here; the tests do not change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from _mysql_server import drop_database
from _postgres_server import drop_schema
from _redis_server import drop_namespace
from resile.queue.store import Store, open_store


def _with_query(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def _redis_namespace(request: pytest.FixtureRequest, prefix: str) -> str:
    """The session Redis's URL with a fresh namespace, whose keys go when the test ends."""
    url: str = request.getfixturevalue("redis_url")
    namespace = f"{prefix}-{uuid.uuid4().hex}"
    request.addfinalizer(lambda: drop_namespace(url, namespace))
    return _with_query(url, f"namespace={namespace}")


def _postgres_schema(request: pytest.FixtureRequest) -> str:
    """The session PostgreSQL's URL with a fresh schema, dropped when the test ends."""
    url: str = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    request.addfinalizer(lambda: drop_schema(url, schema))
    return _with_query(url, f"schema={schema}")


def _mysql_database(request: pytest.FixtureRequest) -> str:
    """The session MySQL's URL with a fresh database, dropped when the test ends."""
    import pymysql

    url: str = request.getfixturevalue("mysql_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    parts = urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or ""),
        password=unquote(parts.password or ""), autocommit=True,
    )  # fmt: skip
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    request.addfinalizer(lambda: drop_database(url, name))
    return urlunsplit(parts._replace(path=f"/{name}"))


# name -> (request, tmp_path) -> URL of an empty store for one test
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite-file": lambda request, tmp: f"sqlite:///{tmp / 'tasks.db'}",
    "sqlite-memory": lambda request, tmp: "sqlite:///:memory:",
    # A fresh namespace on the session's Redis (REDIS_URL or a throwaway server).
    "redis": lambda request, tmp: _redis_namespace(request, "test"),
    # A fresh schema on the session's PostgreSQL (RESILE_TEST_POSTGRES_URL or a throwaway one).
    "postgres": lambda request, tmp: _postgres_schema(request),
    # A fresh database on the session's MariaDB / MySQL (RESILE_TEST_MYSQL_URL or a throwaway one).
    "mysql": lambda request, tmp: _mysql_database(request),
}
# Backends whose URL several processes can open to share one store.
SHARED_BACKENDS = {"sqlite-file", "redis", "postgres", "mysql"}

T0 = 1_700_000_000.0  # the tests' "now", in epoch seconds


class FakeEpoch:
    """An epoch clock for stores that only moves when a test moves it."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeEpoch:
    """The store's clock: starts at ``T0`` and only moves on ``advance``."""
    return FakeEpoch()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of the backend under test."""
    return BACKENDS[backend](request, tmp_path)


@pytest.fixture
def store(store_url: str, clock: FakeEpoch) -> Iterator[Store]:
    """An empty store of the backend under test, on the fake clock; closed afterwards."""
    s = open_store(store_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def open_another(store_url: str, clock: FakeEpoch) -> Iterator[Callable[[], Store]]:
    """Open more handles on the same store (closed afterwards)."""
    opened: list[Store] = []

    def factory() -> Store:
        s = open_store(store_url, clock=clock)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()
