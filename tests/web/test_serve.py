"""Serving the dashboard on its own: loopback by default, a token required elsewhere."""

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


class TestServe:
    def test_serves_on_loopback_and_refuses_other_hosts(self, tmp_path: Path) -> None:
        """serve() answers on 127.0.0.1, refuses a foreign Host header, and stops on SIGTERM."""
        port = _free_port()
        code = (
            "from resile.web import serve; "
            f"serve('sqlite:///{tmp_path / 'tasks.db'}', port={port}, log_level='warning')"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
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
