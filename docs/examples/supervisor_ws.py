"""A WebSocket client kept alive by resile.Supervisor across a server restart.

Run it: ``python docs/examples/supervisor_ws.py`` (needs ``websockets``).

A feed server sends numbered messages: "from K" asks for K+1, K+2, K+3. The
client reads them through ``supervisor.session()``; we stop the server, the
supervisor backs off, we start it again on the same port, and ``on_reconnect``
resumes the feed from the last number received: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from resile import Exponential, Supervisor


async def feed(ws: ServerConnection) -> None:
    async for message in ws:
        k = int(str(message).split()[1])
        for n in range(k + 1, k + 4):
            await ws.send(str(n))


async def main() -> None:
    server = await serve(feed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    received: list[int] = []

    async def resume(ws: ClientConnection) -> None:
        last = received[-1] if received else 0
        print(f"resumed from {last}")
        await ws.send(f"from {last}")

    supervisor = Supervisor(
        lambda: connect(f"ws://127.0.0.1:{port}", open_timeout=2, close_timeout=1),
        on_reconnect=resume,
        wait_closed=lambda ws: ws.wait_closed(),  # notice a drop even when nobody reads
        policy=Exponential(0.05, max_delay=1.0, jitter="none"),
        name="feed",
    )

    async def read(count: int) -> None:
        while len(received) < count:
            try:
                async with supervisor.session(timeout=10) as ws:
                    received.append(int(await ws.recv()))
            except ConnectionClosed:
                pass  # reported by session(); the supervisor reconnects

    async with supervisor:
        ws = await supervisor.wait_connected(timeout=10)
        await ws.send("from 0")  # the first subscription
        await asyncio.wait_for(read(3), 10)

        server.close()  # the server goes away...
        await server.wait_closed()
        # ...for two refused reconnects (a demo's poll; real code has no need to wait)
        while supervisor.statistics.failures < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        server = await serve(feed, "127.0.0.1", port)  # ...and comes back

        await asyncio.wait_for(read(6), 10)
    server.close()
    await server.wait_closed()
    print(f"received {received}")
    print(f"waits before reconnecting: {list(supervisor.statistics.delays)}")


if __name__ == "__main__":
    asyncio.run(main())
