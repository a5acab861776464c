"""The store backends every backend-parametrized suite runs on (the store conformance suite, the worker's).

A backend is one entry of ``BACKENDS``: a name and a function returning the
URL of a fresh, empty store for one test. Adding a backend is one line here;
the tests do not change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from _mysql_server import create_database, drop_database
from _postgres_server import drop_schema
from _redis_server import drop_namespace


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
    """The session MySQL's URL on a fresh database, dropped when the test ends."""
    url: str = request.getfixturevalue("mysql_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    fresh = create_database(url, name)
    request.addfinalizer(lambda: drop_database(url, name))
    return fresh


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
