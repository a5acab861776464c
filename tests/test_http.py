"""resile.http: retrying httpx transports against a real local HTTP server that fails on purpose."""

from __future__ import annotations

import contextlib
import email.utils
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import resile
from _examples import load_example
from resile.backoff import Constant, Exponential
from resile.http import (
    IDEMPOTENT_METHODS,
    AsyncRetryTransport,
    RetryableStatus,
    RetryTransport,
    parse_retry_after,
)
from resile.retry import Retrying, RetryState
from resile.stop import after_attempts
from resile.testing import no_waits

# A reply: (status, headers, body), or a callable making one, or HANG.
Reply = tuple[int, dict[str, str], bytes] | Callable[[], tuple[int, dict[str, str], bytes]] | str
HANG = "hang"


class FlakyServer(ThreadingHTTPServer):
    """An HTTP/1.1 server on 127.0.0.1 that plays scripted replies per path and logs requests."""

    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def script(self, path: str, *replies: Reply) -> str:
        """Serve ``replies`` in order on ``path`` (the last one repeats); return its URL."""
        self.scripts[path] = list(replies)
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def next_reply(self, method: str, path: str) -> Reply:
        with self.lock:
            self.requests.append((method, path))
            replies = self.scripts.get(path) or [(404, {}, b"no script")]
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def count(self, path: str) -> int:
        return sum(1 for _, p in self.requests if p == path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FlakyServer

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.next_reply(self.command, self.path)
        if reply == HANG:
            self.server.release.wait(10)
            self.close_connection = True
            return
        assert not isinstance(reply, str)
        status, headers, body = reply() if callable(reply) else reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        # A client that timed out has gone: writing to it fails, which is expected here.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()


@pytest.fixture(scope="module")
def running_server() -> Iterator[FlakyServer]:
    """A FlakyServer serving in a thread for the module; stopped (handlers released) afterwards."""
    srv = FlakyServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def server(running_server: FlakyServer) -> Iterator[FlakyServer]:
    """The module's server with empty scripts and log; hanging handlers are released after the test."""
    with running_server.lock:
        running_server.scripts.clear()
        running_server.requests.clear()
    yield running_server
    running_server.release.set()
    running_server.release = threading.Event()


@pytest.fixture(params=["sync", "asyncio", "trio"])
def mode(request: pytest.FixtureRequest) -> str:
    """The client: httpx.Client with RetryTransport, or AsyncClient with AsyncRetryTransport."""
    return str(request.param)


@pytest.fixture
def anyio_backend(mode: str) -> str:
    """The sync client needs no event loop of its own; it runs under asyncio."""
    return "asyncio" if mode == "sync" else mode


def transport(mode: str, **kwargs: Any) -> RetryTransport | AsyncRetryTransport:
    return RetryTransport(**kwargs) if mode == "sync" else AsyncRetryTransport(**kwargs)


async def send(
    mode: str,
    t: RetryTransport | AsyncRetryTransport,
    method: str,
    url: str,
    timeout: float = 5.0,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request through a client built on ``t``; the response is read."""
    if isinstance(t, RetryTransport):
        with httpx.Client(transport=t, timeout=timeout) as client:
            # The server runs in its own thread, so blocking the loop here is harmless.
            return client.request(method, url, **kwargs)  # noqa: ASYNC212
    async with httpx.AsyncClient(transport=t, timeout=timeout) as aclient:
        return await aclient.request(method, url, **kwargs)


def unused_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BUSY: Reply = (503, {"Retry-After": "0"}, b"busy")
OK: Reply = (200, {}, b"ok")


class TestStatusRetries:
    """Retryable statuses are retried for idempotent methods; the last response is returned on give-up."""

    @pytest.mark.anyio
    async def test_503_then_200(self, mode: str, server: FlakyServer) -> None:
        """Two 503s with Retry-After: 0, then 200: the caller sees the 200 after three requests."""
        url = server.script("/items", BUSY, BUSY, OK)
        t = transport(mode)
        response = await send(mode, t, "GET", url)
        assert response.status_code == 200
        assert response.text == "ok"
        assert server.count("/items") == 3
        assert t.retrying.statistics.retries == 2

    @pytest.mark.anyio
    async def test_retry_after_seconds_is_the_wait(self, mode: str, server: FlakyServer) -> None:
        """Retry-After: 3 makes the transport wait exactly 3 s (on the fake clock)."""
        url = server.script("/slow", (503, {"Retry-After": "3"}, b""), OK)
        with no_waits() as clock:
            response = await send(mode, transport(mode), "GET", url)
        assert response.status_code == 200
        assert clock.sleeps == [3.0]

    @pytest.mark.anyio
    async def test_retry_after_is_capped_by_max_delay(self, mode: str, server: FlakyServer) -> None:
        """A Retry-After of an hour is bounded by the backoff's max_delay."""
        url = server.script("/cap", (503, {"Retry-After": "3600"}, b""), OK)
        t = transport(mode, backoff=Constant(0.1, max_delay=2.0))
        with no_waits() as clock:
            await send(mode, t, "GET", url)
        assert clock.sleeps == [2.0]

    @pytest.mark.anyio
    async def test_429_with_http_date(self, mode: str, server: FlakyServer) -> None:
        """429 with an HTTP-date Retry-After 5 s ahead waits about 5 s (1-s resolution of the date)."""

        def later() -> tuple[int, dict[str, str], bytes]:
            when = email.utils.formatdate(time.time() + 5, usegmt=True)
            return 429, {"Retry-After": when}, b"slow down"

        url = server.script("/quota", later, OK)
        with no_waits() as clock:
            response = await send(mode, transport(mode), "GET", url)
        assert response.status_code == 200
        assert len(clock.sleeps) == 1
        assert 3.0 < clock.sleeps[0] <= 5.0

    @pytest.mark.anyio
    async def test_retry_after_ignored_on_request(self, mode: str, server: FlakyServer) -> None:
        """With respect_retry_after=False the backoff decides the wait."""
        url = server.script("/ra", (503, {"Retry-After": "7"}, b""), OK)
        t = transport(mode, backoff=Constant(0.25), respect_retry_after=False)
        with no_waits() as clock:
            await send(mode, t, "GET", url)
        assert clock.sleeps == [0.25]

    @pytest.mark.anyio
    async def test_give_up_returns_the_last_response(self, mode: str, server: FlakyServer) -> None:
        """After the last attempt a 503 is returned, body readable, not raised."""
        url = server.script(
            "/down", (503, {}, b"busy 1"), (503, {}, b"busy 2"), (503, {"X-N": "3"}, b"busy 3")
        )
        t = transport(mode, backoff=Constant(0.0), stop=after_attempts(3))
        response = await send(mode, t, "GET", url)
        assert response.status_code == 503
        assert response.content == b"busy 3"
        assert response.headers["X-N"] == "3"
        assert response.elapsed >= timedelta(0)
        assert server.count("/down") == 3
        assert t.retrying.statistics.giveups == 1

    @pytest.mark.anyio
    async def test_post_is_not_retried(self, mode: str, server: FlakyServer) -> None:
        """POST is not idempotent: a 503 comes back at once."""
        url = server.script("/orders", BUSY, OK)
        response = await send(mode, transport(mode), "POST", url, content=b"{}")
        assert response.status_code == 503
        assert server.count("/orders") == 1

    @pytest.mark.anyio
    async def test_methods_can_include_post(self, mode: str, server: FlakyServer) -> None:
        """methods= opts POST in; its body is sent again."""
        url = server.script("/orders", BUSY, OK)
        t = transport(mode, methods=IDEMPOTENT_METHODS | {"POST"})
        response = await send(mode, t, "POST", url, content=b'{"n": 1}')
        assert response.status_code == 200
        assert server.requests == [("POST", "/orders"), ("POST", "/orders")]

    @pytest.mark.anyio
    async def test_other_statuses_are_final(self, mode: str, server: FlakyServer) -> None:
        """A 500 (not in statuses) is returned without a retry."""
        url = server.script("/bug", (500, {}, b"oops"), OK)
        response = await send(mode, transport(mode), "GET", url)
        assert response.status_code == 500
        assert server.count("/bug") == 1

    @pytest.mark.anyio
    async def test_hooks_see_the_status(self, mode: str, server: FlakyServer) -> None:
        """The policy's on_retry hook gets a RetryableStatus carrying the response."""
        seen: list[tuple[int, float]] = []

        def on_retry(state: RetryState) -> None:
            assert isinstance(state.exception, RetryableStatus)
            seen.append((state.exception.status_code, state.next_delay))

        url = server.script("/hook", (502, {}, b""), (504, {"Retry-After": "1"}, b""), OK)
        policy = Retrying(backoff=Constant(0.5, max_delay=5.0), on_retry=on_retry)
        with no_waits():
            await send(mode, transport(mode, policy=policy), "GET", url)
        assert seen == [(502, 0.5), (504, 1.0)]


class TestErrorRetries:
    """Transport errors: connect errors for any method, read errors for idempotent ones."""

    @pytest.mark.anyio
    async def test_connection_refused_is_retried_then_raised(self, mode: str) -> None:
        """Nothing listening: every attempt is refused, the waits follow the backoff, then ConnectError."""
        url = f"http://127.0.0.1:{unused_port()}/"
        t = transport(mode, backoff=Exponential(0.1, jitter="none"), stop=after_attempts(3))
        with no_waits() as clock, pytest.raises(httpx.ConnectError):
            await send(mode, t, "GET", url)
        assert clock.sleeps == [0.1, 0.2]
        assert t.retrying.statistics.attempts == 3

    @pytest.mark.anyio
    async def test_connect_errors_are_retried_for_post_too(self, mode: str) -> None:
        """A refused POST never reached the server, so it is retried."""
        url = f"http://127.0.0.1:{unused_port()}/"
        t = transport(mode, backoff=Constant(0.1), stop=after_attempts(2))
        with no_waits() as clock, pytest.raises(httpx.ConnectError):
            await send(mode, t, "POST", url, content=b"x")
        assert clock.sleeps == [0.1]

    @pytest.mark.anyio
    async def test_read_timeout_is_retried_for_get(self, mode: str, server: FlakyServer) -> None:
        """A GET that times out reading is sent again."""
        url = server.script("/hang", HANG, OK)
        response = await send(mode, transport(mode, backoff=Constant(0.0)), "GET", url, 0.15)
        assert response.status_code == 200
        assert server.count("/hang") == 2

    @pytest.mark.anyio
    async def test_read_timeout_is_not_retried_for_post(
        self, mode: str, server: FlakyServer
    ) -> None:
        """A POST that may have reached the server is not sent twice."""
        url = server.script("/hang", HANG, OK)
        with pytest.raises(httpx.ReadTimeout):
            await send(mode, transport(mode), "POST", url, 0.15, content=b"x")
        assert server.count("/hang") == 1


class TestDeadline:
    """The current resile.deadline bounds each request's timeouts and the waits."""

    @pytest.mark.anyio
    async def test_deadline_shortens_the_timeout(self, mode: str, server: FlakyServer) -> None:
        """A hanging server and a 30 s client timeout: the request ends near the 0.25 s deadline, no retry."""
        url = server.script("/hang", HANG)
        t = transport(mode, backoff=Constant(0.05))
        start = time.monotonic()
        with resile.deadline(0.25), pytest.raises(httpx.ReadTimeout):
            await send(mode, t, "GET", url, 30.0)
        elapsed = time.monotonic() - start
        assert 0.2 < elapsed < 3.0
        assert server.count("/hang") == 1
        assert t.retrying.statistics.retries == 0

    @pytest.mark.anyio
    async def test_no_wait_past_the_deadline(self, mode: str, server: FlakyServer) -> None:
        """A Retry-After longer than the time left ends the call with the 503."""
        url = server.script("/busy", (503, {"Retry-After": "5"}, b""), OK)
        start = time.monotonic()
        with resile.deadline(1.0):
            response = await send(mode, transport(mode), "GET", url)
        assert response.status_code == 503
        assert time.monotonic() - start < 1.0
        assert server.count("/busy") == 1

    @pytest.mark.anyio
    async def test_expired_deadline_sends_nothing(self, mode: str, server: FlakyServer) -> None:
        """Past the deadline the transport raises DeadlineExceeded before sending."""
        url = server.script("/x", OK)
        with no_waits() as clock, resile.deadline(1.0):
            clock.advance(2.0)
            with pytest.raises(resile.DeadlineExceeded):
                await send(mode, transport(mode), "GET", url)
        assert server.count("/x") == 0

    @pytest.mark.anyio
    async def test_policy_timeout_is_a_deadline(self, mode: str, server: FlakyServer) -> None:
        """Retrying(timeout=0.25) bounds the whole call as a deadline would."""
        url = server.script("/hang", HANG)
        t = transport(mode, policy=Retrying(timeout=0.25, backoff=Constant(0.05)))
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await send(mode, t, "GET", url, 30.0)
        assert time.monotonic() - start < 3.0


class TestConfiguration:
    """Construction, parsing and packaging."""

    def test_policy_and_backoff_are_exclusive(self) -> None:
        """Giving both policy and backoff is refused."""
        with pytest.raises(ValueError, match="give policy, or backoff and stop, not both"):
            RetryTransport(policy=Retrying(), backoff=Constant(1.0))

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"statuses": {503, 700}}, ValueError, "got 700"),
            ({"statuses": 503}, TypeError, "statuses must be a collection of ints, got 503"),
            ({"methods": "GET"}, TypeError, "methods must be a collection of method names"),
            ({"policy": "fast"}, TypeError, "policy must be a resile.Retrying, got 'fast'"),
            ({"transport": object()}, TypeError, "transport must be an httpx.BaseTransport"),
        ],
    )
    def test_bad_input_names_the_field(
        self, kwargs: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Bad settings raise at construction with the field and the value."""
        with pytest.raises(error, match=message.replace(".", r"\.")):
            RetryTransport(**kwargs)

    def test_methods_are_case_insensitive(self, server: FlakyServer) -> None:
        """methods given in lower case are normalised: post is retried as POST."""
        url = server.script("/lower", BUSY, OK)
        with httpx.Client(transport=RetryTransport(methods=["get", "post"])) as client:
            assert client.post(url, content=b"x").status_code == 200
        assert server.count("/lower") == 2

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("120", 120.0),
            (" 0 ", 0.0),
            ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
            ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
            ("soon", None),
            ("-5", None),
            ("1.5", None),
        ],
    )
    def test_parse_retry_after(self, value: str, expected: float | None) -> None:
        """Delta-seconds and HTTP dates are read; a past date is 0; anything else is None."""
        now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
        assert parse_retry_after(value, now=now) == expected

    def test_import_resile_does_not_import_httpx(self) -> None:
        """httpx is an optional extra: importing resile leaves it alone."""
        code = "import sys, resile; assert 'httpx' not in sys.modules, 'httpx imported'"
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_not_exported_at_the_root(self) -> None:
        """The transports live in resile.http only."""
        assert not hasattr(resile, "RetryTransport")


class TestExample:
    """docs/examples/http_retry.py runs."""

    def test_example_runs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The example retries through a flaky local server and prints the outcome."""
        load_example("http_retry.py", as_main=True)
        out = capsys.readouterr().out
        assert "GET /flaky -> 200 after 3 requests" in out
        assert "POST /flaky -> 503 after 1 request" in out
        assert "async GET /flaky -> 200" in out
