"""The chaos suite's bounded form (``benchmarks/chaos.py``): the quick modes on every backend this machine can start.

Each test is one run of the suite: real ``resile worker`` processes on a
fresh store of a throwaway server (or SQLite file) that this module starts
once per backend, 120 tasks enqueued over 1.5 s (two workers x 4) while the mode injects its
fault, then the count. A run passes when nothing acknowledged was lost,
nothing is stuck, every failure and every extra run is explained, and every
worker left within its grace period after SIGTERM. The long form (every
mode, minutes per run, ``make chaos``) is a benchmark; its figures are in
``docs/guarantees.md``. Left out here because they take tens of seconds
each: ``net-silent`` (a silent connection is noticed by a socket timeout,
10 s on Redis), ``sigterm`` (every run here already times the SIGTERM exit
of all its workers) and ``kill-workers`` on the servers (``test_worker`` and
``test_redis_faults`` kill workers on every backend).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from _components import missing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import chaos

pytestmark = pytest.mark.slow

QUICK: list[tuple[str, str]] = [
    ("sqlite", "kill-workers"),
    ("sqlite", "freeze-worker"),
    ("sqlite", "disk-full"),
    ("sqlite", "handler-faults"),
    ("redis-always", "kill-server"),
    ("redis-always", "net-drop"),
    ("redis-always", "stop-in-outage"),
    ("redis-everysec", "kill-server"),
    ("postgres", "kill-server"),
    ("postgres", "net-drop"),
    ("mariadb", "kill-server"),
    ("mariadb", "net-drop"),
]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, chaos.Backend]]:
    """The chaos backends started so far in this module (each once); all stopped at its end."""
    started: dict[str, chaos.Backend] = {}
    try:
        yield started
    finally:
        for backend in started.values():
            backend.close()


@pytest.fixture
def backend(
    request: pytest.FixtureRequest,
    backends: dict[str, chaos.Backend],
    tmp_path_factory: pytest.TempPathFactory,
) -> chaos.Backend:
    """The backend this test's parameters name, started on first use."""
    name: str = request.node.callspec.params["name"]
    if name not in backends:
        factory = chaos.available_backends()[name]
        if isinstance(factory, str):
            missing(name, factory)
        started = factory()
        started.start(tmp_path_factory.mktemp(f"chaos-{name}"))
        backends[name] = started
    return backends[name]


class TestChaosQuick:
    @pytest.mark.parametrize(("name", "mode"), QUICK)
    def test_every_task_is_accounted_for(
        self, name: str, mode: str, backend: chaos.Backend
    ) -> None:
        """Under the mode's faults no acknowledged task is lost or stuck, every extra run is explained, workers stop in time."""
        report = chaos.run_one(
            backend,
            chaos.MODES[mode],
            seed=zlib.crc32(f"{name}/{mode}".encode()) & 0xFFFF,
            tasks=120,
            seconds=1.5,
            workers=2,
            concurrency=4,
            log=lambda line: None,
        )
        if report.skipped is not None:
            missing(f"{mode} on {name}", report.skipped)
        assert report.ok, "\n".join(report.lines())
        assert report.acknowledged > 0 and report.done > 0, "\n".join(report.lines())
