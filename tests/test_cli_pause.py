"""`resile pause QUEUE` / `resile resume QUEUE`, and `resile stats` naming the paused queues."""

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
