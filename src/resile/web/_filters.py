"""What the task list shows: its filters, read from a query string, and the bounded scan behind it.

``Store.list`` filters by queue and status, sorts by creation (``sequence``),
due or updated time either way, and pages by keyset: the cursor is the last
row's sort key and ``sequence`` (``Cursor``). The other filters (task name, error type, id prefix, time
range) are applied here to the rows ``list`` returns, reading at most
``scan_budget`` rows per page, so a page costs the same at a million tasks.
When the budget runs out before the page is full, the page ends early and
its cursor continues where the scan stopped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from resile.queue._names import MAX_ID_LENGTH, TaskStatus
from resile.queue.store.base import LIST_ORDERS, Store, list_key
from resile.queue.task import Task

__all__ = [
    "BadInput",
    "Cursor",
    "Page",
    "TaskFilter",
    "parse_age",
    "parse_cursor",
    "parse_limit",
    "scan",
    "scan_all",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Rows one list page reads at most when filters beyond queue / status are set (about 50 ms
# of decoding on SQLite; benchmarks/dashboard.py).
SCAN_BUDGET = 1_000
# Rows one ``Store.list`` call returns at most while scanning (the first asks for a page).
_CHUNK = 500


class BadInput(ValueError):
    """A request field with a value the dashboard cannot use (answered with a 400)."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}: expected {expected}, got {value!r}")


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_ID_LENGTH:
        raise BadInput(name, value[:40] + "…", f"at most {MAX_ID_LENGTH} characters")
    return value


def _instant(params: Mapping[str, str], name: str) -> float | None:
    """An ISO date-time (UTC when it names no zone) or epoch seconds, as epoch seconds."""
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadInput(
                name, value, "a date-time such as 2026-01-31T14:05 (UTC) or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    if not math.isfinite(seconds):
        raise BadInput(name, value, "a finite number of epoch seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of the task list ends: the last row's ``sequence`` and, when the list is
    sorted by due or updated time, that row's sort key. Written ``SEQ`` or ``KEY:SEQ``."""

    seq: int
    key: float | None = None

    def __str__(self) -> str:
        return str(self.seq) if self.key is None else f"{self.key!r}:{self.seq}"


def parse_cursor(value: str | None, field: str = "cursor", *, keyed: bool = False) -> Cursor | None:
    """A page cursor (``Cursor``, as a previous page wrote it), or ``None`` for the first page.

    ``keyed``: the list is sorted by due or updated time, so the cursor carries the key.

    Raises:
        BadInput: not the cursor of a previous page of this sort.
    """
    if value is None or value == "":
        return None
    key_text, sep, seq = value.rpartition(":")
    if not seq.isdigit() or len(seq) > 19 or keyed != bool(sep):
        expected = "KEY:SEQUENCE" if keyed else "a non-negative integer"
        raise BadInput(field, value, f"{expected} (the cursor of a previous page of this sort)")
    if not keyed:
        return Cursor(int(seq))
    try:
        key = float(key_text)
    except ValueError:
        key = math.nan
    if not math.isfinite(key):
        raise BadInput(field, value, "KEY:SEQUENCE with KEY finite epoch seconds")
    return Cursor(int(seq), key)


def parse_limit(value: str | None) -> int:
    """Rows per page, 1 to ``MAX_LIMIT`` (``DEFAULT_LIMIT`` when absent).

    Raises:
        BadInput: not an integer in range.
    """
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadInput("limit", value, f"an integer from 1 to {MAX_LIMIT}")
    return int(value)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_age(value: str | None, field: str = "older_than") -> float:
    """An age such as ``90``, ``90s``, ``15m``, ``12h`` or ``7d``, in seconds.

    Raises:
        BadInput: anything else.
    """
    match = _AGE.match(value or "")
    if match is None:
        raise BadInput(field, value or "", "an age such as 3600, 90s, 15m, 12h or 7d")
    return float(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The task list's filters; every field optional. ``matches`` is the whole rule.

    ``since`` and ``until`` bound ``updated_at`` (epoch seconds, inclusive). ``sort``
    (a ``Store.list`` order: created, due or updated) and ``descending`` choose the
    order of the list; they select nothing.
    """

    queue: str | None = None
    status: TaskStatus | None = None
    task: str | None = None
    error: str | None = None
    prefix: str | None = None
    since: float | None = None
    until: float | None = None
    sort: str = "created"
    descending: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TaskFilter:
        """Read the filters from query or form fields.

        Raises:
            BadInput: naming the field and its value.
        """
        raw_status = params.get("status", "").strip()
        status = None
        if raw_status:
            try:
                status = TaskStatus(raw_status.upper())
            except ValueError:
                raise BadInput(
                    "status", raw_status, "one of " + ", ".join(s.value for s in TaskStatus)
                ) from None
        since, until = _instant(params, "since"), _instant(params, "until")
        if since is not None and until is not None and since > until:
            raise BadInput("until", params.get("until"), "a time after since")
        sort = params.get("sort", "").strip().lower() or "created"
        if sort not in LIST_ORDERS:
            raise BadInput("sort", params.get("sort"), "one of " + ", ".join(LIST_ORDERS))
        direction = params.get("order", "").strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise BadInput("order", params.get("order"), "asc or desc")
        return cls(
            sort=sort,
            descending=direction == "desc",
            queue=_text(params, "queue"),
            status=status,
            task=_text(params, "task"),
            error=_text(params, "error"),
            prefix=_text(params, "prefix"),
            since=since,
            until=until,
        )

    @property
    def narrowing(self) -> bool:
        """True when a filter beyond queue and status is set (the scan reads more than it shows)."""
        return any(v is not None for v in (self.task, self.error, self.prefix)) or (
            self.since is not None or self.until is not None
        )

    @property
    def empty(self) -> bool:
        """True when no filter is set and the list is in its default order."""
        return all(getattr(self, f.name) in (None, False, "created") for f in fields(self))

    @property
    def keyed(self) -> bool:
        """True when the list is sorted by a time, so its cursor carries that time."""
        return self.sort != "created"

    def matches(self, task: Task) -> bool:
        """True when ``task`` passes every filter that is set."""
        if self.queue is not None and task.queue != self.queue:
            return False
        if self.status is not None and task.status is not self.status:
            return False
        if self.task is not None and task.handler != self.task:
            return False
        if self.error is not None and (
            task.last_error is None or task.last_error.type != self.error
        ):
            return False
        if self.prefix is not None and not task.id.startswith(self.prefix):
            return False
        if self.since is not None and task.updated_at < self.since:
            return False
        return self.until is None or task.updated_at <= self.until

    def to_params(self) -> dict[str, str]:
        """The filters as query fields (only those set), for links and hidden form fields."""
        out: dict[str, str] = {}
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if value is None or value is False or (f.name == "sort" and value == "created"):
                continue
            if f.name == "descending":
                out["order"] = "desc"
            elif isinstance(value, TaskStatus):
                out[f.name] = value.value
            elif isinstance(value, float):
                out[f.name] = datetime.fromtimestamp(value, timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%S"
                )
            else:
                out[f.name] = str(value)
        return out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the task list.

    Attributes:
        tasks: the matching tasks, in the filter's order.
        next: the cursor of the next page; ``None`` when the scan reached the end.
        scanned: rows read to fill this page.
    """

    tasks: tuple[Task, ...]
    next: Cursor | None
    scanned: int


def _cursor(task: Task, flt: TaskFilter) -> Cursor:
    """The cursor of a page that ends at ``task``."""
    key, seq = list_key(task, flt.sort)
    return Cursor(seq, key if flt.keyed else None)


def _rows(
    store: Store, flt: TaskFilter, after: Cursor | None, chunk: int, most: int
) -> Iterator[Task]:
    """Every task passing ``flt``'s queue and status in its order, from ``after`` on: ``chunk``
    rows the first call, twice as many each next one, ``most`` at most (a filter that
    matches often fills its page from the first rows, without decoding ``most``)."""
    while True:
        batch = store.list(
            queue=flt.queue,
            status=flt.status,
            order=flt.sort,
            descending=flt.descending,
            after=None if after is None else after.seq,
            after_key=None if after is None else after.key,
            limit=chunk,
        )
        yield from batch
        if len(batch) < chunk:
            return
        after = _cursor(batch[-1], flt)
        chunk = min(most, 2 * chunk)


def scan(
    store: Store,
    flt: TaskFilter,
    *,
    cursor: Cursor | None = None,
    limit: int = DEFAULT_LIMIT,
    budget: int = SCAN_BUDGET,
) -> Page:
    """Up to ``limit`` tasks matching ``flt`` after ``cursor``, reading at most ``budget`` rows."""
    if cursor is not None and (cursor.key is not None) != flt.keyed:
        raise BadInput("cursor", str(cursor), "the cursor of a previous page of this sort")
    most = min(_CHUNK, budget) if flt.narrowing else limit + 1
    found: list[Task] = []
    scanned = 0
    last = cursor
    for task in _rows(store, flt, cursor, min(most, limit + 1), most):
        if len(found) == limit:  # one more row exists: there is a next page
            return Page(tuple(found), last, scanned)
        if scanned == budget:
            return Page(tuple(found), last, scanned)
        scanned += 1
        last = _cursor(task, flt)
        if flt.matches(task):
            found.append(task)
    return Page(tuple(found), None, scanned)


def scan_all(
    store: Store,
    flt: TaskFilter,
    *,
    batch: int,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[list[Task]]:
    """Every task matching ``flt``, in batches of at most ``batch``, one bounded scan per batch.

    Stops early when ``stop()`` turns true between batches. Always in creation order: an
    action changes ``updated_at`` (and may change ``due_at``), which would move a task
    ahead of the cursor of a list sorted by them.
    """
    flt = dataclasses.replace(flt, sort="created", descending=False)
    cursor: Cursor | None = None
    while not stop():
        page = scan(store, flt, cursor=cursor, limit=batch, budget=max(batch, SCAN_BUDGET))
        if page.tasks:
            yield list(page.tasks)
        if page.next is None:
            return
        cursor = page.next
