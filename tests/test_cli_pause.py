"""`resile pause QUEUE` / `resile resume QUEUE`, `resile stats` naming paused queues, `resile workers`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import resile
from resile.cli import cli
from resile.queue import Queue


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store URL on a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def queue(db: str) -> Iterator[Queue]:
    """The same store opened through the API."""
    q = resile.connect(db, queue="mail")
    yield q
    q.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class TestPauseCommands:
    def test_pause_then_resume(self, db: str, queue: Queue) -> None:
        """pause stops leases of the queue and says so; resume lets them go on."""
        queue.enqueue("send", strict=False)
        r = run("pause", "mail", "--db", db)
        assert r.exit_code == 0 and r.output == "paused mail\n"
        assert queue.store.lease("mail", "w") == []
        assert run("pause", "mail", "--db", db).output == "mail was already paused\n"
        r = run("resume", "mail", "--db", db)
        assert r.exit_code == 0 and r.output == "resumed mail\n"
        assert len(queue.store.lease("mail", "w")) == 1
        assert run("resume", "mail", "--db", db).output == "mail was not paused\n"

    def test_stats_names_paused_queues(self, db: str, queue: Queue) -> None:
        """stats marks a paused queue in its table and lists it in its JSON."""
        queue.enqueue("send", strict=False)
        run("pause", "mail", "--db", db)
        assert "(paused)" in run("stats", "--db", db).output
        body = json.loads(run("stats", "--json", "--db", db).output)
        assert list(body["paused"]) == ["mail"]


class TestWorkersCommand:
    def test_lists_registered_workers(self, db: str, queue: Queue) -> None:
        """workers shows each registered worker, beating or gone, as a table or JSON lines."""
        from resile.queue.registry import WorkerRecord

        now = queue.store.now()
        queue.store.record_worker(
            WorkerRecord("w-1", "box", 7, "process", 8, ("mail",), now, now, now + 20, 2)
        )
        queue.store.record_worker(
            WorkerRecord("w-2", "box", 8, "thread", 4, ("mail",), now, now - 99, now - 79)
        )
        out = run("workers", "--db", db).output
        assert "w-1" in out and "2/8" in out and "beating" in out and "gone" in out
        lines = [
            json.loads(line) for line in run("workers", "--json", "--db", db).output.splitlines()
        ]
        assert [(w["id"], w["alive"]) for w in lines] == [("w-1", True), ("w-2", False)]
