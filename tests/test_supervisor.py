"""resile.supervisor: one long-lived connection kept up with backoff, health checks and resync."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest

import resile
from _examples import load_example
from resile.backoff import Constant, Exponential
from resile.stop import after_attempts
from resile.supervisor import Supervisor, SupervisorState
from resile.testing import no_waits


class FakeConn:
    """A connection object that records being closed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"FakeConn({self.n})"


class Dialer:
    """A ``connect`` callable that fails while ``down`` and otherwise opens numbered FakeConns."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.opened: list[FakeConn] = []

    async def __call__(self) -> FakeConn:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionRefusedError(f"refused #{self.calls}")
        conn = FakeConn(len(self.opened) + 1)
        self.opened.append(conn)
        return conn


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll ``predicate`` (bounded by ``limit`` seconds) while letting the supervisor run."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - a bounded poll of a counter
            await anyio.sleep(0.001)


class TestConnect:
    """Connecting, the state, the connection and waiting for it."""

    @pytest.mark.anyio
    async def test_connects_and_hands_out_the_connection(self) -> None:
        """After starting, wait_connected returns the connection and the state is connected."""
        dial = Dialer()
        sup: Supervisor[FakeConn] = Supervisor(dial, policy=Constant(0.01))
        assert sup.state is SupervisorState.STOPPED
        assert sup.connection is None
        async with sup:
            conn = await sup.wait_connected(timeout=5)
            assert conn is dial.opened[0]
            assert sup.connection is conn
            assert sup.state == "connected"
            assert sup.statistics.connects == 1
        assert sup.state is SupervisorState.STOPPED
        assert conn.closed

    @pytest.mark.anyio
    async def test_failed_connects_back_off_by_the_policy(self) -> None:
        """The k-th consecutive failed connect is followed by a wait of policy.delay(k)."""
        policy = Exponential(0.1, jitter="none", max_delay=0.3)
        with no_waits() as clock:
            sup: Supervisor[FakeConn] = Supervisor(Dialer(fail_first=4), policy=policy)
            async with sup:
                await sup.wait_connected(timeout=5)
        assert list(sup.statistics.delays) == [0.1, 0.2, 0.3, 0.3]
        assert clock.sleeps == [0.1, 0.2, 0.3, 0.3]
        assert sup.statistics.failures == 4
        assert isinstance(sup.statistics.last_error, ConnectionRefusedError)

    @pytest.mark.anyio
    async def test_wait_connected_times_out(self) -> None:
        """wait_connected raises TimeoutError when no connection comes within the timeout."""
        sup: Supervisor[FakeConn] = Supervisor(Dialer(fail_first=10**6), policy=Constant(0.005))
        async with sup:
            with pytest.raises(TimeoutError, match=r"no connection within 0\.05 s"):
                await sup.wait_connected(timeout=0.05)
            assert sup.state in (SupervisorState.CONNECTING, SupervisorState.BACKING_OFF)

    @pytest.mark.anyio
    async def test_stop_condition_gives_up(self) -> None:
        """With stop=after_attempts(3), run() re-raises the third connect error and the state is stopped."""
        with no_waits():
            sup: Supervisor[FakeConn] = Supervisor(
                Dialer(fail_first=10), policy=Constant(0.01), stop=after_attempts(3)
            )
            with pytest.raises(ConnectionRefusedError, match="refused #3"):
                await sup.run()
        assert sup.state is SupervisorState.STOPPED
        assert list(sup.statistics.delays) == [0.01, 0.01]
        with pytest.raises(ConnectionError, match="is stopped") as info:
            await sup.wait_connected(timeout=1)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    @pytest.mark.anyio
    async def test_connect_may_return_an_async_context_manager(self) -> None:
        """A connect() returning an async context manager is entered to connect and exited to close."""
        events: list[str] = []

        class Ctx:
            async def __aenter__(self) -> str:
                events.append("enter")
                return "conn"

            async def __aexit__(self, *exc: object) -> None:
                events.append("exit")

        sup: Supervisor[str] = Supervisor(lambda: Ctx(), policy=Constant(0.01))
        async with sup:
            assert await sup.wait_connected(timeout=5) == "conn"
        assert events == ["enter", "exit"]


class TestReconnect:
    """Drops are reported, the connection is replaced and state re-synced."""

    @pytest.mark.anyio
    async def test_connection_lost_reconnects_and_calls_on_reconnect(self) -> None:
        """A reported drop closes the old connection, opens a new one and passes it to on_reconnect."""
        dial = Dialer()
        resynced: list[FakeConn] = []

        async def on_reconnect(conn: FakeConn) -> None:
            resynced.append(conn)

        with no_waits():
            sup = Supervisor(dial, on_reconnect=on_reconnect, policy=Constant(0.02))
            async with sup:
                first = await sup.wait_connected(timeout=5)
                assert sup.connection_lost(OSError("reset"))
                await until(lambda: sup.statistics.connects == 2)
                second = await sup.wait_connected(timeout=5)
        assert first.closed and second is dial.opened[1] and second is not first
        assert resynced == [second]
        assert sup.statistics.drops == 1
        assert sup.statistics.reconnects == 1
        assert list(sup.statistics.delays) == [0.02]
        assert isinstance(sup.statistics.last_error, OSError)

    @pytest.mark.anyio
    async def test_sync_on_reconnect_is_called_too(self) -> None:
        """A plain function works as on_reconnect."""
        resynced: list[FakeConn] = []
        with no_waits():
            sup = Supervisor(Dialer(), on_reconnect=resynced.append, policy=Constant(0.0))
            async with sup:
                await sup.wait_connected(timeout=5)
                sup.connection_lost()
                await until(lambda: len(resynced) == 1)
        assert resynced[0].n == 2

    @pytest.mark.anyio
    async def test_failing_on_reconnect_counts_as_a_failed_attempt(self) -> None:
        """When on_reconnect raises, that connection is closed and the supervisor tries again."""
        calls: list[FakeConn] = []

        def on_reconnect(conn: FakeConn) -> None:
            calls.append(conn)
            if len(calls) == 1:
                raise RuntimeError("resubscribe refused")

        dial = Dialer()
        with no_waits():
            sup = Supervisor(dial, on_reconnect=on_reconnect, policy=Constant(0.01))
            async with sup:
                await sup.wait_connected(timeout=5)
                sup.connection_lost()
                await until(lambda: len(calls) == 2)
                conn = await sup.wait_connected(timeout=5)
        assert conn is dial.opened[2]
        assert dial.opened[1].closed
        assert sup.statistics.failures == 1

    @pytest.mark.anyio
    async def test_session_reports_errors_and_reraises(self) -> None:
        """An error escaping `async with session()` is re-raised and reported as a drop of that connection."""
        with no_waits():
            sup = Supervisor(Dialer(), policy=Constant(0.01))
            async with sup:
                with pytest.raises(EOFError):
                    async with sup.session(timeout=5) as conn:
                        raise EOFError("stream ended")
                await until(lambda: sup.statistics.connects == 2)
                async with sup.session(timeout=5) as again:
                    assert again is not conn
        assert isinstance(sup.statistics.last_error, EOFError)
        assert conn.closed

    @pytest.mark.anyio
    async def test_wait_closed_notices_a_close_without_a_reader(self) -> None:
        """When wait_closed(conn) returns, the supervisor reconnects without any report."""
        closers: dict[int, anyio.Event] = {}

        async def wait_closed(conn: FakeConn) -> None:
            closers[conn.n] = anyio.Event()
            await closers[conn.n].wait()

        with no_waits():
            sup = Supervisor(Dialer(), wait_closed=wait_closed, policy=Constant(0.01))
            async with sup:
                await sup.wait_connected(timeout=5)
                await until(lambda: 1 in closers)
                closers[1].set()  # the peer closed the connection
                await until(lambda: sup.statistics.connects == 2)
        assert sup.statistics.drops == 1
        assert "the connection closed" in str(sup.statistics.last_error)

    @pytest.mark.anyio
    async def test_stale_report_is_ignored(self) -> None:
        """A report naming an older connection does not drop the current one."""
        with no_waits():
            sup = Supervisor(Dialer(), policy=Constant(0.0))
            async with sup:
                old = await sup.wait_connected(timeout=5)
                sup.connection_lost(conn=old)
                await until(lambda: sup.statistics.connects == 2)
                assert not sup.connection_lost(conn=old)
                assert sup.connection is not None and sup.connection is not old
                assert sup.statistics.drops == 1

    @pytest.mark.anyio
    async def test_report_from_another_thread(self) -> None:
        """connection_lost may be called from a worker thread."""
        with no_waits():
            sup = Supervisor(Dialer(), policy=Constant(0.0))
            async with sup:
                await sup.wait_connected(timeout=5)
                taken = await anyio.to_thread.run_sync(sup.connection_lost)
                assert taken
                await until(lambda: sup.statistics.connects == 2)

    @pytest.mark.anyio
    async def test_backoff_grows_while_connections_flap_and_resets_when_stable(self) -> None:
        """Short-lived connections keep the failure streak; one that lasted stable_after starts over."""
        policy = Exponential(1.0, jitter="none")
        with no_waits() as clock:
            sup = Supervisor(Dialer(), policy=policy, stable_after=30)
            async with sup:
                for n in range(1, 4):  # three drops right after connecting
                    await sup.wait_connected(timeout=5)
                    sup.connection_lost()
                    await until(lambda n=n: sup.statistics.connects == n + 1)  # type: ignore[misc]
                await sup.wait_connected(timeout=5)
                clock.advance(31)  # the fourth connection has been up for 31 s
                sup.connection_lost()
                await until(lambda: sup.statistics.connects == 5)
        assert list(sup.statistics.delays) == [1.0, 2.0, 4.0, 1.0]


class TestHealthCheck:
    """The heartbeat health check drops dead connections."""

    @pytest.mark.anyio
    async def test_failing_health_check_reconnects(self) -> None:
        """A health check that raises drops the connection; the error is kept."""
        checked: list[int] = []

        async def health(conn: FakeConn) -> None:
            checked.append(conn.n)
            if conn.n == 1 and len(checked) >= 2:
                raise TimeoutError("no pong")

        sup = Supervisor(Dialer(), health_check=health, heartbeat=0.01, policy=Constant(0.0))
        async with sup:
            await until(lambda: sup.statistics.connects == 2)
        assert checked[:2] == [1, 1]
        assert isinstance(sup.statistics.last_error, TimeoutError)
        assert sup.statistics.drops == 1

    @pytest.mark.anyio
    async def test_health_check_returning_false_drops(self) -> None:
        """A health check that returns False counts as a failure."""
        sup = Supervisor(
            Dialer(), health_check=lambda c: c.n > 1, heartbeat=0.01, policy=Constant(0.0)
        )
        async with sup:
            await until(lambda: sup.statistics.connects == 2)
            assert isinstance(sup.statistics.last_error, ConnectionError)
            assert "returned False" in str(sup.statistics.last_error)

    @pytest.mark.anyio
    async def test_hanging_health_check_times_out(self) -> None:
        """A health check that does not answer within health_timeout drops the connection."""

        async def health(conn: FakeConn) -> None:
            if conn.n == 1:
                await anyio.sleep(30)

        sup = Supervisor(
            Dialer(),
            health_check=health,
            heartbeat=0.01,
            health_timeout=0.05,
            policy=Constant(0.0),
        )
        async with sup:
            await until(lambda: sup.statistics.connects == 2)
        assert "did not answer within 0.05 s" in str(sup.statistics.last_error)


class TestLifecycle:
    """start / stop / run / async with, and bad input."""

    @pytest.mark.anyio
    async def test_stop_while_backing_off(self) -> None:
        """stop() cancels a pending backoff wait and returns with the state stopped."""
        sup: Supervisor[FakeConn] = Supervisor(Dialer(fail_first=10**6), policy=Constant(60))
        async with sup:
            await until(lambda: sup.state is SupervisorState.BACKING_OFF)
            with anyio.fail_after(5):
                await sup.stop()
            assert sup.state is SupervisorState.STOPPED
            assert not sup.running

    @pytest.mark.anyio
    async def test_run_in_a_task_group(self) -> None:
        """run() can be started in a task group and ended with stop()."""
        sup: Supervisor[FakeConn] = Supervisor(Dialer(), policy=Constant(0.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            conn = await sup.wait_connected(timeout=5)
            await sup.stop()
        assert conn.closed
        assert sup.state is SupervisorState.STOPPED

    @pytest.mark.anyio
    async def test_run_twice_is_refused(self) -> None:
        """A second concurrent run() raises RuntimeError."""
        sup: Supervisor[FakeConn] = Supervisor(Dialer(), policy=Constant(0.0))
        async with sup:
            await sup.wait_connected(timeout=5)
            with pytest.raises(RuntimeError, match="already running"):
                await sup.run()

    @pytest.mark.anyio
    async def test_custom_close(self) -> None:
        """A close= callable closes connections that connect() returned directly."""
        closed: list[Any] = []
        sup = Supervisor(Dialer(), close=closed.append, policy=Constant(0.0))
        async with sup:
            conn = await sup.wait_connected(timeout=5)
        assert closed == [conn]
        assert not conn.closed

    @pytest.mark.parametrize("anyio_backend", ["trio"])
    @pytest.mark.anyio
    async def test_start_needs_asyncio(self) -> None:
        """start() under trio says to use `async with` or a nursery."""
        sup: Supervisor[FakeConn] = Supervisor(Dialer())
        with pytest.raises(RuntimeError, match="needs asyncio"):
            await sup.start()

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"policy": 1.0}, "policy must be a resile.backoff strategy, got 1.0"),
            ({"heartbeat": 0}, "heartbeat must be > 0 seconds, got 0"),
            ({"heartbeat": -1}, "heartbeat must be a finite number >= 0, got -1.0"),
            ({"stable_after": float("nan")}, "stable_after must be a finite number"),
            ({"health_check": "ping"}, "health_check must be callable, got 'ping'"),
            ({"stop": 3}, "stop must be a resile.stop condition, got 3"),
        ],
    )
    def test_bad_input_names_the_field(self, kwargs: dict[str, Any], message: str) -> None:
        """Invalid settings raise at construction with the field and the value."""
        with pytest.raises((TypeError, ValueError), match=message.replace(".", r"\.")):
            Supervisor(Dialer(), **kwargs)

    def test_connect_must_be_callable(self) -> None:
        """A connect that is not callable is refused."""
        with pytest.raises(TypeError, match="connect must be callable"):
            Supervisor("ws://x")  # type: ignore[arg-type]

    def test_exported_from_root(self) -> None:
        """resile.Supervisor is the supervisor class."""
        assert resile.Supervisor is Supervisor


# -- a real WebSocket server on loopback (websockets' asyncio API: asyncio only) --------

ws_server = pytest.importorskip("websockets.asyncio.server")
ws_client = pytest.importorskip("websockets.asyncio.client")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed


async def feed(ws: Any) -> None:
    """Server handler: on "from K" send K+1, K+2, K+3."""
    async for message in ws:
        k = int(message.split()[1])
        for n in range(k + 1, k + 4):
            await ws.send(str(n))


async def read_numbers(sup: Supervisor[Any], received: list[int], got: dict[int, Any]) -> None:
    """Read numbers through ``sup.session()`` until canceled; set event ``got[n]`` at ``n``."""
    while True:
        try:
            async with sup.session() as ws:
                received.append(int(await ws.recv()))
        except ConnectionClosed:
            continue
        if len(received) in got:
            got[len(received)].set()


class TestWebSocket:
    """Kill and restart a real WebSocket server; the supervised client resumes."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """websockets' asyncio client and server: asyncio only."""
        return "asyncio"

    @pytest.mark.anyio
    async def test_server_restart_resumes_from_the_last_offset(self) -> None:
        """Messages flow again after a restart, resumed by on_reconnect; waits follow the policy."""
        server = await ws_server.serve(feed, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        uri = f"ws://127.0.0.1:{port}"
        received: list[int] = []
        got = {3: asyncio.Event(), 6: asyncio.Event()}
        resumed_from: list[int] = []

        async def on_reconnect(ws: Any) -> None:
            last = received[-1] if received else 0
            resumed_from.append(last)
            await ws.send(f"from {last}")

        policy = Exponential(0.05, jitter="none")
        sup = Supervisor(
            lambda: ws_client.connect(uri, open_timeout=2, close_timeout=1),
            on_reconnect=on_reconnect,
            policy=policy,
            stable_after=60,
            name="feed",
        )

        loop = asyncio.get_running_loop()
        try:
            async with sup:
                reading = asyncio.create_task(read_numbers(sup, received, got))
                await (await sup.wait_connected(timeout=5)).send("from 0")
                await asyncio.wait_for(got[3].wait(), 5)

                server.close()
                await server.wait_closed()
                dropped_at = loop.time()
                # Three refused attempts later, bring the server back on the same port.
                await until(lambda: sup.statistics.failures >= 3)
                server = await ws_server.serve(feed, "127.0.0.1", port)

                await asyncio.wait_for(got[6].wait(), 5)
                elapsed = loop.time() - dropped_at
                reading.cancel()
                await asyncio.wait({reading})
        finally:
            server.close()
            await server.wait_closed()

        assert received == [1, 2, 3, 4, 5, 6]
        assert resumed_from == [3]
        delays = list(sup.statistics.delays)
        assert delays == [policy.delay(k) for k in range(1, len(delays) + 1)]
        assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
        assert sup.statistics.failures == len(delays) - 1
        assert sup.statistics.connects == 2
        assert elapsed >= sum(delays) - 0.01


class TestExample:
    """docs/examples/supervisor_ws.py runs."""

    def test_example_runs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The example restarts its server and prints the resumed stream."""
        load_example("supervisor_ws.py", as_main=True)
        out = capsys.readouterr().out
        assert "received [1, 2, 3, 4, 5, 6]" in out
        assert "resumed from 3" in out


class TestWebSocketTrio:
    """The same restart under trio, with websockets' trio client and server."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """websockets.trio: trio only."""
        return "trio"

    @pytest.mark.anyio
    async def test_server_restart_resumes_under_trio(self) -> None:
        """A context-manager connect (websockets.trio) is reconnected and resumed after a restart."""
        import trio

        # Only the newest websockets releases have a trio client; on Python 3.10 pip gets an older one.
        trio_client = pytest.importorskip("websockets.trio.client")
        trio_connect = trio_client.connect
        from websockets.trio.server import serve as trio_serve

        received: list[int] = []
        resumed_from: list[int] = []
        got = {3: trio.Event(), 6: trio.Event()}

        async def on_reconnect(ws: Any) -> None:
            resumed_from.append(received[-1])
            await ws.send(f"from {received[-1]}")

        policy = Constant(0.05)
        async with trio.open_nursery() as servers:
            server = await servers.start(partial(trio_serve, feed, 0, host="127.0.0.1"))
            port = server.listeners[0].socket.getsockname()[1]
            sup = Supervisor(
                lambda: trio_connect(f"ws://127.0.0.1:{port}", open_timeout=2, close_timeout=1),
                on_reconnect=on_reconnect,
                wait_closed=lambda ws: ws.wait_closed(),
                policy=policy,
            )
            async with sup, trio.open_nursery() as readers:
                readers.start_soon(read_numbers, sup, received, got)
                await (await sup.wait_connected(timeout=5)).send("from 0")
                with trio.fail_after(5):
                    await got[3].wait()
                await server.aclose()
                await until(lambda: sup.statistics.failures >= 2)
                server = await servers.start(partial(trio_serve, feed, port, host="127.0.0.1"))
                with trio.fail_after(5):
                    await got[6].wait()
                readers.cancel_scope.cancel()
            await server.aclose()
        assert received == [1, 2, 3, 4, 5, 6]
        assert resumed_from == [3]
        assert set(sup.statistics.delays) == {0.05}
        assert sup.statistics.connects == 2
