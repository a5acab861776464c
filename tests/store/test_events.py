"""Instrumentation events a store fires itself, on every backend: a cancel, a reclaimed lease.

These transitions happen where no worker sees them (a cancel from the CLI, an
API or the dashboard; a lapsed lease reclaimed by whichever worker leases
next), so the store's contract fires their events, once, in the process that
made the change.
"""

from __future__ import annotations

from typing import Any

import pytest

from resile import Constant, instrument
from resile.instrument import AttemptOutcome, Kind
from resile.queue import Store, TaskSpec, TaskStatus

from .conftest import T0

pytestmark = pytest.mark.usefixtures("no_hooks_left")

TASK_KINDS = (Kind.TASK_CANCELED, Kind.LEASE_EXPIRED, Kind.TASK_DEAD)


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "send")
    kw.setdefault("queue", "mail")
    kw.setdefault("backoff", Constant(5.0))
    return TaskSpec(**kw)


def events_of(events: list[Any]) -> list[tuple[Kind, str, str, str, int, Any]]:
    return [(e.kind, e.queue, e.task, e.task_id, e.attempt, e.outcome) for e in events]


class TestCancel:
    def test_a_pending_cancel_fires_one_canceled_event(self, store: Store) -> None:
        """Canceling a PENDING task fires task.canceled once, naming its queue and handler."""
        store.create(spec(id="a"), now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            assert store.cancel("a", now=T0 + 1)
        assert events_of(events) == [(Kind.TASK_CANCELED, "mail", "send", "a", 0, None)]

    def test_a_running_cancel_fires_one_canceled_event(self, store: Store) -> None:
        """Canceling a DOING task fires task.canceled once, for the attempt that ran."""
        store.create(spec(id="a"), now=T0)
        store.lease("mail", "w", now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            assert store.cancel("a", now=T0 + 1)
        assert events_of(events) == [(Kind.TASK_CANCELED, "mail", "send", "a", 1, None)]

    def test_a_cancel_that_changes_nothing_fires_nothing(self, store: Store) -> None:
        """A cancel of a finished or missing task returns False and fires no event."""
        store.create(spec(id="a"), now=T0)
        store.cancel("a", now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            assert not store.cancel("a", now=T0 + 1)
            assert not store.cancel("nope", now=T0 + 1)
        assert events == []

    @pytest.mark.anyio
    async def test_an_async_cancel_fires_it_too(self, store: Store) -> None:
        """cancel_async fires the same single task.canceled."""
        store.create(spec(id="a"), now=T0)
        try:
            with instrument.recording(*TASK_KINDS) as events:
                assert await store.cancel_async("a")
        finally:
            await store.aclose()
        assert [e.kind for e in events] == [Kind.TASK_CANCELED]


class TestReclaim:
    def test_a_lapsed_lease_with_retries_left_is_an_expired_attempt(self, store: Store) -> None:
        """A reclaimed lease with a retry left: one task.lease_expired (outcome expired)."""
        store.create(spec(id="a", max_retries=1), now=T0)
        store.lease("mail", "w1", lease_seconds=10, now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            store.lease("mail", "w2", lease_seconds=10, now=T0 + 11)
        expired = (Kind.LEASE_EXPIRED, "mail", "send", "a", 1, AttemptOutcome.EXPIRED)
        assert events_of(events) == [expired]
        assert events[0].error_type == "LeaseExpired"

    def test_a_lapsed_lease_with_no_retry_left_is_counted_expired_then_dead(
        self, store: Store
    ) -> None:
        """A reclaimed lease that dead-letters its task: task.lease_expired, then task.dead."""
        store.create(spec(id="a", max_retries=0), now=T0)
        store.lease("mail", "w1", lease_seconds=10, now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            assert store.lease("mail", "w2", lease_seconds=10, now=T0 + 11) == []
        assert store.get("a").status is TaskStatus.FAILED  # type: ignore[union-attr]
        assert events_of(events) == [
            (Kind.LEASE_EXPIRED, "mail", "send", "a", 1, AttemptOutcome.EXPIRED),
            (Kind.TASK_DEAD, "mail", "send", "a", 1, AttemptOutcome.EXPIRED),
        ]

    def test_the_reclaim_in_complete_then_lease_fires_it_too(self, store: Store) -> None:
        """complete_then_lease reclaims as lease does, with the same event."""
        store.create(spec(id="a", max_retries=0), now=T0)
        store.lease("mail", "w1", lease_seconds=10, now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            store.complete_then_lease([], "mail", "w2", lease_seconds=10, now=T0 + 11)
        assert [e.kind for e in events] == [Kind.LEASE_EXPIRED, Kind.TASK_DEAD]

    def test_a_live_lease_fires_nothing(self, store: Store) -> None:
        """A lease that has not lapsed is not reclaimed and fires nothing."""
        store.create(spec(id="a"), now=T0)
        store.lease("mail", "w1", lease_seconds=10, now=T0)
        with instrument.recording(*TASK_KINDS) as events:
            store.lease("mail", "w2", lease_seconds=10, now=T0 + 5)
        assert events == []
