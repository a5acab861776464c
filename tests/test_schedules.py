"""Durable schedules: rules, policies, DST, skew and the worker's scheduler, on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import resile
from resile import instrument
from resile.queue._names import TaskStatus
from resile.queue._scheduler import Scheduler
from resile.queue.schedules import (
    Rule,
    Schedule,
    ScheduleRecord,
    overlap_action,
    parse_tick_id,
    plan,
    tick_id,
)
from resile.queue.store import Store, open_store

T0 = 1_800_000_000.0  # a multiple of 60 (and of 3600)


class Epoch:
    """A store clock that moves only when told."""

    def __init__(self, at: float = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def epoch() -> Epoch:
    """The store's clock, at ``T0``."""
    return Epoch()


@pytest.fixture
def store(epoch: Epoch) -> Iterator[Store]:
    """An in-memory SQLite store on the fake epoch clock."""
    s = open_store("sqlite:///:memory:", clock=epoch)
    yield s
    s.close()


def local(tz: str, *args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold).timestamp()  # type: ignore[misc]


def sched(name: str = "job", **kw: object) -> Schedule:
    rule = kw.pop("rule", Rule(every=60))
    return Schedule(name=name, queue="default", rule=rule, task={"handler": name}, **kw)  # type: ignore[arg-type]


def ticks(store: Store) -> list[float]:
    """The fire times of the stored tick tasks, in order."""
    out = []
    for t in store.list(limit=1000):
        parsed = parse_tick_id(t.id)
        assert parsed is not None
        out.append(parsed[1])
    return sorted(out)


class TestRule:
    def test_every_ticks_at_multiples_of_the_period(self) -> None:
        """``every=`` ticks at multiples of its period since the epoch, whoever asks when."""
        r = Rule(every=300)
        assert r.next_after(T0 + 1) == T0 + 300
        assert r.next_after(T0) == T0 + 300
        assert r.latest(T0 + 299.9) == T0
        assert r.between(T0, T0 + 900, 10) == [T0 + 300, T0 + 600, T0 + 900]
        assert r.count(T0, T0 + 3000) == 10
        assert Rule(every=timedelta(minutes=5)) == r

    def test_cron_in_a_time_zone(self) -> None:
        """A cron rule ticks at its local times in the given zone."""
        r = Rule(cron="0 3 * * mon-fri", tz="Europe/Berlin")
        fri = local("Europe/Berlin", 2026, 1, 9, 3, 0)  # a Friday
        mon = local("Europe/Berlin", 2026, 1, 12, 3, 0)
        assert r.next_after(fri) == mon
        assert r.latest(mon) == mon
        assert r.latest(mon - 1) == fri

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({}, "exactly one of every= and cron="),
            ({"every": 60, "cron": "* * * * *"}, "exactly one"),
            ({"every": 0.5}, "every must be seconds >= 1"),
            ({"every": True}, "every must be"),
            ({"cron": "61 * * * *"}, "cron '61 \\* \\* \\* \\*' is not valid"),
            ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "IANA time zone"),
        ],
    )
    def test_bad_rules_name_the_field(self, kw: dict[str, object], message: str) -> None:
        """A bad rule is refused with the field and the value."""
        with pytest.raises(ValueError, match=message):
            Rule(**kw)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("tz", "spring", "fall"),
        [
            ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
            ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
        ],
    )
    def test_dst_skipped_and_repeated_hours_fire_once(
        self, tz: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
    ) -> None:
        """A daily 02:30 job fires once on the day 02:30 does not exist (at 03:00) and once
        on the day it happens twice (its first occurrence), in two zones."""
        r = Rule(cron="30 2 * * *", tz=tz)
        day = local(tz, *spring, 0, 0)
        got = r.between(day, day + 86400 - 1, 10)
        assert got == [local(tz, *spring, 3, 0)]
        day = local(tz, *fall, 0, 0)
        got = r.between(day, day + 25 * 3600 - 1, 10)
        assert got == [local(tz, *fall, 2, 30, fold=0)]

    def test_tick_ids_round_trip(self) -> None:
        """A tick's id names its schedule and fire time; other ids are not ticks."""
        assert parse_tick_id(tick_id("nightly.report", T0 + 0.5)) == ("nightly.report", T0 + 0.5)
        assert parse_tick_id(tick_id("a", T0, manual=True)) == ("a", T0)
        assert parse_tick_id("mail-42") is None
        assert parse_tick_id("sched:nope") is None


class TestPlan:
    def test_on_time_tick_fires(self) -> None:
        """A tick just passed fires; the next look is at the next tick."""
        p = plan(Rule(every=60), last=T0, now=T0 + 60.3)
        assert (p.fire, p.missed, p.through, p.next_at) == ((T0 + 60,), 0, T0 + 60, T0 + 120)

    def test_nothing_due(self) -> None:
        """Before the next tick nothing is due."""
        p = plan(Rule(every=60), last=T0, now=T0 + 59)
        assert (p.fire, p.through, p.next_at) == ((), None, T0 + 60)

    def test_skip_drops_every_missed_tick(self) -> None:
        """missed="skip": after ten missed periods nothing runs until the next tick."""
        p = plan(Rule(every=60), last=T0, now=T0 + 630, missed="skip")
        assert (p.fire, p.missed, p.through) == ((), 10, T0 + 600)

    def test_latest_runs_the_newest_missed_tick_once(self) -> None:
        """missed="latest": one run, for the newest missed tick."""
        p = plan(Rule(every=60), last=T0, now=T0 + 630, missed="latest")
        assert (p.fire, p.missed) == ((T0 + 600,), 9)

    def test_all_with_a_count(self) -> None:
        """missed="all", catch_up=3: the newest three missed ticks run, oldest first."""
        p = plan(Rule(every=60), last=T0, now=T0 + 630, missed="all", catch_up=3)
        assert (p.fire, p.missed) == ((T0 + 480, T0 + 540, T0 + 600), 7)

    def test_all_with_a_window(self) -> None:
        """missed="all", catch_up=200 s: the missed ticks at most 200 s old run."""
        p = plan(Rule(every=60), last=T0, now=T0 + 630, missed="all", catch_up=200.0)
        assert (p.fire, p.missed) == ((T0 + 480, T0 + 540, T0 + 600), 7)

    def test_all_without_a_limit(self) -> None:
        """missed="all" alone runs every missed tick."""
        p = plan(Rule(every=60), last=T0, now=T0 + 630, missed="all")
        assert p.fire == tuple(T0 + 60 * i for i in range(1, 11))

    def test_on_time_ticks_fire_beside_missed_ones(self) -> None:
        """Ticks within ON_TIME of now are on time whatever the policy; older ones are missed."""
        p = plan(Rule(every=1), last=T0, now=T0 + 20.5, missed="skip")
        assert p.fire == (T0 + 16, T0 + 17, T0 + 18, T0 + 19, T0 + 20)
        assert p.missed == 15


class TestOverlap:
    @pytest.mark.parametrize(
        ("policy", "prev", "buffered", "action"),
        [
            ("allow", TaskStatus.DOING, None, "create"),
            ("skip", TaskStatus.PENDING, None, "skip"),
            ("skip", TaskStatus.DONE, None, "create"),
            ("cancel_previous", TaskStatus.DOING, None, "cancel_then_create"),
            ("buffer_one", TaskStatus.DOING, None, "buffer"),
            ("buffer_one", TaskStatus.DOING, T0, "skip"),
            ("buffer_one", None, None, "create"),
        ],
    )
    def test_actions(
        self, policy: str, prev: TaskStatus | None, buffered: float | None, action: str
    ) -> None:
        """Each overlap policy's answer while the previous tick is pending, running or done."""
        assert overlap_action(policy, prev, buffered) == action  # type: ignore[arg-type]


class TestScheduler:
    def run(self, s: Scheduler, epoch: Epoch, until: float, step: float = 0.5) -> None:
        """Move the clock in steps, looking whenever a schedule is due."""
        while epoch.at < until:
            epoch.at = min(until, max(epoch.at + step, min(s.next_at(), until)))
            s.run_due(epoch.at)

    def test_each_tick_once_no_gap(self, store: Store, epoch: Epoch) -> None:
        """A scheduler on a fake clock enqueues every tick once, due at its fire time."""
        s = Scheduler(store, {"job": sched()}, ["default"])
        assert s.reconcile(epoch.at) == {"job": "added"}
        self.run(s, epoch, T0 + 600)
        assert ticks(store) == [T0 + 60 * i for i in range(1, 11)]
        assert all(t.due_at == parse_tick_id(t.id)[1] for t in store.list())  # type: ignore[index]

    def test_clock_skew_neither_duplicates_nor_drops(self, store: Store, epoch: Epoch) -> None:
        """Three workers whose clocks are -2 s, 0 and +2 s apart fire each tick exactly once."""
        every = {"job": sched(rule=Rule(every=1))}
        workers = [(Scheduler(store, every, ["default"]), skew) for skew in (-2.0, 0.0, 2.0)]
        for w, _ in workers:
            w.reconcile(epoch.at)
        true = T0
        while true < T0 + 60:
            true += 0.25
            for w, skew in workers:
                if w.next_at() <= true + skew:
                    w.run_due(true + skew)
        got = ticks(store)
        assert got == sorted(set(got))
        assert got[0] <= T0 + 1 and got[-1] >= T0 + 60
        assert got == [got[0] + i for i in range(len(got))]

    def test_reconcile_adds_updates_and_pauses_the_undeclared(
        self, store: Store, epoch: Epoch
    ) -> None:
        """At start a worker adds new schedules, updates changed ones and pauses (never deletes)
        those of its queues that its code no longer declares."""
        Scheduler(store, {"a": sched("a"), "b": sched("b")}, ["default"]).reconcile(T0)
        changed = {"a": sched("a", rule=Rule(every=120))}
        done = Scheduler(store, changed, ["default"]).reconcile(T0 + 1)
        assert done == {"a": "updated", "b": "paused"}
        records = {r.name: r for r in store.schedules()}
        assert records["a"].declaration["every"] == 120.0
        assert records["b"].paused == "undeclared"
        assert Scheduler(store, {}, ["default"]).reconcile(T0 + 2) == {}

    def test_a_paused_schedule_does_not_fire(self, store: Store, epoch: Epoch) -> None:
        """While paused nothing fires; after resume missed= decides about the paused ticks."""
        s = Scheduler(store, {"job": sched(missed="all", catch_up=2)}, ["default"])
        s.reconcile(T0)
        store.pause_schedule("job")
        self.run(s, epoch, T0 + 330)
        assert ticks(store) == []
        store.resume_schedule("job")
        self.run(s, epoch, T0 + 360.5)
        assert ticks(store) == [T0 + 240, T0 + 300, T0 + 360]

    @pytest.mark.parametrize(
        ("missed", "catch_up", "expected"),
        [
            ("skip", None, []),
            ("latest", None, [T0 + 600]),
            ("all", 3, [T0 + 480, T0 + 540, T0 + 600]),
            ("all", 155.0, [T0 + 480, T0 + 540, T0 + 600]),
            ("all", None, [T0 + 60 * i for i in range(1, 11)]),
        ],
    )
    def test_outage_follows_the_missed_policy(
        self,
        store: Store,
        epoch: Epoch,
        missed: str,
        catch_up: float | None,
        expected: list[float],
    ) -> None:
        """No worker for ten periods, then one starts: the missed ticks follow ``missed=``
        exactly, and the ticks after it fire on time."""
        decl = {"job": sched(missed=missed, catch_up=catch_up)}
        Scheduler(store, decl, ["default"]).reconcile(T0)
        epoch.at = T0 + 630
        late = Scheduler(store, decl, ["default"])
        late.reconcile(epoch.at)
        late.run_due(epoch.at)
        assert ticks(store) == expected
        self.run(late, epoch, T0 + 720)
        assert ticks(store) == [*expected, T0 + 660, T0 + 720]

    def test_overlap_skip(self, store: Store, epoch: Epoch) -> None:
        """overlap="skip": a tick while the previous one is still pending is skipped."""
        s = Scheduler(store, {"job": sched(overlap="skip")}, ["default"])
        s.reconcile(T0)
        self.run(s, epoch, T0 + 180)
        assert ticks(store) == [T0 + 60]

    def test_overlap_cancel_previous(self, store: Store, epoch: Epoch) -> None:
        """overlap="cancel_previous": the previous tick's task is canceled, the new one enqueued."""
        s = Scheduler(store, {"job": sched(overlap="cancel_previous")}, ["default"])
        s.reconcile(T0)
        self.run(s, epoch, T0 + 120)
        assert store.get(tick_id("job", T0 + 60)).status is TaskStatus.CANCELED  # type: ignore[union-attr]
        assert store.get(tick_id("job", T0 + 120)).status is TaskStatus.PENDING  # type: ignore[union-attr]

    def test_overlap_buffer_one(self, store: Store, epoch: Epoch) -> None:
        """overlap="buffer_one": while a tick runs, one later tick waits (more are dropped) and
        starts as soon as the running one finishes."""
        s = Scheduler(store, {"job": sched(overlap="buffer_one")}, ["default"])
        s.reconcile(T0)
        self.run(s, epoch, T0 + 60)
        (first,) = store.lease("default", "w1", now=epoch.at)
        self.run(s, epoch, T0 + 180)
        assert ticks(store) == [T0 + 60]
        record = store.get_schedule("job")
        assert record is not None and record.buffered == T0 + 120
        store.complete(first.id, "w1")
        s.poke(first.id, epoch.at)
        s.run_due(epoch.at)
        assert ticks(store) == [T0 + 60, T0 + 120]

    def test_tick_events(self, store: Store, epoch: Epoch) -> None:
        """Each fired, missed and skipped tick is reported to the instrumentation hooks."""
        s = Scheduler(store, {"job": sched(missed="latest")}, ["default"])
        s.reconcile(T0)
        epoch.at = T0 + 300.5
        with instrument.recording() as events:
            s.run_due(epoch.at)
        got = [(e.outcome, e.count) for e in events if e.kind is instrument.Kind.SCHEDULE_TICK]
        assert got == [("fired", 1), ("missed", 4)]


class TestDeclare:
    def test_periodic_registers_a_task_and_a_schedule(self) -> None:
        """``@queue.periodic`` returns the task function and declares its schedule."""
        q = resile.connect("sqlite:///:memory:")

        @q.periodic(cron="0 3 * * mon-fri", tz="Europe/Berlin", missed="latest", overlap="skip",
                    max_retries=3, params={"full": True})  # fmt: skip
        def nightly_report(full: bool) -> None: ...

        name = "TestDeclare.test_periodic_registers_a_task_and_a_schedule.nightly_report"
        assert nightly_report.name == name and q.handlers[name] is nightly_report
        decl = q.periodics[name].declaration()
        assert decl["cron"] == "0 3 * * mon-fri" and decl["task"]["params"] == {"full": True}
        q.close()

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({"every": 60, "missed": "some"}, "missed must be one of"),
            ({"every": 60, "overlap": "queue"}, "overlap must be one of"),
            ({"every": 60, "catch_up": 3}, 'catch_up applies to missed="all"'),
            ({"every": 60, "missed": "all", "catch_up": 0}, "catch_up must be"),
        ],
    )
    def test_bad_options_name_the_field(self, kw: dict[str, object], message: str) -> None:
        """A bad policy is refused when declared, naming the field and the value."""
        q = resile.connect("sqlite:///:memory:")
        with pytest.raises(ValueError, match=message):
            q.periodic(**kw)  # type: ignore[arg-type]
        q.close()

    def test_trigger_enqueues_a_run_now(self, store: Store, epoch: Epoch) -> None:
        """``trigger_schedule`` enqueues one run now, with its own id, outside the rule."""
        q = resile.Queue(store) if hasattr(resile, "Queue") else resile.connect(store)
        q.store.save_schedule("job", "default", sched().declaration())
        task = q.trigger_schedule("job")
        assert task.id == tick_id("job", epoch.at, manual=True) and task.due_at == epoch.at
        with pytest.raises(KeyError):
            q.trigger_schedule("nope")


def test_records_survive_json() -> None:
    """A record's stored text reads back equal (the compare-and-set token is stable)."""
    r = ScheduleRecord("a", "q", {"every": 60.0}, last=T0, created_at=T0).changed(T0)
    assert ScheduleRecord.from_json(r.text) == r
    assert ScheduleRecord.from_json(r.text).text == r.text
    assert datetime.fromtimestamp(T0, timezone.utc).minute == 0
