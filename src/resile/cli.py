"""The ``resile`` command: run workers, enqueue, inspect and manage stored tasks, run the demo.

::

    resile worker myapp.tasks:queue --concurrency 8 --mode process
    resile enqueue send_email --params '{"to": "a@b.c"}' --priority 5 --delay 10
    resile status mail-42
    resile list --status FAILED --limit 20
    resile stats
    resile cancel mail-42 ; resile retry mail-42 ; resile purge --older-than 86400
    resile pause mail ; resile resume mail ; resile workers
    resile dashboard --db sqlite:///tasks.db --port 8080
    resile demo

``python -m resile`` is the same command. Every command but ``worker`` and
``demo`` takes ``--db URL`` (default ``sqlite:///resile.db``, or the
``RESILE_DB`` environment variable) and opens a Redis URL with a short
``retry_for`` (``CLI_RETRY_FOR``); a worker uses the store its queue module
opened, with its long outage ride-through. Exit codes: 0 done, 1 not found
or refused (the task does not exist, or is in a state that does not allow
it) or a store that cannot be used (not a database, a server that does not
answer: one line naming the URL, no traceback), 2 usage error (a bad flag
value, named with the value).

This module needs the ``cli`` extra (``click`` and ``rich``); ``import resile``
never imports it.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from resile.errors import DuplicateTask
from resile.queue._names import DEFAULT_QUEUE, TaskStatus
from resile.queue.api import DEFAULT_URL, Queue, connect
from resile.queue.schedules import ScheduleRecord
from resile.queue.store.base import Quantiles, Timings
from resile.queue.task import Task

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable that sets ``--db``.
DB_ENV = "RESILE_DB"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
#: Seconds a command other than ``worker`` keeps reconnecting to an unreachable store, unless
#: the URL sets ``retry_for``: a person at a terminal wants the error, a worker the ride-through.
CLI_RETRY_FOR = 1.0
#: Seconds such a command waits for a TCP connection (``connect_timeout``) unless the URL sets
#: ``socket_connect_timeout``: with ``CLI_RETRY_FOR`` a host that drops packets fails in ~2 s.
CLI_CONNECT_TIMEOUT = 0.5
# The URL schemes whose stores take ``retry_for`` (they reconnect through an outage), and the
# query option that sets each one's connect timeout.
_CONNECT_TIMEOUT_OPTION = {
    "redis": "socket_connect_timeout",
    "rediss": "socket_connect_timeout",
    "unix": "socket_connect_timeout",
    "postgresql": "connect_timeout",
    "postgres": "connect_timeout",
    "mysql": "connect_timeout",
    "mariadb": "connect_timeout",
}
_RETRYING_SCHEMES = frozenset(_CONNECT_TIMEOUT_OPTION)
# The stores whose schema ``resile migrate`` creates or checks (the others make theirs on open).
_MIGRATING_SCHEMES = frozenset({"postgresql", "postgres", "mysql", "mariadb"})

_STATUS_STYLE = {
    TaskStatus.PENDING: "yellow",
    TaskStatus.DOING: "cyan",
    TaskStatus.DONE: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELED: "dim",
}


def _console(err: bool = False) -> Console:
    return Console(stderr=err, highlight=False, soft_wrap=False)


def _refuse(message: str) -> NoReturn:
    """Print ``message`` to stderr as one line and exit 1 (not found / refused)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)
    raise SystemExit(EXIT_REFUSED)


def _store_errors() -> tuple[type[Exception], ...]:
    """What a store raises for a bad file, an unreachable server or a refused schema."""
    errors: list[type[Exception]] = [sqlite3.Error, OSError, RuntimeError]
    redis_errors = sys.modules.get("redis.exceptions")  # loaded once a Redis URL was opened
    if redis_errors is not None:
        errors.append(redis_errors.RedisError)
    return tuple(errors)


def _shown(url: str) -> str:
    """``url`` without its password, to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def db_option(fn: F) -> F:
    """The ``--db URL`` option shared by the commands that open a store.

    A store problem while the command runs (not a database, a newer schema,
    a server that does not answer) ends it with one line naming the URL, exit 1.
    """

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _store_errors() as exc:
            _refuse(f"--db {_shown(kwargs['db'])}: {_one_line(exc)}")

    option = click.option(
        "--db",
        "db",
        default=DEFAULT_URL,
        envvar=DB_ENV,
        show_default=True,
        show_envvar=True,
        metavar="URL",
        help="The task store: sqlite:///path.db (relative), sqlite:////abs/path.db, redis://host:6379/0.",
    )
    return cast(F, option(command))


#: The ``--delay SECONDS`` option of ``enqueue`` and ``retry``.
_delay_option = click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Due this many seconds from now.",
)


def _open(db: str, **extra: Any) -> Queue:
    """Open the queue ``--db`` names; a bad URL is a usage error naming the flag.

    A store that reconnects through outages gets ``retry_for=CLI_RETRY_FOR``
    and ``connect_timeout=CLI_CONNECT_TIMEOUT``, each unless the URL's query
    sets it (``retry_for``; ``socket_connect_timeout`` for Redis,
    ``connect_timeout`` for PostgreSQL and MySQL). ``extra`` options go to the store.
    """
    options: dict[str, Any] = {}
    parts = urlsplit(db)
    scheme = parts.scheme.lower()
    if scheme in _RETRYING_SCHEMES:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if "retry_for" not in query:
            options["retry_for"] = CLI_RETRY_FOR
        if _CONNECT_TIMEOUT_OPTION[scheme] not in query:
            options["connect_timeout"] = CLI_CONNECT_TIMEOUT
    options.update(extra)
    try:
        return connect(db, **options)
    except (ValueError, NotImplementedError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--db'") from None


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    delta = ts - now
    rel = f"in {delta:.1f}s" if delta > 0 else f"{-delta:.1f}s ago"
    return f"{stamp} ({rel})"


def _status(task: Task) -> str:
    return f"[{_STATUS_STYLE[task.status]}]{task.status.value}[/]"


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- the group --------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="resile", prog_name="resile")
def cli() -> None:
    """resile: durable tasks with retries on time. Run workers, enqueue, inspect, manage."""


# -- worker -----------------------------------------------------------------------------------


def _seconds_flag(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A duration flag: a finite number of seconds > 0 (click's FloatRange lets NaN through)."""
    if value is not None and not 0 < value < float("inf"):
        raise click.BadParameter(f"must be a finite number of seconds > 0, got {value!r}")
    return value


@cli.command()
@click.argument("queue_path", metavar="MODULE:QUEUE")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Attempts at once (default: 10 threads, one process per CPU, 100 coroutines).",
)
@click.option(
    "--mode",
    type=click.Choice(["thread", "process", "async"]),
    default="thread",
    show_default=True,
    help="Where handlers run.",
)
@click.option("--burst", is_flag=True, help="Return once the queue is drained (tests, cron).")
@click.option(
    "--lease",
    "lease",
    type=float,
    default=None,
    callback=_seconds_flag,
    metavar="SECONDS",
    help="How long a lease lasts without a heartbeat (default 20). It must outlast the longest "
    "store outage to ride out plus the reconnect backoff, or tasks run twice.",
)
@click.option(
    "--grace",
    "grace",
    type=float,
    default=None,
    callback=_seconds_flag,
    metavar="SECONDS",
    help="At shutdown, how long running attempts may still finish (default 10).",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Serve this queue (repeatable); default: the queues of the registered handlers.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every task outcome.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs resile[metrics]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the metrics endpoint binds.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, one record per task transition.",
)
def worker(
    queue_path: str,
    concurrency: int | None,
    mode: str,
    burst: bool,
    lease: float | None,
    grace: float | None,
    queues: tuple[str, ...],
    verbose: bool,
    metrics_port: int | None,
    metrics_host: str,
    log_format: str,
) -> None:
    """Run the handlers of the queue at MODULE:QUEUE (e.g. myapp.tasks:queue).

    Stops gracefully on SIGINT/SIGTERM (a second signal skips the grace
    period). The store is the one the module opened with resile.connect(...).
    """
    from resile import instrument, logs
    from resile.queue.worker import Worker

    logging.basicConfig(
        level=logging.INFO if verbose or log_format == "json" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logs.JsonFormatter())
    log_hook = logs.install() if verbose or log_format == "json" else None
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current directory import
    options: dict[str, Any] = {"mode": mode}
    if concurrency is not None:
        options["concurrency"] = concurrency
    if lease is not None:
        options["lease_seconds"] = lease
    if grace is not None:
        options["grace"] = grace
    if queues:
        options["queues"] = list(queues)
    try:
        w = Worker.from_import_path(queue_path, **options)
    except ImportError as exc:
        cause = exc.__cause__
        if isinstance(cause, _store_errors()) and type(cause) is not RuntimeError:
            # The module's resile.connect(...) could not open its store.
            _refuse(f"{queue_path}: its store: {_one_line(cause)}")
        raise click.BadParameter(str(exc), param_hint="'MODULE:QUEUE'") from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="'MODULE:QUEUE'") from None
    except _store_errors() as exc:  # the store failed after the import
        _refuse(f"{queue_path}: its store: {_one_line(exc)}")
    err = _console(err=True)
    endpoint = None if metrics_port is None else _serve_metrics(w, metrics_port, metrics_host)
    err.print(
        f"resile worker {w.worker_id}: {w.mode} x{w.concurrency} on {w.store.url} "
        f"queues {list(w.queues)}"
        + (" (burst)" if burst else "")
        + ("" if endpoint is None else f", metrics at {endpoint.url}")
    )
    started = time.monotonic()
    try:
        w.run(burst=burst)
    except _store_errors() as exc:  # the store's own ride-through (retry_for) is over
        _refuse(f"{w.store.url}: {_one_line(exc)}")
    finally:
        if endpoint is not None:
            endpoint.close()
            _metrics_off()
        if log_hook is not None:
            instrument.uninstall(log_hook)
    s = w.stats
    err.print(
        f"resile worker {w.worker_id}: stopped after {time.monotonic() - started:.1f}s: "
        f"{s.done} done, {s.retried} retried, {s.failed} dead, {s.timeouts} timed out, "
        f"{s.lost} lost, {s.released} handed back"
    )


def _serve_metrics(w: Any, port: int, host: str) -> Any:
    """Install the Prometheus hook for the worker's store and serve it; one line on failure."""
    try:
        from resile import metrics
    except ImportError:
        _refuse("--metrics-port needs prometheus-client: pip install 'resile[metrics]'")
    try:
        endpoint = metrics.serve(port, host)
    except (OSError, ValueError) as exc:
        _refuse(f"--metrics-port {port} --metrics-host {host}: cannot serve: {exc}")
    metrics.install(store=w.store, queues=list(w.queues))
    return endpoint


def _metrics_off() -> None:
    from resile import metrics

    metrics.uninstall()


# -- enqueue ----------------------------------------------------------------------------------


def _json_object(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{value!r} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f'{value!r} must be a JSON object of keyword params, e.g. \'{{"to": "a@b.c"}}\''
        )
    return parsed


@cli.command()
@click.argument("handler")
@click.option(
    "--params",
    default="{}",
    show_default=True,
    callback=_json_object,
    metavar="JSON",
    help="The handler's keyword params as a JSON object.",
)
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help="The queue name.")
@click.option("--priority", type=int, default=0, show_default=True, help="Lower runs first.")
@_delay_option
@click.option("--id", "task_id", default=None, help="The task id (default: generated).")
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries after the first attempt (default 3).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Exec timeout of one attempt.",
)
@db_option
def enqueue(
    handler: str,
    params: dict[str, Any],
    queue: str,
    priority: int,
    delay: float,
    task_id: str | None,
    max_retries: int | None,
    timeout: float | None,
    db: str,
) -> None:
    """Store a task for HANDLER (the name a worker registered it under); prints its id.

    The worker that serves the queue must know HANDLER; the retry policy is
    the queue's default (Exponential(1, max_delay=60), 3 retries) unless given.
    """
    q = _open(db)
    try:
        task = q.enqueue(
            handler,
            params,
            id=task_id,
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            strict=False,
        )
    except DuplicateTask:
        _refuse(f"--id {task_id!r}: a task with this id already exists; nothing was stored")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        q.close()
    click.echo(task.id)


# -- looking ----------------------------------------------------------------------------------


def _get(q: Queue, task_id: str) -> Task:
    task = q.get(task_id)
    if task is None:
        q.close()
        _refuse(f"no task with id {task_id!r} in {q.store.url}")
    return task


@cli.command()
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the whole task as JSON.")
@db_option
def status(task_id: str, as_json: bool, db: str) -> None:
    """Show one task: state, attempts, due time, progress, result, errors, history."""
    q = _open(db)
    try:
        task = _get(q, task_id)
    finally:
        q.close()
    if as_json:
        click.echo(json.dumps(task.to_dict(), indent=2, ensure_ascii=False))
        return
    now = time.time()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", task.id),
        ("status", _status(task)),
        ("queue", task.queue),
        ("handler", task.handler),
        ("params", json.dumps(task.params, ensure_ascii=False)),
        ("priority", str(task.priority)),
        ("attempts", f"{task.attempts} of {task.max_attempts}"),
        ("backoff", json.dumps(task.backoff)),
        ("due", _when(task.due_at, now) if task.status is TaskStatus.PENDING else "-"),
        ("progress", f"{task.progress:g}%"),
        ("created", _when(task.created_at, now)),
        ("updated", _when(task.updated_at, now)),
        ("finished", _when(task.finished_at, now)),
    ]
    if task.status is TaskStatus.DOING:
        rows.append(("lease", f"{task.lease_owner} until {_when(task.lease_expires_at, now)}"))
    if task.result is not None:
        rows.append(("result", json.dumps(task.result, ensure_ascii=False)))
    if task.last_error is not None:
        rows.append(("last error", f"{task.last_error.type}: {task.last_error.message}"))
    for key, value in rows:
        table.add_row(key, value)
    console = _console()
    console.print(table)
    if task.history:
        hist = Table(title="attempts", title_justify="left")
        for col in ("#", "started", "took", "outcome", "error"):
            hist.add_column(col)
        for a in task.history:
            hist.add_row(
                str(a.attempt),
                _when(a.started_at, now),
                "-" if a.duration is None else f"{a.duration * 1000:.1f} ms",
                a.outcome.value,
                "" if a.error is None else _short(f"{a.error.type}: {a.error.message}"),
            )
        console.print(hist)


_STATUS_CHOICE = click.Choice([s.value for s in TaskStatus], case_sensitive=False)


@cli.command("list")
@click.option("--status", "status_", type=_STATUS_CHOICE, default=None, help="Only this state.")
@click.option("--queue", default=None, help="Only this queue.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N tasks."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON task per line.")
@db_option
def list_(status_: str | None, queue: str | None, limit: int, as_json: bool, db: str) -> None:
    """List tasks, oldest first."""
    q = _open(db)
    try:
        tasks = q.list(queue=queue, status=status_, limit=limit)
    finally:
        q.close()
    if as_json:
        for t in tasks:
            click.echo(json.dumps(t.to_dict(), ensure_ascii=False))
        return
    now = time.time()
    table = Table(title=f"{len(tasks)} task(s) in {q.store.url}", title_justify="left")
    for col in ("id", "queue", "handler", "status", "attempts", "priority", "due / finished"):
        table.add_column(col, overflow="fold")
    table.add_column("last error", overflow="ellipsis", max_width=48)
    for t in tasks:
        when = t.due_at if t.status is TaskStatus.PENDING else t.finished_at
        table.add_row(
            t.id,
            t.queue,
            t.handler,
            _status(t),
            f"{t.attempts}/{t.max_attempts}",
            str(t.priority),
            _when(when, now),
            "" if t.last_error is None else _short(f"{t.last_error.type}: {t.last_error.message}"),
        )
    _console().print(table)


@cli.command()
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@db_option
def stats(queue: str | None, as_json: bool, db: str) -> None:
    """Task counts per state, per queue and in total."""
    q = _open(db)
    try:
        names = [queue] if queue is not None else q.store.queues()
        per_queue = {name: q.stats(name) for name in names}
        total = q.stats(queue)
        paused = q.store.paused()
        timed = q.store.timings(since=q.store.now() - 3600 + 1, queue=queue)
    finally:
        q.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queues": {n: {s.value: c for s, c in v.items()} for n, v in per_queue.items()},
                    "total": {s.value: c for s, c in total.items()},
                    "paused": paused,
                    "timings_last_hour": {
                        n: {"run": t.run.to_dict(), "late": t.late.to_dict()}
                        for n, t in timed.items()
                    },
                }
            )
        )
        return
    table = Table(title=f"tasks in {q.store.url}", title_justify="left")
    table.add_column("queue")
    for s in TaskStatus:
        table.add_column(f"[{_STATUS_STYLE[s]}]{s.value}[/]", justify="right")
    table.add_column("total", justify="right")
    for name, counts in per_queue.items():
        label = f"{escape(name)} [red](paused)[/]" if name in paused else escape(name)
        table.add_row(label, *(str(counts[s]) for s in TaskStatus), str(sum(counts.values())))
    table.add_row(
        "[bold]all[/]",
        *(f"[bold]{total[s]}[/]" for s in TaskStatus),
        f"[bold]{sum(total.values())}[/]",
    )
    _console().print(table)
    if timed:
        _console().print(_timings_table(timed))


def _timings_table(timed: Mapping[str, Timings]) -> Table:
    """Run time and retry lateness per queue, last hour: p50 / p95 (n)."""
    table = Table(title="last hour: run time and retry lateness, p50 / p95", title_justify="left")
    table.add_column("queue")
    table.add_column("run time", justify="right")
    table.add_column("retry lateness", justify="right")

    def cell(q: Quantiles) -> str:
        if not q.n:
            return "—"
        return f"{_duration(q.p50)} / {_duration(q.p95)} ({q.n})"

    for name, t in timed.items():
        table.add_row(escape(name), cell(t.run), cell(t.late))
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- managing ---------------------------------------------------------------------------------


@cli.command()
@click.argument("task_id", metavar="ID")
@db_option
def cancel(task_id: str, db: str) -> None:
    """Cancel a pending or running task (exit 1 if unknown or already finished)."""
    q = _open(db)
    try:
        task = _get(q, task_id)
        if not q.cancel(task_id):
            after = q.get(task_id)
            state = after.status.value if after is not None else task.status.value
            _refuse(f"task {task_id!r} is {state}; only PENDING or DOING tasks can be canceled")
    finally:
        q.close()
    click.echo(f"canceled {task_id}")


@cli.command()
@click.argument("task_id", metavar="ID")
@_delay_option
@db_option
def retry(task_id: str, delay: float, db: str) -> None:
    """Requeue a FAILED (dead) or CANCELED task with fresh attempts (exit 1 otherwise)."""
    q = _open(db)
    try:
        task = _get(q, task_id)
        again = q.requeue(task_id, delay=delay)
        if again is None:
            _refuse(
                f"task {task_id!r} is {task.status.value}; only FAILED or CANCELED tasks "
                "can be retried"
            )
    finally:
        q.close()
    click.echo(f"requeued {task_id}")


@cli.command()
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Only tasks finished at least this long ago.",
)
@click.option(
    "--status",
    "statuses",
    type=click.Choice(["DONE", "FAILED", "CANCELED"], case_sensitive=False),
    multiple=True,
    help="Only this finished state (repeatable; default all three).",
)
@click.option("--queue", default=None, help="Only this queue.")
@db_option
def purge(older_than: float, statuses: tuple[str, ...], queue: str | None, db: str) -> None:
    """Delete finished tasks (DONE, FAILED, CANCELED); prints how many."""
    q = _open(db)
    try:
        chosen = (
            [s.upper() for s in statuses]
            if statuses
            else [TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED]
        )
        n = q.purge(older_than, statuses=chosen, queue=queue)
    finally:
        q.close()
    click.echo(f"purged {n} task(s)")


def _set_paused(db: str, queue_name: str, pause: bool) -> None:
    """Pause or resume ``queue_name`` in the --db store, and say what changed."""
    q = _open(db)
    try:
        changed = q.store.pause(queue_name) if pause else q.store.resume(queue_name)
    finally:
        q.close()
    if pause:
        click.echo(f"paused {queue_name}" if changed else f"{queue_name} was already paused")
    else:
        click.echo(f"resumed {queue_name}" if changed else f"{queue_name} was not paused")


@cli.command()
@click.argument("queue_name", metavar="QUEUE")
@db_option
def pause(queue_name: str, db: str) -> None:
    """Stop every worker from taking QUEUE's tasks (running ones finish); see resume."""
    _set_paused(db, queue_name, True)


@cli.command()
@click.argument("queue_name", metavar="QUEUE")
@db_option
def resume(queue_name: str, db: str) -> None:
    """Let workers take QUEUE's tasks again."""
    _set_paused(db, queue_name, False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@db_option
def workers(as_json: bool, db: str) -> None:
    """The registered workers: host, pid, mode, running / slots, queues, last beat, beating or gone."""
    q = _open(db)
    try:
        records = q.store.workers()
        now = q.store.now()
    finally:
        q.close()
    if as_json:
        for rec in records:
            click.echo(json.dumps({**json.loads(rec.to_json()), "alive": rec.alive(now)}))
        return
    table = Table(title=f"workers of {_shown(db)}", title_justify="left")
    for column in (
        "worker",
        "host",
        "pid",
        "mode",
        "running/slots",
        "queues",
        "last beat",
        "state",
    ):
        table.add_column(column)
    for rec in records:
        state = "[green]beating[/]" if rec.alive(now) else "[red]gone[/]"
        table.add_row(
            escape(rec.id),
            escape(rec.host),
            str(rec.pid),
            rec.mode,
            f"{rec.running}/{rec.concurrency}",
            escape(", ".join(rec.queues)),
            _when(rec.beat_at, now),
            state,
        )
    _console().print(table)


# -- schedules --------------------------------------------------------------------------------


@cli.group()
def schedules() -> None:
    """Durable schedules (@queue.periodic): list, pause, resume, trigger, delete."""


def _schedule_row(rec: ScheduleRecord, now: float) -> dict[str, Any]:
    try:
        rule, next_fire = rec.rule.describe(), rec.next_fire()
    except (ValueError, ImportError):
        rule, next_fire = "(unreadable rule)", None
    return {
        "name": rec.name,
        "queue": rec.queue,
        "rule": rule,
        "missed": rec.declaration.get("missed"),
        "overlap": rec.declaration.get("overlap"),
        "last_fire": rec.last,
        "next_fire": None if rec.paused else next_fire,
        "paused": rec.paused or None,
        "last_task": rec.task,
    }


@schedules.command("list")
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@db_option
def schedules_list(queue: str | None, as_json: bool, db: str) -> None:
    """Every stored schedule with its rule, last and next fire time, and pause state."""
    q = _open(db)
    try:
        records = q.store.schedules(queue)
        now = q.store.now()
    finally:
        q.close()
    rows = [_schedule_row(r, now) for r in records]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(title=f"schedules of {_shown(db)}", title_justify="left")
    for column in (
        "schedule",
        "queue",
        "rule",
        "missed/overlap",
        "last fire",
        "next fire",
        "state",
    ):
        table.add_column(column)
    for row in rows:
        state = f"[red]paused ({row['paused']})[/]" if row["paused"] else "[green]active[/]"
        table.add_row(
            escape(row["name"]),
            escape(row["queue"]),
            escape(row["rule"]),
            escape(f"{row['missed']}/{row['overlap']}"),
            _when(row["last_fire"], now),
            _when(row["next_fire"], now),
            state,
        )
    _console().print(table)


def _on_schedule(db: str, name: str, action: str) -> None:
    """Run one schedule ``action`` (pause, resume, delete, trigger) and say what changed."""
    q = _open(db)
    try:
        if q.store.get_schedule(name) is None:
            _refuse(f"no schedule named {name!r} (resile schedules list shows them)")
        if action == "trigger":
            task = q.trigger_schedule(name)
            click.echo(f"triggered {name}: task {task.id}")
            return
        changed = {
            "pause": q.pause_schedule,
            "resume": q.resume_schedule,
            "delete": q.delete_schedule,
        }[action](name)
    except ValueError as exc:
        _refuse(_one_line(exc))
    finally:
        q.close()
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    if changed:
        click.echo(f"{done} {name}")
    else:
        _refuse(f"schedule {name!r} was not {'paused' if action == 'resume' else 'active'}")


_SCHEDULE_ACTIONS = {
    "pause": "Stop schedule NAME firing, on every worker (see resume).",
    "resume": "Let schedule NAME fire again; its missed= policy decides about the ticks it missed.",
    "trigger": "Enqueue one run of schedule NAME now, outside its rule.",
    "delete": "Delete schedule NAME's record (its tasks stay; a worker declaring it adds it again).",
}


def _schedule_command(action: str, help_text: str) -> None:
    """Register ``resile schedules ACTION NAME``."""

    def command(name: str, db: str) -> None:
        _on_schedule(db, name, action)

    command.__name__ = f"schedules_{action}"
    command.__doc__ = help_text
    schedules.command(action)(click.argument("name", metavar="NAME")(db_option(command)))


for _action, _help in _SCHEDULE_ACTIONS.items():
    _schedule_command(_action, _help)


# -- dashboard --------------------------------------------------------------------------------

#: The environment variable that sets ``dashboard --token`` (a flag's value shows in ``ps``).
TOKEN_ENV = "RESILE_DASHBOARD_TOKEN"


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on; another than loopback needs --token.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="Require this token: Authorization: Bearer TOKEN, or the login form.",
)
@click.option("--read-only", is_flag=True, help="No action: no button, 403 on every action.")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Allow a --host other machines can reach without --token (not advised).",
)
@db_option
def dashboard(
    host: str, port: int, token: str | None, read_only: bool, insecure_no_auth: bool, db: str
) -> None:
    """Serve the web dashboard of the --db store (needs the web extra: pip install 'resile[web]')."""
    try:
        from resile.web import check_bind, serve
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        check_bind(host, token, insecure_no_auth)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    click.echo(
        f"resile dashboard of {_shown(db)} on {where}" + (" (read-only)" if read_only else "")
    )
    try:
        serve(
            db,
            host=host,
            port=port,
            token=token,
            read_only=read_only,
            insecure_no_auth=insecure_no_auth,
        )
    except (ValueError, NotImplementedError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--db'") from None
    except OSError as exc:
        _refuse(f"--host {host} --port {port}: {_one_line(exc)}")


# -- demo -------------------------------------------------------------------------------------


@cli.command(
    add_help_option=False,  # --help goes to the demo's own parser, with the flags
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo(args: tuple[str, ...]) -> None:
    """The queue against a flaky service: live progress, then a summary (make demo).

    The flags are the demo's (resile demo --help lists them).
    """
    from resile import demo as demo_module

    raise SystemExit(demo_module.main(args, prog="resile demo"))


# -- schema -----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--check",
    is_flag=True,
    help="Only check: exit 1 when the schema is missing, older or newer than this resile.",
)
@db_option
def migrate(check: bool, db: str) -> None:
    """Create or migrate the task store's schema (PostgreSQL, MySQL); --check only reports it.

    SQLite and Redis stores make theirs when they open: nothing to migrate.
    """
    if urlsplit(db).scheme.lower() not in _MIGRATING_SCHEMES:
        _open(db).close()
        click.echo(f"{_shown(db)}: the store makes its schema when it opens; nothing to migrate")
        return
    # A missing, older or newer schema under --check is a store error: one line, exit 1.
    q = _open(db, migrate=not check)
    try:
        read_version: Callable[[], int] = getattr(q.store, "schema_version")  # noqa: B009
        version = read_version()
    finally:
        q.close()
    done = "is at" if check else "migrated to"
    click.echo(f"{_shown(db)}: task schema {done} version {version} (current)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resile`` console script; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="resile")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_REFUSED)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
