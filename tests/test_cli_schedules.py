"""`resile schedules list|pause|resume|trigger|delete`: one line per action, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import resile
from resile.cli import cli
from resile.queue import Queue
from resile.queue.schedules import Rule, Schedule


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store URL on a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def queue(db: str) -> Iterator[Queue]:
    """The store opened through the API, holding one declared schedule "report"."""
    q = resile.connect(db)
    decl = Schedule("report", "default", Rule(cron="0 3 * * *", tz="Europe/Berlin"),
                    task={"handler": "report", "params": {"full": True}})  # fmt: skip
    q.store.save_schedule("report", "default", decl.declaration())
    yield q
    q.close()


def run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)


class TestSchedulesCommands:
    def test_list_shows_rule_and_fire_times(self, db: str, queue: Queue) -> None:
        """list shows each schedule's rule, last and next fire time, as a table or JSON lines."""
        out = run("schedules", "list", "--db", db).output
        assert "report" in out and "0 3 * * *" in out and "active" in out
        (row,) = [
            json.loads(x)
            for x in run("schedules", "list", "--json", "--db", db).output.splitlines()
        ]
        assert row["name"] == "report" and row["paused"] is None
        assert row["next_fire"] > row["last_fire"]

    def test_pause_resume(self, db: str, queue: Queue) -> None:
        """pause and resume say what they did; doing it twice is a one-line refusal."""
        r = run("schedules", "pause", "report", "--db", db)
        assert (r.exit_code, r.output) == (0, "paused report\n")
        assert queue.store.get_schedule("report").paused == "operator"  # type: ignore[union-attr]
        r = run("schedules", "pause", "report", "--db", db)
        assert r.exit_code == 1 and "was not active" in r.output
        listed = json.loads(run("schedules", "list", "--json", "--db", db).output)
        assert listed["paused"] == "operator" and listed["next_fire"] is None
        r = run("schedules", "resume", "report", "--db", db)
        assert (r.exit_code, r.output) == (0, "resumed report\n")

    def test_trigger_enqueues_one_run(self, db: str, queue: Queue) -> None:
        """trigger enqueues one run now with the declared params."""
        r = run("schedules", "trigger", "report", "--db", db)
        assert r.exit_code == 0 and r.output.startswith("triggered report: task sched:report:")
        (task,) = queue.list()
        assert task.handler == "report" and task.params == {"full": True}

    def test_delete(self, db: str, queue: Queue) -> None:
        """delete removes the record; an unknown name is one line, exit 1, no traceback."""
        assert run("schedules", "delete", "report", "--db", db).output == "deleted report\n"
        r = run("schedules", "delete", "report", "--db", db)
        assert r.exit_code == 1
        assert r.output.count("\n") == 1 and "no schedule named 'report'" in r.output
        assert "Traceback" not in r.output
