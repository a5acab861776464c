"""A circuit breaker in front of a flaky service, with @retry waiting for the probe.

Run: python docs/examples/breaker.py
"""

from __future__ import annotations

from resile import CircuitBreaker, CircuitOpen, CircuitState, Constant, after_attempts, retry


class PaymentService:
    """Fails its first five calls, then recovers."""

    def __init__(self) -> None:
        self.calls = 0

    def charge(self, cents: int) -> str:
        self.calls += 1
        if self.calls <= 5:
            raise ConnectionError("payments: connection refused")
        return f"charged {cents} cents"


service = PaymentService()


def show(old: CircuitState, new: CircuitState) -> None:
    print(f"circuit: {old} -> {new}")


payments = CircuitBreaker(
    failure_threshold=3,  # three failures in a row open it
    recovery=Constant(0.05),  # stay open 50 ms before a probe
    exclude=ValueError,  # bad input is not the service's fault
    name="payments",
    listeners=[show],
)


@payments
def charge_once(cents: int) -> str:
    return service.charge(cents)


# 1. Three failures open the circuit; the fourth call fails fast without touching the service.
for _ in range(3):
    try:
        charge_once(100)
    except ConnectionError as exc:
        print("failed:", exc)
try:
    charge_once(100)
except CircuitOpen as exc:
    print(f"refused without a call: retry after {exc.retry_after:.2f} s")
print("service calls so far:", service.calls)


# 2. @retry outside the breaker waits for the probe time instead of hammering.
@retry(stop=after_attempts(10), backoff=Constant(0.01), timeout=5)
@payments
def charge(cents: int) -> str:
    return service.charge(cents)


print(charge(250))
print("state:", payments.state)
