"""Durable schedules, the pure part: rules, policies, stored records and the plan of a tick.

A schedule is a task declaration plus a rule (``every=`` seconds, or ``cron=``
in an IANA time zone). Its *ticks* are the instants the rule names; each tick
that runs becomes an ordinary task whose id is ``tick_id(schedule, fire time)``
and whose ``due_at`` is the fire time.

Nothing here does I/O or reads a clock: the worker's ``_scheduler`` reads the
stored record, asks ``plan`` what is due and ``overlap_action`` what to do
about a previous tick still running, and the store applies the answer in one
atomic step (``Store.fire_tick``). See ``docs/schedules.md``.

The rules that make a tick fire exactly once across a fleet:

* **A tick is an instant of the rule, not a clock reading.** ``every=300``
  ticks at every multiple of 300 epoch seconds; a cron rule at its local
  times. Every worker computes the same instants, whatever its clock says.
* **The store's record holds the last fire time**, and ``fire_tick`` advances
  it with a compare-and-set on the whole stored record, in the same
  transaction (or Lua script) that inserts the tick task under its unique id.
  A tick at or before the stored last fire time is never fired again; of two
  workers that fire the same tick, one commits and the other finds the record
  changed and re-plans (finding nothing due).
* **Clock skew** (±2 s between machines, or more) only moves *when* a worker
  tries, never *which* tick it fires: a fast clock fires a tick up to its skew
  early (its task is still due at the fire time), a slow one finds it fired.
  A tick counts as missed only when the worker that first sees it is more than
  ``ON_TIME`` (5 s) past it on its own clock, which no running worker is,
  whatever the skew.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from resile.queue._names import TaskStatus

__all__ = [
    "MAX_CATCH_UP",
    "MISSED",
    "ON_TIME",
    "OVERLAP",
    "Missed",
    "Overlap",
    "OverlapAction",
    "Plan",
    "Rule",
    "Schedule",
    "ScheduleRecord",
    "check_name",
    "overlap_action",
    "parse_tick_id",
    "plan",
    "tick_id",
    "tick_spec",
]

Missed = Literal["skip", "latest", "all"]
Overlap = Literal["allow", "skip", "buffer_one", "cancel_previous"]
OverlapAction = Literal["create", "skip", "buffer", "cancel_then_create"]
MISSED: tuple[str, ...] = ("skip", "latest", "all")
OVERLAP: tuple[str, ...] = ("allow", "skip", "buffer_one", "cancel_previous")

# A tick fired within this many seconds of its time (on the firing worker's clock) is on time.
ON_TIME = 5.0
# The most ticks one catch-up enqueues (missed="all" without a smaller catch_up).
MAX_CATCH_UP = 1000
# Ticks counted one by one (a cron rule) before a long outage is counted as "at least".
_COUNT_LIMIT = 100_000

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,180}$")
_TICK_PREFIX = "sched:"


def check_name(name: object, what: str = "schedule") -> str:
    """A schedule name: 1-180 of letters, digits, ``_``, ``.``, ``-``.

    Raises:
        ValueError: naming ``what`` and the value.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what}: name must be 1-180 letters, digits, '_', '.' or '-', got {name!r}"
        )
    return name


def tick_id(schedule: str, fire_at: float, *, manual: bool = False) -> str:
    """The task id of a tick: ``sched:<schedule>:<fire time in epoch ms>`` (unique per tick).

    ``manual`` (``resile schedules trigger``) adds ``:manual`` so that a run on demand
    never takes a real tick's id.
    """
    return f"{_TICK_PREFIX}{schedule}:{round(fire_at * 1000)}{':manual' if manual else ''}"


def parse_tick_id(task_id: str) -> tuple[str, float] | None:
    """``(schedule, fire time)`` of a tick's task id; ``None`` for any other id."""
    if not task_id.startswith(_TICK_PREFIX):
        return None
    body = task_id[len(_TICK_PREFIX) :].removesuffix(":manual")
    name, sep, ms = body.rpartition(":")
    if not sep or not ms.lstrip("-").isdigit() or not _NAME.match(name):
        return None
    return name, int(ms) / 1000.0


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"schedule: tz must be an IANA time zone name such as 'Europe/Berlin', got {tz!r}"
        ) from None


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "schedule: cron= needs the cronsim package; install resile[cron] "
            "(or pip install cronsim), or use every="
        ) from None
    return cronsim


@dataclass(frozen=True)
class Rule:
    """When a schedule ticks: every ``every`` seconds (at its multiples since the epoch), or
    at the instants of the ``cron`` expression in time zone ``tz``.

    Daylight-saving changes follow Debian's cron (through cronsim): a time in a
    skipped local hour fires once, right after the jump; a time in a repeated
    hour fires once, at its first occurrence. Wildcard hours (``0 * * * *``) tick
    every real hour.

    Raises:
        ValueError: neither or both of ``every`` and ``cron``, ``every`` under 1 s,
            a cron expression cronsim refuses, or an unknown time zone.
        ImportError: ``cron=`` without cronsim installed.
    """

    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    _zone: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("schedule: give exactly one of every= and cron=")
        if self.every is not None:
            every = self.every
            if isinstance(every, timedelta):
                every = every.total_seconds()
            if (
                isinstance(every, bool)
                or not isinstance(every, (int, float))
                or not 1 <= every < math.inf
            ):
                raise ValueError(
                    f"schedule: every must be seconds >= 1 or a timedelta, got {self.every!r}"
                )
            object.__setattr__(self, "every", float(every))
        if not isinstance(self.tz, str):
            raise ValueError(f"schedule: tz must be an IANA time zone name, got {self.tz!r}")
        object.__setattr__(self, "_zone", _zone(self.tz))
        if self.cron is not None:
            if not isinstance(self.cron, str) or not self.cron.strip():
                raise ValueError(f"schedule: cron must be a cron expression, got {self.cron!r}")
            cronsim = _cronsim()
            try:
                cronsim.CronSim(self.cron, datetime(2000, 1, 1, tzinfo=self._zone))
            except cronsim.CronSimError as exc:
                raise ValueError(f"schedule: cron {self.cron!r} is not valid: {exc}") from None

    # -- the instants ------------------------------------------------------------------------

    def _iter(self, t: float, reverse: bool) -> Any:
        cronsim = _cronsim()
        # cronsim yields instants strictly after (before) its start, at whole seconds.
        start = datetime.fromtimestamp(t, timezone.utc).astimezone(self._zone)
        return cronsim.CronSim(self.cron, start, reverse=reverse)

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (epoch seconds)."""
        if self.every is not None:
            return (math.floor(t / self.every) + 1) * self.every
        return float(next(self._iter(t, False)).timestamp())

    def latest(self, t: float) -> float | None:
        """The last tick at or before ``t``; ``None`` when there is none."""
        if self.every is not None:
            return math.floor(t / self.every) * self.every
        try:
            return float(next(self._iter(t + 0.001, True)).timestamp())
        except StopIteration:  # pragma: no cover - a rule with no past instant
            return None

    def between(self, after: float, until: float, limit: int) -> list[float]:
        """Ticks in ``(after, until]``, oldest first, at most ``limit`` (the oldest ones)."""
        out: list[float] = []
        t = after
        while len(out) < limit:
            t = self.next_after(t)
            if t > until:
                break
            out.append(t)
        return out

    def newest(self, after: float, until: float, limit: int) -> list[float]:
        """The newest ``limit`` ticks in ``(after, until]``, oldest first."""
        if self.every is not None:
            last = self.latest(until)
            assert last is not None
            out = [last - i * self.every for i in range(limit)]
            return sorted(t for t in out if t > after)
        found: list[float] = []
        start = self.latest(until)
        if start is None or start <= after:
            return []
        found.append(start)
        it = self._iter(start, True)
        while len(found) < limit:
            t = float(next(it).timestamp())
            if t <= after:
                break
            found.append(t)
        return sorted(found)

    def count(self, after: float, until: float) -> int:
        """How many ticks fall in ``(after, until]`` (a cron rule counts up to 100,000)."""
        if until <= after:
            return 0
        if self.every is not None:
            return max(0, math.floor(until / self.every) - math.floor(after / self.every))
        return len(self.between(after, until, _COUNT_LIMIT))

    def period(self, t: float) -> float:
        """Seconds between the two ticks after ``t`` (the alert's "two periods")."""
        first = self.next_after(t)
        return self.next_after(first) - first

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON: ``{"every": 300.0}`` or ``{"cron": "...", "tz": "..."}``."""
        if self.every is not None:
            return {"every": self.every, "tz": self.tz}
        return {"cron": self.cron, "tz": self.tz}

    def describe(self) -> str:
        """``every 300s`` or ``cron '0 3 * * mon-fri' Europe/Berlin`` (the CLI and dashboard)."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron!r} {self.tz}"


# -- the plan of one look at a schedule -------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What is due at ``now`` for a schedule last fired at ``last``.

    Attributes:
        fire: the ticks to enqueue, oldest first.
        missed: ticks that will not run (no worker was there in time; the policy dropped them).
        through: the newest tick due (the record's new last fire time); ``None``: nothing due.
        next_at: the first tick after ``now``: when to look again.
    """

    fire: tuple[float, ...]
    missed: int
    through: float | None
    next_at: float


def plan(
    rule: Rule,
    *,
    last: float,
    now: float,
    missed: Missed = "skip",
    catch_up: int | float | None = None,
    on_time: float = ON_TIME,
) -> Plan:
    """The ticks in ``(last, now]`` and what the ``missed`` policy makes of them.

    A tick no older than ``on_time`` seconds is *on time* and always fires.
    Older ones were *missed* (no worker ran at their time):

    * ``"skip"``: none of them runs;
    * ``"latest"``: when no tick is on time, the newest missed one runs (once);
    * ``"all"``: they run, oldest first, limited by ``catch_up``: an int keeps the
      newest that many, a float (seconds) those at most that old; ``None`` keeps
      up to ``MAX_CATCH_UP``.
    """
    next_at = rule.next_after(max(now, last))
    newest = rule.latest(now)
    if newest is None or newest <= last:
        return Plan((), 0, None, next_at)
    edge = max(last, now - on_time)  # ticks after it are on time; those up to it were missed
    recent = tuple(rule.newest(edge, now, MAX_CATCH_UP))
    n_old = rule.count(last, edge)
    fire, dropped = recent, n_old
    if n_old and missed == "latest" and not recent:
        fire, dropped = tuple(rule.newest(last, edge, 1)), n_old - 1
    elif n_old and missed == "all":
        if isinstance(catch_up, int) and not isinstance(catch_up, bool):
            keep = rule.newest(last, edge, min(catch_up, MAX_CATCH_UP))
        else:
            lo = last if catch_up is None else max(last, now - float(catch_up) - 1e-6)
            keep = rule.newest(lo, edge, MAX_CATCH_UP)
        fire, dropped = (*keep, *recent), n_old - len(keep)
    return Plan(fire, dropped, newest, next_at)


def overlap_action(
    policy: Overlap, previous: TaskStatus | None, buffered: float | None
) -> OverlapAction:
    """What a tick does when the schedule's previous tick task is in state ``previous``.

    ``None`` or a finished state: ``"create"``. While it is pending or running:
    ``allow`` creates, ``skip`` skips, ``cancel_previous`` cancels it and creates,
    ``buffer_one`` keeps this tick in the record (``"buffer"``) to start once the
    previous one ends, or skips it when one tick is buffered already.
    """
    if previous is None or previous.terminal or policy == "allow":
        return "create"
    if policy == "skip":
        return "skip"
    if policy == "cancel_previous":
        return "cancel_then_create"
    return "skip" if buffered is not None else "buffer"


# -- the stored record ------------------------------------------------------------------------------

PausedBy = Literal["", "operator", "undeclared"]


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as the store keeps it: its declaration and its firing state.

    The store keeps each record as one JSON text (``to_json``); ``fire_tick``
    and every other change compare the whole text before they write, so two
    workers never both advance a schedule.

    Attributes:
        name: the schedule's name (also its handler's, by default).
        queue: the queue its ticks go to.
        declaration: what ``@queue.periodic`` declared (rule, policies, task options).
        last: the last tick handled (fired, skipped or missed), epoch seconds.
        task: the id of the last tick task created, or ``None``.
        buffered: ``overlap="buffer_one"``: a tick waiting for the previous one to end.
        paused: ``""`` (running), ``"operator"`` (paused by a person) or
            ``"undeclared"`` (no longer declared by the workers' code).
        paused_at: when it was paused.
        created_at, updated_at: epoch seconds.
        text: the stored JSON this record was read from (the compare-and-set token).
    """

    name: str
    queue: str
    declaration: Mapping[str, Any]
    last: float
    task: str | None = None
    buffered: float | None = None
    paused: PausedBy = ""
    paused_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    text: str = field(default="", compare=False, repr=False)

    @property
    def rule(self) -> Rule:
        """The declared rule."""
        d = self.declaration
        return Rule(every=d.get("every"), cron=d.get("cron"), tz=d.get("tz", "UTC"))

    def next_fire(self) -> float:
        """The next tick after the last one handled."""
        return self.rule.next_after(self.last)

    def to_json(self) -> str:
        """The stored text (keys sorted: equal records have equal texts)."""
        return json.dumps(
            {
                "name": self.name,
                "queue": self.queue,
                "declaration": self.declaration,
                "last": self.last,
                "task": self.task,
                "buffered": self.buffered,
                "paused": self.paused,
                "paused_at": self.paused_at,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            },
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ScheduleRecord:
        """Read a stored record.

        Raises:
            ValueError: the text is not a schedule record.
        """
        try:
            d = json.loads(text)
            return cls(
                name=str(d["name"]),
                queue=str(d["queue"]),
                declaration=dict(d["declaration"]),
                last=float(d["last"]),
                task=d.get("task"),
                buffered=None if d.get("buffered") is None else float(d["buffered"]),
                paused=d.get("paused") or "",
                paused_at=None if d.get("paused_at") is None else float(d["paused_at"]),
                created_at=float(d.get("created_at", 0.0)),
                updated_at=float(d.get("updated_at", 0.0)),
                text=text,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a schedule record: {exc!r}") from None

    def changed(self, now: float, **changes: Any) -> ScheduleRecord:
        """A copy with ``changes`` and ``updated_at=now``; its ``text`` is the new JSON."""
        new = replace(self, updated_at=now, **changes)
        return replace(new, text=new.to_json())


# -- a declaration (@queue.periodic) ----------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A declared schedule: a task template plus a rule and its policies (``@queue.periodic``).

    Attributes:
        name: unique in the store; the tick ids carry it.
        queue: the queue its ticks go to.
        rule: when it ticks.
        missed: what to do about ticks no worker fired in time (see ``plan``).
        catch_up: with ``missed="all"``: an int (the newest that many missed ticks) or
            seconds (those at most that old); ``None``: up to ``MAX_CATCH_UP``.
        overlap: what a tick does while the previous tick's task is pending or running.
        task: the tick task's template: ``handler``, ``params``, ``priority``,
            ``max_retries``, ``backoff``, ``timeout``, ``resources`` (plain JSON).
    """

    name: str
    queue: str
    rule: Rule
    missed: Missed = "skip"
    catch_up: int | float | None = None
    overlap: Overlap = "allow"
    task: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "periodic")
        if self.missed not in MISSED:
            raise ValueError(f"periodic: missed must be one of {list(MISSED)}, got {self.missed!r}")
        if self.overlap not in OVERLAP:
            raise ValueError(
                f"periodic: overlap must be one of {list(OVERLAP)}, got {self.overlap!r}"
            )
        c = self.catch_up
        if isinstance(c, timedelta):
            object.__setattr__(self, "catch_up", c.total_seconds())
        elif c is not None and (
            isinstance(c, bool)
            or not isinstance(c, (int, float))
            or c < (1 if isinstance(c, int) else 0)
            or not math.isfinite(c)
        ):
            raise ValueError(
                "periodic: catch_up must be a count of ticks (int >= 1), a window (timedelta "
                f"or float seconds) or None, got {c!r}"
            )
        if c is not None and self.missed != "all":
            raise ValueError(
                f'periodic: catch_up applies to missed="all" only, got {self.missed!r}'
            )

    def declaration(self) -> dict[str, Any]:
        """What the store keeps of it (plain JSON; a change is seen at the next worker start)."""
        out: dict[str, Any] = {**self.rule.to_dict(), "missed": self.missed}
        if self.catch_up is not None:
            key = "catch_up_count" if isinstance(self.catch_up, int) else "catch_up_seconds"
            out[key] = self.catch_up
        out["overlap"] = self.overlap
        out["task"] = dict(self.task)
        return out

    @classmethod
    def from_record(cls, record: ScheduleRecord) -> Schedule:
        """The schedule a stored record declares (the CLI's ``trigger`` and the dashboard).

        Raises:
            ValueError: a declaration this version cannot read.
        """
        d = record.declaration
        catch_up: int | float | None = d.get("catch_up_count")
        if catch_up is None and d.get("catch_up_seconds") is not None:
            catch_up = float(d["catch_up_seconds"])
        return cls(
            name=record.name,
            queue=record.queue,
            rule=record.rule,
            missed=d.get("missed", "skip"),
            catch_up=catch_up,
            overlap=d.get("overlap", "allow"),
            task=dict(d.get("task") or {}),
        )


def tick_spec(schedule: Schedule, fire_at: float, *, task_id: str | None = None) -> Any:
    """The ``TaskSpec`` of the tick at ``fire_at``: the template, due at ``fire_at``.

    Raises:
        ValueError: a template field the task record refuses (named).
    """
    from resile.queue.task import TaskSpec

    t = schedule.task
    options = {k: t[k] for k in ("priority", "max_retries", "backoff", "resources") if k in t}
    return TaskSpec(
        handler=str(t.get("handler") or schedule.name),
        params=dict(t.get("params") or {}),
        id=task_id or tick_id(schedule.name, fire_at),
        queue=schedule.queue,
        timeout=t.get("timeout"),
        due_at=fire_at,
        **options,
    )
