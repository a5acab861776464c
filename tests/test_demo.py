"""The main demo (``resile demo`` / ``make demo``): small runs that finish in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import resile
from resile import TaskStatus
from resile.cli import cli
from resile.demo import Summary


def demo(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["demo", *args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def metric(out: str, label: str) -> str:
    """The value of row ``label`` of the summary table."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no row {label!r} in:\n{out}")


class TestDemoRun:
    def test_small_run_prints_progress_and_summary(self, tmp_path: Path) -> None:
        """30 tasks against a flaky service: every task ends DONE or dead, retries happen, the summary adds up."""
        db = tmp_path / "demo.db"
        code, out, _ = demo(
            "--tasks",
            "30",
            "--latency",
            "0.005",
            "--workers",
            "8",
            "--poison",
            "2",
            "--seed",
            "7",
            "--db",
            str(db),
        )
        assert code == 0, out
        assert "finished 30/30" in out  # the plain progress lines (not a terminal)
        assert metric(out, "tasks") == "30"
        with resile.connect(f"sqlite:///{db}") as q:
            tasks = q.list(queue="demo", limit=100)
        assert len(tasks) == 30 and all(t.terminal for t in tasks)
        dead = [t for t in tasks if t.status is TaskStatus.FAILED]
        poison = [t for t in tasks if t.params["poison"]]
        assert len(poison) == 2 and all(t.status is TaskStatus.FAILED for t in poison)
        assert all(t.attempts == 5 for t in poison)  # 4 retries, then dead
        attempts = sum(t.attempts for t in tasks)
        assert metric(out, "attempts") == str(attempts)
        assert metric(out, "retries") == str(attempts - 30) and attempts - 30 >= 8
        assert metric(out, "dead letters") == f"{len(dead)} (2 poison)"
        assert metric(out, "retry start - due p99").endswith("ms")
        assert metric(out, "throughput").endswith("tasks/s")

    def test_reset_and_reproducible(self, tmp_path: Path) -> None:
        """--db is reset at start, and one --seed gives the same attempts twice."""
        db = tmp_path / "demo.db"
        args = ("--tasks", "20", "--latency", "0", "--poison", "1", "--seed", "3", "--db", str(db))
        first = demo(*args)
        second = demo(*args)
        assert first[0] == second[0] == 0
        assert metric(first[1], "attempts") == metric(second[1], "attempts")
        with resile.connect(f"sqlite:///{db}") as q:
            assert sum(q.stats().values()) == 20

    def test_two_worker_processes(self, tmp_path: Path) -> None:
        """--processes 2 runs two `resile worker` processes on the one SQLite file."""
        db = tmp_path / "demo.db"
        code, out, _ = demo(
            "--tasks",
            "24",
            "--latency",
            "0.005",
            "--processes",
            "2",
            "--workers",
            "4",
            "--poison",
            "1",
            "--seed",
            "5",
            "--db",
            str(db),
        )
        assert code == 0, out
        assert "2 process(es) x 4 threads" in out
        with resile.connect(f"sqlite:///{db}") as q:
            tasks = q.list(queue="demo", limit=100)
        assert all(t.terminal for t in tasks)
        pids = {str(t.lease_owner).split(":")[1] for t in tasks if t.status is TaskStatus.DONE}
        assert pids and str(os.getpid()) not in pids  # worker processes did the work

    def test_python_m_resile_demo(self, tmp_path: Path) -> None:
        """`python -m resile.demo` (what make demo runs) takes the same flags."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "resile.demo",
                "--tasks",
                "10",
                "--latency",
                "0",
                "--poison",
                "1",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        assert "resile demo: summary" in out.stdout and "dead letters" in out.stdout
        assert not list(tmp_path.iterdir())  # the temporary store is removed

    def test_dashboard_stays_open_until_ctrl_c(self, tmp_path: Path) -> None:
        """--dashboard 0 serves the demo's store on 127.0.0.1 while it runs and after the
        summary, until SIGINT; then it exits 0 and the temporary store is removed."""
        cmd = [sys.executable, "-m", "resile", "demo", "--tasks", "12", "--latency", "0"]
        cmd += ["--poison", "1", "--seed", "2", "--dashboard", "0"]
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path
        ) as proc:
            self._look_then_interrupt(proc)
        assert not list(tmp_path.iterdir())  # the temporary store is removed

    @staticmethod
    def _look_then_interrupt(proc: subprocess.Popen[str]) -> None:
        import re
        import signal

        import httpx

        try:
            assert proc.stdout is not None
            lines: list[str] = []
            for line in proc.stdout:  # bounded by the demo itself: 12 tasks, no latency
                lines.append(line)
                if "stays open at" in line:
                    break
            found = re.search(r"http://127\.0\.0\.1:\d+/", "".join(lines))
            assert found, "".join(lines)
            page = httpx.get(found.group(0), timeout=10)
            assert page.status_code == 200 and "demo" in page.text
            assert "resile demo: summary" in "".join(lines)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_retry_demo(self) -> None:
        """--retry runs the small @retry demo."""
        code, out, _ = demo("--retry", "--seed", "1")
        assert code == 0 and "succeeded: 200 OK" in out and "attempt 4 failed" in out

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--failure-rate", "1"], "argument --failure-rate:"),
            (["--tasks", "0"], "argument --tasks:"),
            (["--tasks", "3", "--poison", "4"], "argument --poison:"),
            (["--latency", "-1"], "argument --latency:"),
        ],
    )
    def test_bad_values_exit_2(self, args: list[str], needle: str) -> None:
        """Bad demo flags exit 2 naming the flag."""
        code, _, err = demo(*args)
        assert code == 2 and needle in err

    @pytest.mark.parametrize("where", ["no-such-dir/demo.db", "."])
    def test_unusable_db_is_one_line_exit_1(self, tmp_path: Path, where: str) -> None:
        """--db in a missing folder, or naming a folder: one line naming it, exit 1."""
        path = str(tmp_path / where)
        code, _, err = demo("--db", path, "--tasks", "2", "--poison", "0", "--latency", "0")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and path in lines[0] and "Traceback" not in err

    def test_help_lists_the_flags(self) -> None:
        """`resile demo --help` shows the demo's own flags and exits 0."""
        code, out, _ = demo("--help")
        assert code == 0
        for flag in ("--tasks", "--failure-rate", "--latency", "--processes", "--retry"):
            assert flag in out

    def test_flags_need_no_cli_extra(self) -> None:
        """The demo parses its flags itself: no click, and it never imports resile.cli."""
        code = (
            "import sys; sys.modules['click'] = None; "
            "from resile.demo import main; "
            "rc = main(['--tasks', '0']); "
            "print(rc, 'resile.cli' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.split() == ["2", "False"], out.stderr
        assert "argument --tasks" in out.stderr


class TestSummary:
    def test_percentiles_and_rates(self) -> None:
        """Summary computes retries, throughput and lateness quantiles."""
        s = Summary(
            tasks=10,
            done=9,
            dead=1,
            poison_dead=1,
            attempts=15,
            lateness=[i / 1000 for i in range(1, 101)],
            seconds=2.0,
        )
        assert s.retries == 5 and s.throughput == 5.0
        p50, p99 = s.percentile(0.5), s.percentile(0.99)
        assert p50 is not None and p99 is not None
        assert 0.049 <= p50 <= 0.051 and 0.098 <= p99 <= 0.1
        assert Summary(1, 1, 0, 0, 1, [], 1.0).percentile(0.5) is None
