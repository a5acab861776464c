"""Throwaway PostgreSQL clusters for the test suite.

Tests use ``RESILE_TEST_POSTGRES_URL`` when it is set (a server someone else
runs: each test then works in a schema of its own and drops it). Otherwise they
make their own cluster: ``initdb`` into a temporary directory, then
``pg_ctl start`` on a free loopback port with the Unix socket in that
directory, and ``pg_ctl stop`` + removal at the end of the session. The
machine's own PostgreSQL on 5432 is never touched.

The binaries are found on ``PATH``, through ``pg_config --bindir``, or in
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, so
as root the cluster belongs to an unprivileged system user (``postgres`` when
it exists, else ``nobody``) and the commands run through ``runuser``.

For speed the test cluster runs with ``fsync=off``, ``synchronous_commit=off``
and ``full_page_writes=off`` (``initdb --no-sync``): a crash of the *machine*
could corrupt it, which a throwaway cluster does not mind; a crash of the
server process (``kill -9``) is still recovered from the WAL. Logins are
checked (``scram-sha-256`` over TCP), as on a real server: the suite logs in
as a password user, never as a trusted superuser.
"""

from __future__ import annotations

import contextlib
import glob
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

import pytest

from _components import missing

__all__ = [
    "PostgresServer",
    "drop_schema",
    "find_pg_bindir",
    "postgres_server",
    "postgres_url",
    "postgres_url_from_env",
]

RESERVED_PORTS = frozenset({5432, 5433, 3306})
_TOOLS = ("initdb", "pg_ctl", "postgres")


def _has_tools(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, t), os.X_OK) for t in _TOOLS)


def find_pg_bindir() -> str | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; ``None`` when there is none."""
    found = shutil.which("initdb")
    if found and _has_tools(os.path.dirname(os.path.realpath(found))):
        return os.path.dirname(os.path.realpath(found))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_tools(out):
                return out
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    return next((c for c in candidates if _has_tools(c)), None)


def postgres_url_from_env() -> str | None:
    """``RESILE_TEST_POSTGRES_URL`` when set and non-empty."""
    return os.environ.get("RESILE_TEST_POSTGRES_URL") or None


def free_port() -> int:
    """A loopback TCP port that is free now (never PostgreSQL's or MySQL's usual ones)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def _unprivileged_user() -> str | None:
    """The user the cluster runs as when we are root; ``None`` when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) exists")


class PostgresServer:
    """One PostgreSQL cluster on ``127.0.0.1:port`` in its own temporary directory.

    ``start()`` runs ``initdb`` (once) and ``pg_ctl start``; ``url`` logs in as
    the password user ``resile`` to the database ``resile``. ``restart()`` and
    ``kill()`` keep the data (fault tests).

    Args:
        bindir: the folder with ``initdb``, ``pg_ctl`` and ``postgres``.
    """

    user = "resile"
    database = "resile"

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resile-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.password = secrets.token_hex(12)
        self.run_as = _unprivileged_user()
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._initialized = False

    @property
    def url(self) -> str:
        """``postgresql://resile:<password>@127.0.0.1:<port>/resile``."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL {what} failed ({done.returncode}): {done.stderr.strip()}\n{tail}"
            )

    def _initdb(self) -> None:
        # The superuser is a login we never use: the suite connects as ``resile`` by password.
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        done = self._run(
            "initdb",
            "-D", str(self.data),
            "-U", self.user,
            "--pwfile", str(pwfile),
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        self._check(done, "initdb")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# resile test cluster: throwaway, so durability against machine crashes is off\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
                "log_min_messages = warning\n"
            )
        self._initialized = True

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Create the cluster on first use, start it, wait until it takes logins; create the db.

        Raises:
            RuntimeError: initdb or the start failed; the message has the server's log.
        """
        if not self._initialized:
            self._initdb()
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
            "start",
        )  # fmt: skip
        self._check(done, "start")
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if found is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, *, remove: bool = True) -> None:
        """``pg_ctl stop -m fast``; remove the directory unless told not to."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); the data stays, ``start()`` recovers it."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            end = time.monotonic() + 10
            while time.monotonic() < end:  # a bounded wait for the process to be gone
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)

    def restart(self) -> None:
        """Stop (fast) and start again on the same port and data."""
        self.stop(remove=False)
        self.start()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, dir={str(self.dir)!r})"


# -- fixtures (imported by tests/conftest.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    """A throwaway cluster for the session (``None`` when ``RESILE_TEST_POSTGRES_URL`` is set)."""
    if postgres_url_from_env():
        yield None
        return
    bindir = find_pg_bindir()
    if bindir is None:
        missing("PostgreSQL", "RESILE_TEST_POSTGRES_URL is not set and no initdb/pg_ctl found")
    server = PostgresServer(bindir)
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
def postgres_url(postgres_server: PostgresServer | None) -> str:
    """A PostgreSQL to test against: ``RESILE_TEST_POSTGRES_URL`` if set, else the throwaway one.

    Tests must use schemas of their own (``fresh_schema``): the server may be shared.
    """
    return postgres_url_from_env() or (postgres_server.url if postgres_server else "")


def drop_schema(url: str, schema: str) -> None:
    """Drop the schema ``schema`` (a test's own) and everything in it."""
    import psycopg

    with psycopg.connect(url.split("?")[0], autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
