"""The ``store`` fixture: every conformance test runs once per backend.

A backend is one entry of ``BACKENDS`` (``tests/_backends.py``, shared with
the worker's suite): a name and a function returning the URL of a fresh,
empty store for one test. Adding a backend is one line there; the tests do
not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _backends import BACKENDS, SHARED_BACKENDS
from resile.queue import TaskSpec, TaskStatus
from resile.queue.store import Store, open_store

__all__ = ["BACKENDS", "SHARED_BACKENDS"]

T0 = 1_700_000_000.0  # the tests' "now", in epoch seconds


def fill_to_count(store: Store) -> dict[str, dict[TaskStatus, int]]:
    """Tasks in two states over three queues; returns what ``counts`` must then say
    (the migration tests count them again after dropping the counts)."""
    store.create(TaskSpec(handler="h", queue="q"))
    store.create_many([TaskSpec(handler="h", queue=f"q{i % 2}") for i in range(5)])
    store.cancel(store.list(queue="q1")[0].id)
    zero = dict.fromkeys(TaskStatus, 0)
    return {
        "q": {**zero, TaskStatus.PENDING: 1},
        "q0": {**zero, TaskStatus.PENDING: 3},
        "q1": {**zero, TaskStatus.PENDING: 1, TaskStatus.CANCELED: 1},
    }


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
