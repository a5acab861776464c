"""Tests of resile.budget: the gRPC retry-throttling token bucket, alone and under @retry."""

from __future__ import annotations

import math
import threading

import anyio
import anyio.lowlevel
import pytest

from _examples import assert_page_shows, run_example
from resile import Constant, Exponential, RetryBudget, after_attempts, retry
from resile.testing import FakeClock


class TestValidation:
    @pytest.mark.parametrize("value", [0, -1, 1001, True, "10", float("nan")])
    def test_max_tokens_out_of_range(self, value: object) -> None:
        """max_tokens outside (0, 1000] is refused, naming the field and the value."""
        with pytest.raises(ValueError, match=r"max_tokens must be in \(0, 1000\], got"):
            RetryBudget(max_tokens=value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [0, -0.1, 1.5, False])
    def test_token_ratio_out_of_range(self, value: object) -> None:
        """token_ratio outside (0, 1] is refused."""
        with pytest.raises(ValueError, match=r"token_ratio must be in \(0, 1\], got"):
            RetryBudget(token_ratio=value)  # type: ignore[arg-type]

    def test_retry_refuses_an_object_without_the_protocol(self) -> None:
        """@retry(budget=...) refuses an object that is not a budget."""
        with pytest.raises(TypeError, match="budget must be"):
            retry(budget=object())  # type: ignore[arg-type]


class TestTokens:
    def test_starts_full(self) -> None:
        """A new budget holds max_tokens and allows retries."""
        budget = RetryBudget(max_tokens=10, token_ratio=0.1)
        assert budget.tokens == 10
        assert budget.can_retry()

    def test_failure_costs_one_and_success_gives_back_ratio(self) -> None:
        """A failure takes 1 token; a success gives back token_ratio, capped at max_tokens."""
        budget = RetryBudget(max_tokens=10, token_ratio=0.5)
        budget.record_failure()
        budget.record_failure()
        assert budget.tokens == 8
        budget.record_success()
        assert budget.tokens == 8.5
        for _ in range(10):
            budget.record_success()
        assert budget.tokens == 10

    def test_never_below_zero(self) -> None:
        """Tokens never go below zero however many failures."""
        budget = RetryBudget(max_tokens=3)
        for _ in range(10):
            budget.record_failure()
        assert budget.tokens == 0

    def test_retries_stop_at_half(self) -> None:
        """Retries are allowed only while tokens > max_tokens / 2 (5 of 10 is not enough)."""
        budget = RetryBudget(max_tokens=10)
        for _ in range(4):
            budget.record_failure()
        assert budget.tokens == 6
        assert budget.can_retry()
        budget.record_failure()
        assert budget.tokens == 5
        assert not budget.can_retry()

    def test_successes_reopen_retries(self) -> None:
        """After the dependency recovers, successes refill the bucket above half and retries resume."""
        budget = RetryBudget(max_tokens=10, token_ratio=0.1)
        for _ in range(5):
            budget.record_failure()
        assert not budget.can_retry()
        for _ in range(10):  # +1.0 token, 5 -> 6 (rounding aside)
            budget.record_success()
        assert budget.can_retry()

    def test_repr_shows_the_tokens(self) -> None:
        """The repr names the configuration and the tokens left."""
        budget = RetryBudget(max_tokens=10, token_ratio=0.1)
        budget.record_failure()
        assert repr(budget) == "RetryBudget(max_tokens=10, token_ratio=0.1, tokens=9)"


# The storm: N callers against a dependency that always fails, each allowed 5 attempts.
CALLERS = 1000
MAX_TOKENS = 10
ATTEMPTS = 5
# With no success the tokens only fall: the k-th recorded failure leaves MAX_TOKENS - k
# tokens, and a retry is allowed only when more than MAX_TOKENS / 2 are left right after
# the retried attempt's own failure was recorded (the engine records, then asks, with no
# await in between). So only failures k < MAX_TOKENS / 2 can be followed by a retry:
# at most ceil(MAX_TOKENS / 2) - 1 = 4 retries across ALL callers, whatever the interleaving.
MAX_RETRIES = math.ceil(MAX_TOKENS / 2) - 1


class TestRetryStorm:
    @pytest.mark.anyio
    async def test_thousand_callers_make_at_most_calls_plus_half_budget(
        self, clock: FakeClock
    ) -> None:
        """1,000 concurrent callers with a shared budget make 1,000 + 4 calls, not 5,000."""
        budget = RetryBudget(max_tokens=MAX_TOKENS, token_ratio=0.1)
        calls = 0
        gave_up = 0

        @retry(budget=budget, stop=after_attempts(ATTEMPTS), backoff=Exponential(0.1))
        async def dead() -> None:
            nonlocal calls
            calls += 1
            await anyio.lowlevel.checkpoint()  # let every caller get its first attempt in
            raise ConnectionError("dependency is down")

        async def caller() -> None:
            nonlocal gave_up
            try:
                await dead()
            except ConnectionError:
                gave_up += 1

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)

        assert gave_up == CALLERS
        # The precise bound; the first MAX_RETRIES failures recorded are each retried
        # (nothing else runs between recording them and asking), so it is reached exactly.
        assert calls == CALLERS + MAX_RETRIES
        assert calls <= CALLERS + MAX_TOKENS / 2
        assert calls < ATTEMPTS * CALLERS / 4
        assert dead.statistics.retries == MAX_RETRIES  # type: ignore[attr-defined]
        assert budget.tokens == 0

    @pytest.mark.anyio
    async def test_without_a_budget_the_storm_is_five_fold(self, clock: FakeClock) -> None:
        """The same 1,000 callers without a budget make 5 x 1,000 calls: what the budget cuts."""
        calls = 0

        @retry(stop=after_attempts(ATTEMPTS), backoff=Exponential(0.1))
        async def dead() -> None:
            nonlocal calls
            calls += 1
            await anyio.lowlevel.checkpoint()
            raise ConnectionError("dependency is down")

        async def caller() -> None:
            with pytest.raises(ConnectionError):
                await dead()

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)
        assert calls == ATTEMPTS * CALLERS

    def test_threads_respect_the_same_bound(self, clock: FakeClock) -> None:
        """64 threads sharing a budget never exceed 64 + 4 calls (races only lower the count)."""
        budget = RetryBudget(max_tokens=MAX_TOKENS, token_ratio=0.1)
        lock = threading.Lock()
        calls = 0
        barrier = threading.Barrier(64)

        @retry(budget=budget, stop=after_attempts(ATTEMPTS), backoff=Constant(0.01))
        def dead() -> None:
            nonlocal calls
            with lock:
                calls += 1
            raise ConnectionError("down")

        def caller() -> None:
            barrier.wait(10)
            with pytest.raises(ConnectionError):
                dead()

        threads = [threading.Thread(target=caller) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert 64 <= calls <= 64 + MAX_RETRIES

    def test_successes_earn_retries_back(self, clock: FakeClock) -> None:
        """A budget drained by a storm lets retries through again once calls succeed."""
        budget = RetryBudget(max_tokens=MAX_TOKENS, token_ratio=0.5)
        healthy = False
        calls = 0

        @retry(budget=budget, stop=after_attempts(3), backoff=Constant(0.01))
        def dep() -> str:
            nonlocal calls
            calls += 1
            if not healthy:
                raise ConnectionError("down")
            return "ok"

        for _ in range(10):
            with pytest.raises(ConnectionError):
                dep()
        assert not budget.can_retry()
        healthy = True
        for _ in range(14):  # 0 + 14 x 0.5 = 7 tokens: a failure leaves 6 > 5
            assert dep() == "ok"
        healthy = False
        calls = 0
        with pytest.raises(ConnectionError):
            dep()
        assert calls == 2  # one retry was allowed again


class TestExample:
    def test_budget_example(self) -> None:
        """docs/examples/budget.py: the budget cuts 2,500 calls to 500 + 4; the throttle sheds load."""
        out = run_example("budget.py")
        assert "without a budget: 2500 calls" in out
        assert "with RetryBudget(10, 0.1): 504 calls" in out
        assert "throttle: 4 sent, 96 rejected locally" in out

    def test_page_carries_the_example(self) -> None:
        """docs/budget.md names the example and shows its code."""
        assert_page_shows("budget.md", "budget.py")
