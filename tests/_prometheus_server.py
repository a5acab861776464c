"""A throwaway Prometheus server for the test suite, and the path of promtool.

``PrometheusServer`` writes a config scraping the given loopback targets every
second, starts ``prometheus`` (Debian's package: /usr/bin/prometheus) with its
own temporary data directory on a free loopback port, and stops it afterwards.
The machine's own Prometheus (if any, on 9090) is never used.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from _process import end
from _redis_server import free_port

__all__ = ["PrometheusServer", "find_binary"]

RESERVED_PORTS = frozenset({9090})


def find_binary(name: str) -> str | None:
    """``prometheus`` or ``promtool`` from PATH (Debian puts both in /usr/bin), or None."""
    return shutil.which(name)


def _port() -> int:
    while True:
        port = free_port()
        if port not in RESERVED_PORTS:
            return port


class PrometheusServer:
    """One prometheus process on ``127.0.0.1:port`` scraping ``targets`` (``host:port``) each second."""

    def __init__(self, binary: str, targets: list[str]) -> None:
        self.binary = binary
        self.targets = targets
        self.port = _port()
        self.dir = Path(tempfile.mkdtemp(prefix="resile-prometheus-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start it and wait (a bounded poll) until ``/-/ready`` answers.

        Raises:
            RuntimeError: it exited or was not ready in time; the message has its log.
        """
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "resile",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        # JSON is YAML: no YAML writer needed.
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        log = (self.dir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)  # a bounded poll for a process to come up
        text = (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]
        self.stop(remove=False)
        raise RuntimeError(f"prometheus on port {self.port} did not start:\n{text}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant-query result vector of ``expr`` (``/api/v1/query``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self, *, remove: bool = True) -> None:
        """SIGTERM, then SIGKILL after 10 s; remove the directory unless told not to."""
        proc, self.process = self.process, None
        end(proc, 10)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PrometheusServer(port={self.port}, targets={self.targets!r})"
