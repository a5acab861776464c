"""Per-minute outcome counters: part of the Store contract, run against every backend."""

from __future__ import annotations

import random
from typing import Any

import pytest

from resile import Constant
from resile.queue import Store, TaskError, TaskSpec
from resile.queue._names import TIMING_EDGES, Tally
from resile.queue.store.base import Quantiles, Timings, timing_bucket

from .conftest import T0

W1 = "worker-1"
M0 = int(T0 // 60) * 60  # the minute T0 falls in


def spec(queue: str = "default", **kw: object) -> TaskSpec:
    return TaskSpec("h", queue=queue, backoff=Constant(5.0), **kw)  # type: ignore[arg-type]


def counts(done: int = 0, retried: int = 0, dead: int = 0) -> dict[Tally, int]:
    return {Tally.DONE: done, Tally.RETRIED: retried, Tally.DEAD: dead}


class TestTallies:
    def test_each_end_of_an_attempt_counts_once(self, store: Store) -> None:
        """complete counts done; a failure with retries left retried; without, dead."""
        a, b, c = (store.create(spec(max_retries=r), now=T0) for r in (0, 1, 0))
        store.lease("default", W1, limit=3, now=T0)
        store.complete(a.id, W1, 1, now=T0 + 1)
        store.fail(b.id, W1, TaskError("E", "x"), now=T0 + 2)
        store.fail(c.id, W1, TaskError("E", "x"), now=T0 + 3)
        assert store.tallies(since=M0, until=M0 + 59) == {M0: counts(done=1, retried=1, dead=1)}

    def test_minutes_and_queues(self, store: Store) -> None:
        """Counts go to the minute of the transition and to its queue; no queue sums them all."""
        for queue, at in (("mail", T0), ("mail", T0 + 60), ("sms", T0 + 60)):
            task = store.create(spec(queue), now=at)
            store.lease(queue, W1, now=at)
            store.complete(task.id, W1, None, now=at)
        assert store.tallies(since=M0, until=M0 + 119, queue="mail") == {
            M0: counts(done=1),
            M0 + 60: counts(done=1),
        }
        assert store.tallies(since=M0, until=M0 + 119) == {
            M0: counts(done=1),
            M0 + 60: counts(done=2),
        }
        assert store.tallies(since=M0 + 60, until=M0 + 119, queue="sms") == {M0 + 60: counts(1)}
        assert store.tallies(since=M0 + 120, until=M0 + 600) == {}

    def test_lapsed_leases_count(self, store: Store) -> None:
        """A lease that lapses counts retried (retries left) or dead (none left) when reclaimed."""
        store.create(spec(max_retries=1), now=T0)
        store.create(spec(max_retries=0), now=T0)
        store.lease("default", W1, limit=2, lease_seconds=10, now=T0)
        store.lease("default", "worker-2", now=T0 + 30)
        minute = int((T0 + 30) // 60) * 60
        assert store.tallies(since=minute, until=minute + 59) == {minute: counts(retried=1, dead=1)}

    def test_nothing_counted_by_other_transitions(self, store: Store) -> None:
        """Create, lease, release and cancel count nothing."""
        a = store.create(spec(), now=T0)
        b = store.create(spec(), now=T0)
        store.lease("default", W1, limit=2, now=T0)
        store.release(a.id, W1, now=T0)
        store.cancel(b.id, now=T0)
        assert store.tallies(since=M0, until=M0 + 59) == {}

    @pytest.mark.parametrize("bad", [float("nan"), "1", None])
    def test_bad_bounds(self, store: Store, bad: object) -> None:
        """A bound that is not epoch seconds is a ValueError naming it."""
        with pytest.raises(ValueError, match="tallies: since must be epoch seconds"):
            store.tallies(since=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="tallies: since must be epoch seconds"):
            store.timings(since=bad)  # type: ignore[arg-type]


def timing(run: dict[int, int], late: dict[int, int] | None = None) -> Timings:
    return Timings(Quantiles.of(run), Quantiles.of(late or {}))


class TestTimings:
    def test_run_times_by_queue(self, store: Store) -> None:
        """complete and fail count end - start in its bucket, per queue; none: no entry."""
        ends = {"mail": (0.003, 0.004, 3.0), "sms": (0.3,)}
        tasks = []
        for queue, runs in ends.items():
            for run in runs:
                tasks.append((store.create(spec(queue, max_retries=0), now=T0), queue, run))
        store.lease("mail", W1, limit=3, now=T0)
        store.lease("sms", W1, now=T0)
        for i, (task, _, run) in enumerate(tasks):
            if i % 2:
                store.fail(task.id, W1, TaskError("E", "x"), now=T0 + run)
            else:
                store.complete(task.id, W1, None, now=T0 + run)
        got = store.timings(since=M0, until=M0 + 59)
        assert got == {"mail": timing({2: 2, 11: 1}), "sms": timing({8: 1})}
        assert store.timings(since=M0, until=M0 + 59, queue="sms") == {"sms": timing({8: 1})}
        around = store.timings(since=M0 - 3 * 3600, until=M0 + 3 * 3600)  # whole hours
        assert around == got
        assert store.timings(since=M0 + 60, until=M0 + 600) == {}
        assert store.tallies(since=M0, until=M0 + 59) == {M0: counts(done=2, dead=2)}

    def test_retry_lateness(self, store: Store) -> None:
        """A retry attempt counts how late after its due time it started; a lapsed lease nothing."""
        task = store.create(spec(max_retries=2), now=T0)
        store.lease("default", W1, now=T0)
        store.fail(task.id, W1, TaskError("E", "x"), now=T0 + 0.9)  # run 0.9 s; due at T0 + 5.9
        store.lease("default", W1, now=T0 + 10, lease_seconds=5)  # 4.1 s late, then it lapses
        assert store.lease("default", "worker-2", now=T0 + 16) == []  # not timed; due T0 + 20
        store.lease("default", "worker-2", now=T0 + 21.3)  # 1.3 s late
        store.complete(task.id, "worker-2", None, now=T0 + 21.7)  # run 0.4 s
        assert store.timings(since=M0, until=M0 + 59) == {"default": timing({9: 1, 8: 1}, {10: 1})}

    def test_later_retries(self, store: Store) -> None:
        """Retries leased after their due time count how late, whether they fail or complete."""
        task = store.create(spec(max_retries=2), now=T0)
        store.lease("default", W1, now=T0)
        store.fail(task.id, W1, TaskError("E", "x"), now=T0 + 0.4)  # due at T0 + 5.4
        store.lease("default", W1, now=T0 + 20.4)  # 15 s late
        store.fail(task.id, W1, TaskError("E", "x"), now=T0 + 20.8)  # due at T0 + 25.8
        store.lease("default", W1, now=T0 + 30)  # 4.2 s late
        store.complete(task.id, W1, None, now=T0 + 30.3)
        got = store.timings(since=M0, until=M0 + 59)["default"]
        assert got == timing({8: 3}, {13: 1, 11: 1})
        assert got.late.n == 2 and got.late.p50 == pytest.approx(5.0)
        assert got.late.p95 == pytest.approx(10 * 2**0.9)


class TestQuantiles:
    def test_buckets(self) -> None:
        """A duration goes to the first edge it does not pass; above the last, one more."""
        assert timing_bucket(-1.0) == timing_bucket(0.0) == timing_bucket(0.001) == 0
        assert timing_bucket(0.0011) == 1
        assert timing_bucket(1.0) == TIMING_EDGES.index(1.0)
        assert timing_bucket(1e9) == len(TIMING_EDGES)

    def test_interpolated_in_the_bucket(self) -> None:
        """The rank falls in a bucket: geometric inside it, linear in the first, edge above."""
        assert Quantiles.of({}) == Quantiles(0, None, None)
        one = Quantiles.of({TIMING_EDGES.index(2.0): 2})  # (1, 2]: p50 at sqrt(2)
        assert one.n == 2 and one.p50 == pytest.approx(2**0.5)
        assert one.p95 == pytest.approx(2**0.95)
        assert Quantiles.of({0: 4}).p50 == pytest.approx(0.0005)
        assert Quantiles.of({len(TIMING_EDGES): 1}).p95 == TIMING_EDGES[-1]
        split = Quantiles.of({0: 50, 9: 50})  # p50 at the top of the first; p95 in (0.5, 1]
        assert split.p50 == pytest.approx(0.001)
        assert 0.5 < (split.p95 or 0) <= 1.0


class TestOverviewCounters:
    """The dashboard's ``Counters`` reads past minutes once and answers as the store does."""

    def test_agrees_with_the_store_as_time_moves(self, store: Store) -> None:
        """Attempts over 27 hours (some retried late, one after each read by a clock two
        minutes behind), read at moments 1 minute to 3 hours apart: the cached day of
        tallies and the hour's and day's timings equal what the store answers directly,
        and a read after the first asks only for recent minutes."""
        from resile.web._counters import DAY, FRESH, Counters

        rng = random.Random(5)
        start = M0 - 27 * 3600
        starts = sorted(start + rng.uniform(0, 27 * 3600) for _ in range(36))
        asked: list[tuple[int, int]] = []
        rows = store._timing_rows

        def counted(lo: int, hi: int, queue: str | None) -> Any:
            asked.append((lo, hi))
            return rows(lo, hi, queue)

        store._timing_rows = counted  # type: ignore[method-assign]
        counters = Counters()
        now, done, reads = start + 600, 0, 0
        while now < M0 + 3600:
            while done < len(starts) and starts[done] + 20 <= now:  # an attempt's whole life
                at, queue = starts[done], f"q{done % 2}"
                task = store.create(spec(queue, max_retries=1), now=at)
                store.lease(queue, W1, now=at)
                if done % 3 == 0:
                    store.fail(task.id, W1, TaskError("E", "x"), now=at + 0.01 * done)
                    at += 5.0 + 0.01 * done + rng.uniform(0.0, 4.0)  # a late retry
                    store.lease(queue, W1, now=at)
                store.complete(task.id, W1, None, now=at + rng.uniform(0.001, 9.0))
                done += 1
            asked.clear()
            got = [counters.tallies(store, now)]
            got += [counters.timings(store, now, span) for span in (3600, DAY)]
            mine = list(asked)
            assert got[0] == store.tallies(since=now - DAY + 1, until=now)
            for span, answer in zip((3600, DAY), got[1:], strict=True):
                assert answer == store.timings(since=now - span + 1, until=now), (now, span)
            if reads:  # the day's whole settled hours come from what was read before
                assert all(hi - lo < 2 * 60 + FRESH // 60 for lo, hi in mine), mine
            late = store.create(spec("q1"), now=now - 120)  # a clock 2 minutes behind
            store.lease("q1", W1, now=now - 120)
            store.complete(late.id, W1, None, now=now - 119)
            reads += 1
            now += rng.choice((60.0, 600.0, 3600.0, 3 * 3600.0))
        assert done == len(starts) and reads > 5
