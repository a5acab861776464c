"""resile.queue._transitions: every state change decided once, by pure functions."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resile.backoff import Backoff, Constant, DecorrelatedJitter, Exponential, Linear
from resile.queue import _transitions as T
from resile.queue._names import LEASE_EXPIRED_REASON, Outcome, TaskStatus
from resile.queue.task import AttemptRecord, TaskError

ERR = TaskError("ValueError", "boom", "Traceback ...")
NOW = 1_700_000_000.0

# -- strategies ----------------------------------------------------------------------------------

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
seeds = st.integers(min_value=0, max_value=2**31)
jitters = st.sampled_from(["none", "full", "equal", 0.5])

policies: st.SearchStrategy[Backoff] = st.one_of(
    st.builds(lambda d, s: Constant(d, seed=s), seconds, seeds),
    st.builds(lambda i, n, s: Linear(i, n, seed=s), seconds, seconds, seeds),
    st.builds(
        lambda i, m, j, s: Exponential(i, m, max_delay=3600.0 + i, jitter=j, seed=s),
        seconds,
        st.floats(min_value=1.0, max_value=10.0),
        jitters,
        seeds,
    ),
    st.builds(lambda b, s: DecorrelatedJitter(b, seed=s), seconds, seeds),
)
# Stored policies no backend can use: not JSON, not an object, an unknown type, bad fields.
unusable = st.sampled_from(
    ["", "not json", "[1, 2]", "null", '{"type": "nope"}', '{"type": "constant", "delay_s": -1}']
)
last_delays = st.one_of(st.none(), seconds)


def policy_delay(policy: dict[str, Any], attempts: int, last: float | None) -> float:
    """The oracle: what a fresh policy rebuilt from its dict waits after ``attempts``."""
    return Backoff.from_dict(policy).delay(max(1, attempts), last)


# -- which transition leaves which status --------------------------------------------------------


class TestAllowed:
    """The sets and predicates of which transition may leave which status."""

    @pytest.mark.parametrize(
        ("check", "allowed"),
        [
            (T.can_lease, {"PENDING"}),
            (T.can_cancel, {"PENDING", "DOING"}),
            (T.can_requeue, {"FAILED", "CANCELED"}),
            (T.can_edit, {"PENDING", "DOING"}),
        ],
    )
    def test_predicates(self, check: Any, allowed: set[str]) -> None:
        """Each predicate accepts exactly its statuses, as the enum or as stored text."""
        for status in TaskStatus:
            assert check(status) is (status.value in allowed)
            assert check(status.value) is (status.value in allowed)
        assert check(None) is False
        assert check("pending") is False
        assert check("") is False

    def test_held(self) -> None:
        """Only the DOING task's lease owner holds it."""
        assert T.is_held("DOING", "w1", "w1")
        assert T.is_held(TaskStatus.DOING, "w1", "w1")
        assert not T.is_held("DOING", "w2", "w1")
        assert not T.is_held("PENDING", "w1", "w1")
        assert not T.is_held(None, None, "w1")

    def test_sets_match_the_docstring_machine(self) -> None:
        """The sets are the state machine: terminal states leave only by requeue."""
        assert {s for s in TaskStatus if s.terminal and s is not TaskStatus.DONE} == T.REQUEUE_FROM
        assert {s for s in TaskStatus if not s.terminal} == T.CANCEL_FROM
        assert {TaskStatus.DOING} == T.HELD_FROM
        assert {TaskStatus.PENDING} == T.LEASE_FROM

    def test_ready(self) -> None:
        """A PENDING task is ready at its due time, not before."""
        assert T.is_ready(NOW, NOW)
        assert not T.is_ready(NOW + 0.001, NOW)


# -- create, lease, complete, release, cancel, requeue -------------------------------------------


class TestSimpleTransitions:
    """The transitions that need no policy."""

    def test_create(self) -> None:
        """A new task is PENDING, due after its delay, or at an explicit due time."""
        now_due = T.create(None, 0.0, NOW)
        assert (now_due.status, now_due.due_at, now_due.ready) == (TaskStatus.PENDING, NOW, True)
        later = T.create(None, 5.0, NOW)
        assert (later.due_at, later.ready) == (NOW + 5.0, False)
        fixed = T.create(NOW - 10.0, 5.0, NOW)
        assert (fixed.due_at, fixed.ready) == (NOW - 10.0, True)

    @pytest.mark.parametrize(("stored", "after"), [(0, 1), (3, 4), ("2", 3), (None, 1), ("x", 1)])
    def test_lease(self, stored: Any, after: int) -> None:
        """A lease counts the attempt (an unreadable count reads as 0) and starts the lease."""
        leased = T.lease(stored, NOW, 20.0)
        assert leased.status is TaskStatus.DOING
        assert leased.attempts == after
        assert (leased.started_at, leased.lease_expires_at) == (NOW, NOW + 20.0)

    def test_complete(self) -> None:
        """Success: DONE, progress 100, an ``ok`` history entry ending now."""
        done = T.complete(2, NOW - 1.0, NOW)
        assert (done.status, done.progress, done.finished_at) == (TaskStatus.DONE, 100.0, NOW)
        assert done.entry == AttemptRecord(2, NOW - 1.0, NOW, Outcome.OK)

    @pytest.mark.parametrize(("stored", "after"), [(1, 0), (0, 0), (5, 4), ("3", 2), (None, 0)])
    def test_release(self, stored: Any, after: int) -> None:
        """A release does not count the attempt (never below 0) and is due at once."""
        released = T.release(stored, NOW)
        assert (released.status, released.attempts) == (TaskStatus.PENDING, after)
        assert (released.due_at, released.ready) == (NOW, True)

    def test_cancel_pending(self) -> None:
        """A PENDING task is canceled without a history entry."""
        canceled = T.cancel("PENDING", attempts=0, started_at=None, now=NOW)
        assert canceled is not None
        assert (canceled.status, canceled.finished_at, canceled.entry) == (
            TaskStatus.CANCELED,
            NOW,
            None,
        )

    def test_cancel_doing_records_the_running_attempt(self) -> None:
        """A DOING task's running attempt gets a ``canceled`` entry with the canceled error."""
        canceled = T.cancel(TaskStatus.DOING, attempts=2, started_at=NOW - 3, now=NOW)
        assert canceled is not None
        assert canceled.entry == AttemptRecord(2, NOW - 3, NOW, Outcome.CANCELED, T.CANCELED_ERROR)

    @pytest.mark.parametrize("status", ["DONE", "FAILED", "CANCELED", None, "BOGUS"])
    def test_cancel_refused(self, status: str | None) -> None:
        """A finished (or unknown) task is not canceled."""
        assert T.cancel(status, attempts=1, started_at=None, now=NOW) is None

    def test_requeue(self) -> None:
        """A requeue resets attempts and last delay and is due after its delay."""
        back = T.requeue(0.0, NOW)
        assert (back.status, back.attempts, back.last_delay) == (TaskStatus.PENDING, 0, None)
        assert (back.due_at, back.ready) == (NOW, True)
        later = T.requeue(30.0, NOW)
        assert (later.due_at, later.ready) == (NOW + 30.0, False)


# -- after a failure ------------------------------------------------------------------------------


def _fail(**kw: Any) -> T.AfterFailure:
    args: dict[str, Any] = {
        "attempts": 1,
        "max_retries": 3,
        "backoff": Constant(2.0).to_dict(),
        "last_delay": None,
        "error": ERR,
        "base": NOW,
    }
    args.update(kw)
    return T.after_failure(**args)


class TestAfterFailure:
    """The one decision after a failed attempt: retry when, or dead."""

    def test_retry_waits_the_policy_delay(self) -> None:
        """Retries left: PENDING, due at base + the policy's delay, the error kept."""
        d = _fail(attempts=2, backoff=json.dumps(Linear(1.0, 2.0).to_dict()))
        assert (d.dead, d.status, d.delay, d.due_at) == (False, TaskStatus.PENDING, 3.0, NOW + 3)
        assert d.error is ERR
        assert d.base == NOW
        assert not d.ready(NOW)
        assert d.ready(NOW + 3)

    def test_last_allowed_attempt_is_dead(self) -> None:
        """attempts > max_retries: FAILED, no wait, the policy not even read."""
        d = _fail(attempts=4, max_retries=3, backoff="not json")
        assert (d.dead, d.status, d.delay, d.due_at, d.error) == (
            True,
            TaskStatus.FAILED,
            0.0,
            NOW,
            ERR,
        )
        assert not d.ready(NOW + 100)

    def test_permanent_is_dead(self) -> None:
        """A permanent error dead-letters at once, retries left or not."""
        d = _fail(attempts=1, permanent=True)
        assert d.dead and d.error is ERR

    def test_explicit_delay_wins_over_the_policy(self) -> None:
        """A delay the handler asked for is used as is, even with an unusable policy."""
        d = _fail(delay=7.5, backoff="not json")
        assert (d.dead, d.delay, d.due_at, d.error) == (False, 7.5, NOW + 7.5, ERR)

    @pytest.mark.parametrize("backoff", ["not json", "", "[1]", None, {"type": "nope"}])
    def test_unusable_policy_is_a_corrupt_dead_letter(self, backoff: Any) -> None:
        """An unusable stored policy: FAILED with CorruptTask naming the attempt's error."""
        d = _fail(backoff=backoff)
        assert d.dead
        assert d.error.type == "CorruptTask"
        assert d.error.message.startswith("stored backoff policy is unusable (")
        assert d.error.message.endswith("); last error: ValueError: boom")
        assert d.error.traceback == ERR.traceback

    def test_unreadable_last_delay_is_a_corrupt_dead_letter(self) -> None:
        """A stored last delay that is not a number is treated like an unusable policy."""
        d = _fail(last_delay="soon")
        assert d.dead and d.error.type == "CorruptTask"

    def test_stored_text_fields(self) -> None:
        """Fields as a Redis HMGET returns them (text, "" for unset) decide like numbers."""
        policy = json.dumps(DecorrelatedJitter(1.0, jitter="none").to_dict())
        as_text = _fail(attempts="2", max_retries="3", backoff=policy, last_delay="4.0")
        as_numbers = _fail(attempts=2, max_retries=3, backoff=policy, last_delay=4.0)
        assert as_text == as_numbers
        unset = _fail(attempts="1", max_retries="", backoff=policy, last_delay="")
        assert unset.dead  # max_retries "" reads as 0
        assert _fail(attempts=None, max_retries=None).dead is False  # 0 > 0 is false

    def test_zero_last_delay_is_passed_on(self) -> None:
        """A stored last delay of 0.0 is a delay (not "none"), as DecorrelatedJitter sees it."""
        policy = DecorrelatedJitter(1.0, jitter="none").to_dict()
        zero = _fail(attempts=3, backoff=policy, last_delay=0.0)
        none = _fail(attempts=3, backoff=policy, last_delay=None)
        assert zero.delay == policy_delay(policy, 3, 0.0)
        assert none.delay == policy_delay(policy, 3, None)

    def test_unparsable_counts_raise(self) -> None:
        """A failure whose stored counts are not ints raises (the holder's call fails)."""
        with pytest.raises(ValueError):
            _fail(attempts="many")

    @settings(max_examples=300, deadline=None)
    @given(
        attempts=st.integers(min_value=0, max_value=40),
        max_retries=st.integers(min_value=0, max_value=40),
        policy=policies,
        as_text=st.booleans(),
        last=last_delays,
        permanent=st.booleans(),
        explicit=st.one_of(st.none(), seconds),
        base=st.floats(min_value=0.0, max_value=2e9),
    )
    def test_invariants(
        self,
        attempts: int,
        max_retries: int,
        policy: Backoff,
        as_text: bool,
        last: float | None,
        permanent: bool,
        explicit: float | None,
        base: float,
    ) -> None:
        """Dead iff permanent or out of retries; else due = base + delay, the policy's delay."""
        data = policy.to_dict()
        d = T.after_failure(
            attempts=str(attempts) if as_text else attempts,
            max_retries=str(max_retries) if as_text else max_retries,
            backoff=json.dumps(data) if as_text else data,
            last_delay=(None if last is None else repr(last)) if as_text else last,
            error=ERR,
            base=base,
            permanent=permanent,
            delay=explicit,
        )
        assert d.dead is (permanent or attempts > max_retries)
        assert d.due_at == base + d.delay
        assert d.base == base
        assert d.error is ERR  # a usable policy never turns the error into CorruptTask
        assert d.status is (TaskStatus.FAILED if d.dead else TaskStatus.PENDING)
        if d.dead:
            assert d.delay == 0.0
        elif explicit is not None:
            assert d.delay == explicit
        else:
            assert d.delay == policy_delay(data, attempts, last)
            assert math.isfinite(d.delay) and d.delay >= 0

    @settings(max_examples=200, deadline=None)
    @given(
        attempts=st.integers(min_value=0, max_value=40),
        max_retries=st.integers(min_value=0, max_value=40),
        bad=unusable,
        permanent=st.booleans(),
    )
    def test_unusable_policy_invariant(
        self, attempts: int, max_retries: int, bad: str, permanent: bool
    ) -> None:
        """With an unusable policy a retry becomes a CorruptTask dead letter; a death stays as is."""
        d = _fail(attempts=attempts, max_retries=max_retries, backoff=bad, permanent=permanent)
        assert d.dead
        assert d.delay == 0.0 and d.due_at == NOW
        would_retry = not permanent and attempts <= max_retries
        assert (d.error.type == "CorruptTask") is would_retry
        if not would_retry:
            assert d.error is ERR


class TestLeaseExpired:
    """A reclaimed lease: a LOST attempt under the after-failure rule, counted from the expiry."""

    def test_retry_from_the_expiry(self) -> None:
        """Retries left: the wait counts from the lease's expiry, not from now."""
        d = T.lease_expired(
            attempts=1,
            max_retries=2,
            backoff=Constant(5.0).to_dict(),
            last_delay=None,
            lease_expires_at=NOW - 60,
            now=NOW,
        )
        assert (d.dead, d.base, d.delay, d.due_at) == (False, NOW - 60, 5.0, NOW - 55)
        assert d.error == T.LEASE_EXPIRED_ERROR == TaskError("LeaseExpired", LEASE_EXPIRED_REASON)
        assert d.ready(NOW)

    @pytest.mark.parametrize("seen", [None, ""])
    def test_unknown_expiry_counts_from_now(self, seen: str | None) -> None:
        """An expiry that is not stored counts from now."""
        d = T.lease_expired(
            attempts="1",
            max_retries="2",
            backoff=json.dumps(Constant(5.0).to_dict()),
            last_delay="",
            lease_expires_at=seen,
            now=NOW,
        )
        assert (d.base, d.due_at) == (NOW, NOW + 5.0)

    def test_out_of_retries_is_dead(self) -> None:
        """The lost attempt was the last allowed: FAILED with the lease-expired error."""
        d = T.lease_expired(
            attempts=3,
            max_retries=2,
            backoff="not json",
            last_delay=None,
            lease_expires_at=repr(NOW - 1),
            now=NOW,
        )
        assert d.dead and d.error is T.LEASE_EXPIRED_ERROR

    @pytest.mark.parametrize(("attempts", "max_retries"), [("x", "3"), ("1", "y"), (None, "3")])
    def test_unreadable_counts_dead_letter(self, attempts: Any, max_retries: Any) -> None:
        """Counts that cannot be read count as attempt 1 of 1: dead, not an exception."""
        d = T.lease_expired(
            attempts=attempts,
            max_retries=max_retries,
            backoff=Constant(1.0).to_dict(),
            last_delay=None,
            lease_expires_at=NOW,
            now=NOW,
        )
        assert d.dead and d.error is T.LEASE_EXPIRED_ERROR

    def test_unusable_policy(self) -> None:
        """An unusable policy with retries left: CorruptTask naming the lease-expired error."""
        d = T.lease_expired(
            attempts=1,
            max_retries=3,
            backoff="",
            last_delay=None,
            lease_expires_at=NOW,
            now=NOW,
        )
        assert d.dead
        assert d.error.type == "CorruptTask"
        assert d.error.message.endswith(f"last error: LeaseExpired: {LEASE_EXPIRED_REASON}")

    @settings(max_examples=200, deadline=None)
    @given(
        attempts=st.integers(min_value=0, max_value=40),
        max_retries=st.integers(min_value=0, max_value=40),
        policy=policies,
        last=last_delays,
        expiry=st.floats(min_value=1.0, max_value=2e9),
    )
    def test_same_rule_as_after_failure(
        self, attempts: int, max_retries: int, policy: Backoff, last: float | None, expiry: float
    ) -> None:
        """lease_expired is after_failure with the lease error, counted from the expiry."""
        data = policy.to_dict()
        reclaimed = T.lease_expired(
            attempts=attempts,
            max_retries=max_retries,
            backoff=data,
            last_delay=last,
            lease_expires_at=expiry,
            now=NOW,
        )
        failed = T.after_failure(
            attempts=attempts,
            max_retries=max_retries,
            backoff=data,
            last_delay=last,
            error=T.LEASE_EXPIRED_ERROR,
            base=expiry,
        )
        assert reclaimed == failed


def test_corrupt_error() -> None:
    """The dead-letter error of an unusable task is a CorruptTask with the detail."""
    assert T.corrupt_error("column 'params': bad") == TaskError(
        "CorruptTask", "column 'params': bad", ""
    )


def test_corrupt() -> None:
    """A task that cannot be decoded is dead-lettered now with the reason."""
    d = T.corrupt("field 'params': not valid JSON", NOW)
    assert (d.dead, d.status, d.due_at, d.delay, d.base) == (True, TaskStatus.FAILED, NOW, 0.0, NOW)
    assert d.error == T.corrupt_error("field 'params': not valid JSON")


def test_decisions_are_frozen() -> None:
    """A decision is a value: it cannot be changed after it was made."""
    d = _fail()
    with pytest.raises(AttributeError):
        d.dead = True  # type: ignore[misc]


def test_api_is_stable() -> None:
    """The module's names, which every backend builds on, do not drift unnoticed."""
    assert sorted(T.__all__) == sorted(
        [
            *("CANCELED_ERROR", "CANCEL_FROM", "EDIT_FROM", "HELD_FROM", "LEASE_EXPIRED_ERROR"),
            *("LEASE_FROM", "REQUEUE_FROM", "AfterFailure", "Canceled", "Completed", "Created"),
            *("Leased", "Released", "Requeued", "after_failure", "can_cancel", "can_edit"),
            *("can_lease", "can_requeue", "cancel", "complete", "corrupt", "corrupt_error"),
            "create",
            *("is_held", "is_ready", "lease", "lease_expired", "release", "requeue"),
        ]
    )
    assert all(hasattr(T, name) for name in T.__all__)
