"""Retrying transports for ``httpx``: ``RetryTransport`` (sync) and ``AsyncRetryTransport``.

::

    import httpx
    from resile.http import RetryTransport

    client = httpx.Client(transport=RetryTransport())
    client.get("https://api.example.com/items")       # retried on 503, connect errors, ...

What is retried, by default:

* requests whose method is idempotent (``GET HEAD OPTIONS PUT DELETE TRACE``),
  on a retryable status (429, 502, 503, 504) and on transport errors
  (``httpx.ConnectError``, ``ConnectTimeout``, ``PoolTimeout``,
  ``ReadTimeout``, ``WriteTimeout``, ``ReadError``, ``WriteError``,
  ``RemoteProtocolError``);
* any other request (``POST``, ``PATCH``) only when it surely never reached
  the server: ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``.

A ``Retry-After`` header (delta-seconds or an HTTP date) sets the wait,
bounded by the backoff's ``max_delay``. The body of a failed response is read
and its connection released before the wait. When the retries are used up on
a status, the last response is **returned** (``raise_for_status()`` is yours
to call); when they are used up on a transport error, that error is raised.

Each request's timeouts are lowered to the time left in the current
``resile.deadline``, and no wait is started that would end past it.

The retry loop is resile's engine (``resile.Retrying``); its statistics and
hooks work as usual. ``httpx`` is needed only by this module (the ``http``
extra): ``import resile`` does not import it.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Generic, NoReturn, TypeVar

import httpx

from resile.backoff import Backoff, Exponential
from resile.deadline import check, deadline, remaining
from resile.retry import Retrying
from resile.stop import Stop, after_attempts

T = TypeVar("T")

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "AsyncRetryTransport",
    "RetryTransport",
    "RetryableStatus",
    "parse_retry_after",
]

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods that RFC 9110 (section 9.2.2) calls idempotent: safe to send twice."""

RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
"""Statuses that say "try again later" rather than "this request is wrong"."""

# The request never left: retrying is safe whatever the method.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request may have reached the server: retried for idempotent methods only.
_MAYBE_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

DEFAULT_BACKOFF = Exponential(0.2, max_delay=10.0)
DEFAULT_STOP = after_attempts(4)


class RetryableStatus(Exception):
    """A response whose status is retryable; raised inside an attempt, never to the caller.

    Hooks of the policy (``on_retry``, ``on_giveup``) see it as
    ``state.exception``.

    Attributes:
        response: the response (its body already read).
        status_code: its status.
        retry_after: the server's ``Retry-After`` in seconds, or ``None``
            (also ``None`` when ``respect_retry_after=False``).
    """

    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        self.response = response
        self.status_code = response.status_code
        self.retry_after = retry_after
        after = "" if retry_after is None else f", Retry-After {retry_after:g} s"
        super().__init__(f"HTTP {response.status_code} from {response.request.url}{after}")


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` if it is not valid.

    Both forms of RFC 9110 (section 10.2.3) are read: delta-seconds (``"120"``)
    and an HTTP date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, parsed with
    ``email.utils``); a date in the past gives ``0.0``.

    Args:
        value: the header value.
        now: the current time for dates (default: now, UTC).
    """
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _methods(methods: Iterable[str]) -> frozenset[str]:
    if isinstance(methods, str) or not all(isinstance(m, str) and m for m in methods):
        raise TypeError(
            f"RetryTransport: methods must be a collection of method names, got {methods!r}"
        )
    return frozenset(m.upper() for m in methods)


def _statuses(statuses: Iterable[int]) -> frozenset[int]:
    try:
        codes = frozenset(statuses)
    except TypeError:
        raise TypeError(
            f"RetryTransport: statuses must be a collection of ints, got {statuses!r}"
        ) from None
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise ValueError(
                f"RetryTransport: statuses must be HTTP status codes (100-599), got {code!r}"
            )
    return codes


class _RetryCore:
    """What the sync and async transports share: the policies and the decisions."""

    def __init__(
        self,
        policy: Retrying | None,
        backoff: Backoff | None,
        stop: Stop | None,
        methods: Iterable[str],
        statuses: Iterable[int],
        respect_retry_after: bool,
    ) -> None:
        if policy is not None:
            if not isinstance(policy, Retrying):
                raise TypeError(f"RetryTransport: policy must be a resile.Retrying, got {policy!r}")
            if backoff is not None or stop is not None:
                raise ValueError(
                    "RetryTransport: give policy, or backoff and stop, not both "
                    f"(got policy={policy!r}, backoff={backoff!r}, stop={stop!r})"
                )
        else:
            policy = Retrying(
                backoff=DEFAULT_BACKOFF if backoff is None else backoff,
                stop=DEFAULT_STOP if stop is None else stop,
                name="http",
            )
        self.methods = _methods(methods)
        self.statuses = _statuses(statuses)
        self.respect_retry_after = bool(respect_retry_after)
        # The transport decides what is retryable; the policy brings backoff, stop,
        # timeout, budget and hooks. Two copies share one set of statistics.
        overrides: dict[str, Any] = {"on_result": None, "fallback": None}
        overrides["raise_retry_error"] = False
        self.retrying = policy.copy(on=(*_NOT_SENT, *_MAYBE_SENT, RetryableStatus), **overrides)
        self._unsafe = policy.copy(on=_NOT_SENT, **overrides)
        self._unsafe.statistics = self.retrying.statistics

    def policy_for(self, request: httpx.Request) -> Retrying:
        return self.retrying if request.method.upper() in self.methods else self._unsafe

    def retryable(self, request: httpx.Request, response: httpx.Response) -> bool:
        """True when ``response`` should be retried."""
        return response.status_code in self.statuses and request.method.upper() in self.methods

    def retry_after(self, response: httpx.Response) -> float | None:
        """The wait the response asks for, when it is to be honoured."""
        header = response.headers.get("Retry-After") if self.respect_retry_after else None
        return None if header is None else parse_retry_after(header)

    def refuse(self, request: httpx.Request, response: httpx.Response, raw: bytes) -> NoReturn:
        """Fail the attempt that got a retryable status: raise it with a re-readable copy."""
        raise RetryableStatus(_rebuilt(response, raw, request), self.retry_after(response))

    @staticmethod
    def bound_timeouts(request: httpx.Request, configured: dict[str, Any] | None) -> None:
        """Lower each timeout of ``request`` to the time left in the current deadline."""
        left = remaining()
        if left is None:
            return
        check()
        base = configured or {}
        bounded: dict[str, float] = {}
        for key in ("connect", "read", "write", "pool"):
            value = base.get(key)
            bounded[key] = left if value is None else min(float(value), left)
        request.extensions["timeout"] = bounded

    def __repr__(self) -> str:
        return (
            f"methods={sorted(self.methods)!r}, statuses={sorted(self.statuses)!r}, "
            f"policy={self.retrying!r}"
        )


def _rebuilt(response: httpx.Response, raw: bytes, request: httpx.Request) -> httpx.Response:
    """A fresh response with the same status, headers and raw body, for the client to read."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
        request=request,
    )


class _Transport(Generic[T]):
    """The constructor both transports share (see ``RetryTransport`` for the arguments)."""

    _base: type[T]
    _default: Callable[[], T]

    def __init__(
        self,
        transport: T | None = None,
        *,
        policy: Retrying | None = None,
        backoff: Backoff | None = None,
        stop: Stop | None = None,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        statuses: Iterable[int] = RETRY_STATUSES,
        respect_retry_after: bool = True,
    ) -> None:
        if transport is not None and not isinstance(transport, self._base):
            raise TypeError(
                f"{type(self).__name__}: transport must be an httpx.{self._base.__name__}, "
                f"got {transport!r}"
            )
        self._core = _RetryCore(policy, backoff, stop, methods, statuses, respect_retry_after)
        self.retrying = self._core.retrying
        self.transport: T = transport if transport is not None else type(self)._default()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._core!r})"


class RetryTransport(_Transport[httpx.BaseTransport], httpx.BaseTransport):
    """An ``httpx`` transport that retries failed requests under a resile policy.

    Args:
        transport: the transport that sends each attempt (default:
            ``httpx.HTTPTransport()``); closed with this one.
        policy: a ``resile.Retrying`` giving the backoff, stop condition,
            total ``timeout``, budget and hooks. Its ``on``, ``on_result``,
            ``fallback`` and ``raise_retry_error`` are replaced: the transport
            decides what is retried and returns the last response on give-up.
        backoff, stop: instead of ``policy``: default
            ``Exponential(0.2, max_delay=10.0)`` and ``after_attempts(4)``.
        methods: methods retried on statuses and on errors after the request
            may have been sent (default ``IDEMPOTENT_METHODS``).
        statuses: retryable statuses (default ``RETRY_STATUSES``: 429, 502,
            503, 504).
        respect_retry_after: wait as long as the ``Retry-After`` header says
            (bounded by the backoff's ``max_delay``).

    Attributes:
        retrying: the policy in use; ``retrying.statistics`` counts calls,
            retries and waits.

    Raises:
        TypeError: a policy, method list or status list of the wrong kind.
        ValueError: both ``policy`` and ``backoff``/``stop``; a status that is
            not an HTTP status code.
    """

    _base = httpx.BaseTransport
    _default = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, retrying under the policy; return the final response.

        Raises:
            httpx.TransportError: the last error, when the retries are used up
                on errors, or at once when the error is not retryable.
            resile.DeadlineExceeded: the current deadline passed before an attempt.
        """
        core = self._core
        policy = core.policy_for(request)
        configured = request.extensions.get("timeout")
        with deadline(policy.timeout):
            response: httpx.Response | None = None
            try:
                for attempt in policy:
                    with attempt:
                        core.bound_timeouts(request, configured)
                        response = self.transport.handle_request(request)
                        if core.retryable(request, response):
                            try:
                                raw = b"".join(response.iter_raw())
                            finally:
                                response.close()
                            core.refuse(request, response, raw)
            except RetryableStatus as exc:
                return exc.response
        assert response is not None
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class AsyncRetryTransport(_Transport[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport):
    """The async ``RetryTransport``, for ``httpx.AsyncClient`` (asyncio and trio).

    Takes the same arguments as ``RetryTransport``; ``transport`` defaults to
    ``httpx.AsyncHTTPTransport()``.

    Raises:
        TypeError, ValueError: as ``RetryTransport``.
    """

    _base = httpx.AsyncBaseTransport
    _default = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, retrying under the policy; return the final response.

        Raises:
            httpx.TransportError: the last error, when the retries are used up
                on errors, or at once when the error is not retryable.
            resile.DeadlineExceeded: the current deadline passed before an attempt.
        """
        core = self._core
        policy = core.policy_for(request)
        configured = request.extensions.get("timeout")
        # A plain `with`: each attempt's timeouts already end by the deadline.
        with deadline(policy.timeout):
            response: httpx.Response | None = None
            try:
                async for attempt in policy:
                    with attempt:
                        core.bound_timeouts(request, configured)
                        response = await self.transport.handle_async_request(request)
                        if core.retryable(request, response):
                            try:
                                raw = b"".join([chunk async for chunk in response.aiter_raw()])
                            finally:
                                await response.aclose()
                            core.refuse(request, response, raw)
            except RetryableStatus as exc:
                return exc.response
        assert response is not None
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()
