"""Per-minute outcome counters: part of the Store contract, run against every backend."""

from __future__ import annotations

import pytest

from resile import Constant
from resile.queue import Store, TaskError, TaskSpec
from resile.queue._names import Tally

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
