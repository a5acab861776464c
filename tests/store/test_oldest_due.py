"""``Store.oldest_due_at``: the exact earliest due time of a queue's PENDING tasks, every backend."""

from __future__ import annotations

from typing import Any

import pytest

from resile import Constant
from resile.queue import Store, TaskSpec

from .conftest import T0


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "h")
    kw.setdefault("backoff", Constant(5.0))
    return TaskSpec(**kw)


class TestOldestDueAt:
    def test_an_empty_queue_has_none(self, store: Store) -> None:
        """No PENDING task (none at all, or only other queues'): None."""
        assert store.oldest_due_at("default") is None
        store.create(spec(queue="other"), now=T0)
        assert store.oldest_due_at("default") is None

    def test_the_earliest_due_time_whatever_the_lease_order(self, store: Store) -> None:
        """The oldest due time, not the first in lease order: an urgent young task ranks
        first, yet the old routine one is the oldest due."""
        store.create(spec(id="old", priority=5, due_at=T0 - 90), now=T0)
        store.create(spec(id="urgent", priority=0, due_at=T0 - 10), now=T0)
        store.create(spec(id="later", due_at=T0 + 60), now=T0)
        assert store.oldest_due_at("default") == T0 - 90
        assert [t.id for t in store.lease("default", "w", now=T0)] == ["urgent"]
        assert store.oldest_due_at("default") == T0 - 90

    def test_it_follows_every_transition(self, store: Store) -> None:
        """Leased, retried, released, canceled and requeued tasks leave and rejoin it."""
        store.create(spec(id="a", due_at=T0 - 30, max_retries=1), now=T0)
        store.create(spec(id="b", due_at=T0 + 100), now=T0)
        store.lease("default", "w", now=T0)  # takes a
        assert store.oldest_due_at("default") == T0 + 100
        store.fail("a", "w", RuntimeError("x"), now=T0 + 1)  # retried at T0 + 6
        assert store.oldest_due_at("default") == T0 + 6
        store.lease("default", "w", now=T0 + 6)
        store.release("a", "w", now=T0 + 7)
        assert store.oldest_due_at("default") == T0 + 7
        store.cancel("a", now=T0 + 8)
        assert store.oldest_due_at("default") == T0 + 100
        store.cancel("b", now=T0 + 8)
        assert store.oldest_due_at("default") is None
        store.requeue("b", delay=3, now=T0 + 9)
        assert store.oldest_due_at("default") == T0 + 12

    def test_delayed_tasks_that_came_due_count_by_their_due_time(self, store: Store) -> None:
        """A delayed task counts from its due time, before and after a lease moves it to ready."""
        store.create(spec(id="a", delay=10, priority=5), now=T0)
        store.create(spec(id="b", delay=20, priority=0), now=T0)
        store.create(spec(id="c", delay=5, resources={"gpu": 1}), now=T0)
        assert store.oldest_due_at("default") == T0 + 5
        # Both plain ones came due; the lease takes the urgent b (c needs a GPU), a waits.
        assert [t.id for t in store.lease("default", "w", capacity={}, now=T0 + 30)] == ["b"]
        assert store.oldest_due_at("default") == T0 + 5
        store.cancel("c", now=T0 + 30)
        assert store.oldest_due_at("default") == T0 + 10

    def test_a_paused_queue_still_reports_its_waiting_tasks(self, store: Store) -> None:
        """Pausing does not hide how long tasks have waited."""
        store.create(spec(due_at=T0 - 5), now=T0)
        store.pause("default", now=T0)
        assert store.oldest_due_at("default") == T0 - 5

    def test_a_bad_queue_is_refused(self, store: Store) -> None:
        """The queue must be a non-empty str; the error names the value."""
        with pytest.raises(
            ValueError, match="oldest_due_at: queue must be a non-empty str, got ''"
        ):
            store.oldest_due_at("")
