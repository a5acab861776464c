"""Serving the dashboard on its own (``resile dashboard``): loopback by default, a token elsewhere."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from _waits import wait_for
from resile.web._serve import check_bind, is_loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestBindRules:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.5.0.1", "localhost", "::1", "[::1]"])
    def test_loopback(self, host: str) -> None:
        """Loopback names and addresses count as local."""
        assert is_loopback(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
    def test_not_loopback(self, host: str) -> None:
        """Every other address, the wildcard included, is reachable from elsewhere."""
        assert not is_loopback(host)

    def test_open_address_needs_a_token(self) -> None:
        """A non-loopback host without a token is refused, naming the ways out."""
        with pytest.raises(ValueError, match=r"--token TOKEN.*--insecure-no-auth"):
            check_bind("0.0.0.0", None, False)
        check_bind("0.0.0.0", "t", False)
        check_bind("0.0.0.0", None, True)
        check_bind("127.0.0.1", None, False)


class TestCommand:
    def test_open_host_without_token_is_a_usage_error(self, tmp_path: Path) -> None:
        """resile dashboard --host 0.0.0.0 without a token exits 2, naming the way out."""
        from click.testing import CliRunner

        from resile.cli import cli

        result = CliRunner().invoke(
            cli, ["dashboard", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 't.db'}"]
        )
        assert result.exit_code == 2
        assert "--token TOKEN" in result.output and "--insecure-no-auth" in result.output

    def test_bad_port_is_a_usage_error(self) -> None:
        """A port out of range is refused by the option itself (exit 2)."""
        from click.testing import CliRunner

        from resile.cli import cli

        result = CliRunner().invoke(cli, ["dashboard", "--port", "70000"])
        assert result.exit_code == 2 and "70000" in result.output

    def test_serves_on_loopback_and_refuses_other_hosts(self, tmp_path: Path) -> None:
        """`resile dashboard` answers on 127.0.0.1, refuses a foreign Host, stops on SIGTERM."""
        port = _free_port()
        db = f"sqlite:///{tmp_path / 'tasks.db'}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "resile", "dashboard", "--db", db, "--port", str(port)],
            env={**os.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(base + "/", timeout=2).status_code == 200
                except httpx.TransportError:
                    return proc.poll() is not None

            wait_for(up, 30, "the dashboard to answer")
            assert proc.poll() is None
            assert httpx.get(base + "/", headers={"host": "evil.example"}).status_code == 400
        finally:
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            assert proc.wait(15) in (0, -signal.SIGTERM)
            assert proc.stdout is not None
            output = proc.stdout.read().decode()
            proc.stdout.close()
        assert f"on http://127.0.0.1:{port}/" in output


class TestDemoHint:
    def test_demo_names_the_dashboard_command(self, tmp_path: Path) -> None:
        """The demo ends by printing the command that opens the dashboard on its store."""
        import contextlib
        import io

        from resile import demo

        db = tmp_path / "demo.db"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = demo.main(
                [
                    "--tasks",
                    "3",
                    "--poison",
                    "0",
                    "--latency",
                    "0.01",
                    "--failure-rate",
                    "0",
                    "--db",
                    str(db),
                ]
            )
        assert code == 0
        assert f"resile dashboard --db sqlite:///{db}" in out.getvalue()
