"""The worker's part of durable schedules: reconcile at start, fire due ticks, say when next.

Every worker of a queue runs one ``Scheduler`` over the schedules its code
declares (``@queue.periodic``); there is no leader. At each tick's time every
worker looks, plans (``schedules.plan``) and fires through
``Store.fire_tick``, whose compare-and-set on the stored record lets exactly
one of them write the tick and its task; the others find the record changed,
read it again and find nothing due. Between ticks it costs nothing: the
worker's loop sleeps until ``next_at``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from resile import instrument
from resile.instrument import Kind, ScheduleEvent
from resile.queue._names import TaskStatus
from resile.queue.schedules import (
    Schedule,
    ScheduleRecord,
    overlap_action,
    parse_tick_id,
    plan,
    tick_id,
    tick_spec,
)
from resile.queue.store.base import Store

__all__ = ["Scheduler"]

logger = logging.getLogger("resile.queue")

# Reads and swaps of one schedule in one look before it waits for its next tick.
_TRIES = 20
# While a buffered tick waits for the previous one (overlap="buffer_one"), look at least this often.
_BUFFER_LOOK = 5.0
# A tick is enqueued this long before its time (due at its time): the worker's timer then
# starts it on time instead of after the store round trips of the enqueue.
LEAD = 0.2


def _emit(schedule: Schedule, outcome: str, count: int, last: float | None, nxt: float) -> None:
    if (count or outcome == "paused") and instrument.hooks:
        period = schedule.rule.period(nxt)
        instrument.emit(
            ScheduleEvent(
                Kind.SCHEDULE_TICK, schedule.name, schedule.queue, outcome, count, last, nxt, period
            )
        )


class Scheduler:
    """Fires the declared schedules of one worker's queues.

    Args:
        store: the queue's store.
        schedules: the declared schedules, by name (``Queue.periodics``).
        queues: the worker's queues: only their schedules are its business.
        lead: seconds before its time that a tick is enqueued (its task is due at its
            time); as a clock that runs ``lead`` fast, it changes no tick's identity.
    """

    def __init__(
        self,
        store: Store,
        schedules: Mapping[str, Schedule],
        queues: Sequence[str],
        *,
        lead: float = LEAD,
    ) -> None:
        self.store = store
        self.schedules = {n: s for n, s in schedules.items() if s.queue in queues}
        self.queues = tuple(queues)
        self.lead = lead
        self._next: dict[str, float] = {}

    def reconcile(self, now: float) -> dict[str, str]:
        """Store the declared schedules (added / updated / unchanged) and pause, as
        ``"undeclared"``, the stored schedules of these queues that the code no longer
        declares (never deleted). A worker that declares none touches nothing.

        Returns:
            schedule name -> what was done (``added``, ``updated``, ``unchanged``, ``paused``).
        """
        done: dict[str, str] = {}
        if not self.schedules:
            return done
        for name, sched in self.schedules.items():
            done[name] = self.store.save_schedule(name, sched.queue, sched.declaration(), now=now)
            self._next[name] = now
        for record in self.store.schedules():
            mine = record.queue in self.queues and record.name not in self.schedules
            if mine and self.store.pause_schedule(record.name, reason="undeclared", now=now):
                done[record.name] = "paused"
                logger.warning(
                    "resile: schedule %r is no longer declared; paused (resile schedules "
                    "delete %s removes it)",
                    record.name,
                    record.name,
                )
        return done

    def next_at(self) -> float:
        """When to look next (``lead`` before the next tick; ``inf``: nothing declared)."""
        return min(self._next.values(), default=math.inf) - self.lead

    def poke(self, task_id: str, now: float) -> None:
        """A task finished here: when it is a tick, look at its schedule again at once
        (a tick buffered behind it may start)."""
        tick = parse_tick_id(task_id)
        if tick is not None and tick[0] in self._next:
            sched = self.schedules[tick[0]]
            if sched.overlap == "buffer_one":
                self._next[tick[0]] = now

    def run_due(self, now: float) -> float:
        """Handle every schedule due at ``now``; returns ``next_at()``.

        A store error for one schedule is logged and that schedule is looked at again
        a second later; the others go on.
        """
        ahead = now + self.lead
        for name, at in list(self._next.items()):
            if at > ahead:
                continue
            try:
                self._next[name] = self.look(self.schedules[name], now)
            except Exception:
                logger.exception("resile: schedule %r: store error; looking again in 1 s", name)
                self._next[name] = now + 1.0
        return self.next_at()

    # -- one schedule ------------------------------------------------------------------------

    def _status(self, task_id: str | None) -> TaskStatus | None:
        if task_id is None:
            return None
        task = self.store.get(task_id)
        return None if task is None else task.status

    def look(self, sched: Schedule, now: float) -> float:
        """Fire what is due of ``sched`` by ``now + lead`` (the store writes at ``now``);
        returns when its next tick is."""
        store = self.store
        rule = sched.rule
        ahead = now + self.lead
        for _ in range(_TRIES):
            record = store.get_schedule(sched.name)
            if record is None or record.paused:
                nxt = rule.next_after(now)
                if record is not None:
                    _emit(sched, "paused", 0, None, nxt)
                return nxt
            if record.buffered is not None:
                promoted = self._promote(sched, record, now)
                if promoted is None:
                    continue  # changed meanwhile
                record = promoted
            p = plan(
                rule, last=record.last, now=ahead, missed=sched.missed, catch_up=sched.catch_up
            )
            if p.through is None:
                return self._later(record, p.next_at, now)
            done = self._fire(sched, record, p.fire, p.through, now)
            if done is None:
                continue
            _emit(sched, "missed", p.missed, p.through, p.next_at)
            return self._later(done, p.next_at, now)
        return now + 0.05  # other writers kept winning: look again soon

    def _later(self, record: ScheduleRecord, next_at: float, now: float) -> float:
        if record.buffered is not None:
            return min(next_at, now + _BUFFER_LOOK)
        return next_at

    def _promote(
        self, sched: Schedule, record: ScheduleRecord, now: float
    ) -> ScheduleRecord | None:
        """Start the buffered tick when the previous one ended; the record after (``None``:
        it changed meanwhile)."""
        assert record.buffered is not None
        if not _ended(self._status(record.task)):
            return record
        at = record.buffered
        tid = tick_id(sched.name, at)
        new = record.changed(now, buffered=None, task=tid)
        spec = tick_spec(sched, at, task_id=tid)
        if self.store.fire_tick(record, new, spec, now=now) is False:
            return None
        _emit(sched, "fired", 1, at, sched.rule.next_after(now))
        return new

    def _fire(
        self,
        sched: Schedule,
        record: ScheduleRecord,
        fire: Sequence[float],
        through: float,
        now: float,
    ) -> ScheduleRecord | None:
        """Fire ``fire`` one by one, then advance to ``through``; ``None`` when the first
        swap lost (someone else handled these ticks: plan again)."""
        current = record
        next_fire = sched.rule.next_after(now)
        for i, at in enumerate(fire):
            last = through if i == len(fire) - 1 else at
            prev = None if sched.overlap == "allow" else self._status(current.task)
            action = overlap_action(sched.overlap, prev, current.buffered)
            spec = None
            if action == "create" or action == "cancel_then_create":
                if action == "cancel_then_create" and current.task is not None:
                    self.store.cancel(current.task, now=now)
                tid = tick_id(sched.name, at)
                new = current.changed(now, last=last, task=tid)
                spec = tick_spec(sched, at, task_id=tid)
            elif action == "buffer":
                new = current.changed(now, last=last, buffered=at)
            else:
                new = current.changed(now, last=last)
            if self.store.fire_tick(current, new, spec, now=now) is False:
                return None if i == 0 else current
            _emit(sched, "fired" if spec is not None else "skipped", 1, at, next_fire)
            if action == "buffer":
                logger.info("resile: schedule %r: tick %s buffered", sched.name, at)
            current = new
        if current.last < through:
            new = current.changed(now, last=through)
            if self.store.fire_tick(current, new, None, now=now) is False:
                return None if current is record else current
            current = new
        return current


def _ended(status: TaskStatus | None) -> bool:
    return status is None or status.terminal
