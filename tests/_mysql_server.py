"""Throwaway MariaDB servers for the test suite.

Tests use ``RESILE_TEST_MYSQL_URL`` when it is set (a MySQL 8 or MariaDB 10.6+
someone else runs: each test then works in a database of its own and drops
it). Otherwise they make their own server: ``mariadb-install-db`` into a
temporary directory, then ``mariadbd`` on a free loopback port with its socket
in that directory, stopped and removed at the end of the session. The
machine's own server on 3306 is never touched.

Logins are checked, as on a real server (no ``--skip-grant-tables``): the
suite logs in over TCP as the password user ``resile``, created through the
server's socket by its root account. As root the server runs as the
``mysql`` system user (else ``nobody``). For speed the throwaway server
flushes InnoDB's log once a second (``innodb_flush_log_at_trx_commit=2``) and
skips the doublewrite buffer: a machine crash could lose its last second,
which a throwaway server does not mind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pymysql
import pytest

from _components import missing
from _postgres_server import free_port
from _process import end

__all__ = [
    "MariaDBServer",
    "create_database",
    "drop_database",
    "find_mariadb",
    "mysql_server",
    "mysql_url",
    "mysql_url_from_env",
]


def find_mariadb() -> tuple[str, str] | None:
    """``(install_db, server)`` binaries: from PATH or /usr/sbin, /usr/bin; ``None`` if absent."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/bin"]

    def find(*names: str) -> str | None:
        for name in names:
            for d in dirs:
                path = os.path.join(d, name)
                if d and os.access(path, os.X_OK):
                    return path
        return None

    install = find("mariadb-install-db", "mysql_install_db")
    server = find("mariadbd", "mysqld")
    return (install, server) if install and server else None


def mysql_url_from_env() -> str | None:
    """``RESILE_TEST_MYSQL_URL`` when set and non-empty."""
    return os.environ.get("RESILE_TEST_MYSQL_URL") or None


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("mysql", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (mysql, nobody) exists")


class MariaDBServer:
    """One MariaDB server on ``127.0.0.1:port`` in its own temporary directory.

    ``url`` logs in as the password user ``resile`` to the database ``resile``.
    """

    user = "resile"
    database = "resile"

    def __init__(self, install_db: str, server: str) -> None:
        self.install_db = install_db
        self.server = server
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resile-mariadb-"))
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "error.log"
        self.password = secrets.token_hex(12)
        self.run_as = _run_as()
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None
        self._initialized = False

    @property
    def url(self) -> str:
        """``mysql://resile:<password>@127.0.0.1:<port>/resile``."""
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _user_args(self) -> list[str]:
        return [f"--user={self.run_as}"] if self.run_as else []

    def _initdb(self) -> None:
        done = subprocess.run(
            [
                self.install_db,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                *self._user_args(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.dir,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        self._initialized = True

    def start(self, timeout: float = 60.0) -> MariaDBServer:
        """Install the data directory on first use, start the server, create the login.

        Raises:
            RuntimeError: it exited or did not answer in time (the message has its log).
        """
        if not self._initialized:
            self._initdb()
        args = [
            self.server,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=300",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_bin",
            *self._user_args(),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        end = time.monotonic() + timeout
        while True:  # a bounded poll for the server to take connections
            if self.process.poll() is not None:
                break
            if not self._listening():
                if time.monotonic() > end:
                    break
                time.sleep(0.05)
                continue
            root = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)
            with root, root.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                cur.execute(
                    f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' IDENTIFIED BY %s",
                    (self.password,),
                )
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'127.0.0.1'")
            return self
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.stop(remove=False)
        raise RuntimeError(f"mariadbd on port {self.port} did not start:\n{log}")

    def _listening(self) -> bool:
        """Whether the server accepts on its socket (a plain connect, closed at once)."""
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (SIGTERM, SIGKILL after 20 s); remove the directory unless told not to."""
        proc, self.process = self.process, None
        end(proc, 20)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (a crash); the data stays, ``start()`` recovers it."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop(remove=False)
        self.start()

    def __repr__(self) -> str:
        return f"MariaDBServer(port={self.port}, dir={str(self.dir)!r})"


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MariaDBServer | None]:
    """A throwaway MariaDB for the session (``None`` when ``RESILE_TEST_MYSQL_URL`` is set)."""
    if mysql_url_from_env():
        yield None
        return
    found = find_mariadb()
    if found is None:
        missing("MariaDB", "RESILE_TEST_MYSQL_URL is not set and no mariadb-install-db/mariadbd")
    server = MariaDBServer(*found)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_url(mysql_server: MariaDBServer | None) -> str:
    """A MySQL/MariaDB to test against: ``RESILE_TEST_MYSQL_URL``, else the throwaway one."""
    return mysql_url_from_env() or (mysql_server.url if mysql_server else "")


def _admin(url: str) -> pymysql.connections.Connection[Any]:
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        autocommit=True,
        connect_timeout=10,
    )


def create_database(url: str, database: str) -> str:
    """Create the database ``database`` on the server of ``url``; its URL."""
    with _admin(url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def drop_database(url: str, database: str) -> None:
    """Drop the database ``database`` (a test's own)."""
    with _admin(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
