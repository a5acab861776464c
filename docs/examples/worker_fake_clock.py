"""A burst worker under resile's fake clock: two retries 30 s apart, no real wait."""

import time

import resile
from resile.testing import no_waits

with no_waits() as clock:
    # The store's wall clock follows resile's fake one.
    queue = resile.connect("sqlite:///:memory:", clock=lambda: 1.7e9 + clock.monotonic())

    @queue.task(backoff=resile.Constant(30.0), max_retries=2)
    def sync_account(account: int) -> None:
        raise ConnectionError("the account service is down")

    task = sync_account.enqueue(account=7)
    started = time.monotonic()
    resile.Worker(queue).run(burst=True)
    got = queue.get(task.id)
    assert got is not None
    print(got.status.value, got.attempts, f"{clock.total:.0f} s waited on the fake clock")
    assert time.monotonic() - started < 10
    assert got.status is resile.TaskStatus.FAILED and got.attempts == 3
    queue.close()
