"""Serving the dashboard on its own (``resile dashboard``): safe binding rules, then uvicorn.

* The default address is 127.0.0.1. A loopback dashboard answers only the
  loopback host names (a DNS-rebinding page gets a 400).
* Binding any other address needs a token, or ``insecure_no_auth=True``
  said out loud; otherwise ``serve`` refuses before it opens anything.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

from resile.queue.store import Store

__all__ = ["LOOPBACK_NAMES", "Background", "check_bind", "is_loopback", "serve"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure_no_auth: bool) -> None:
    """Refuse to serve without a token on an address other machines can reach.

    Raises:
        ValueError: ``host`` is not loopback, no ``token`` and not ``insecure_no_auth``.
    """
    if not is_loopback(host) and token is None and not insecure_no_auth:
        raise ValueError(
            f"--host {host!r} is reachable from other machines: give --token TOKEN "
            "(or RESILE_DASHBOARD_TOKEN), or --insecure-no-auth if you really want an open "
            "dashboard"
        )


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets: h11 writes a response's headers and body apart, and
    # without it the body waits out the client's delayed ACK (about 40 ms a response).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def serve(
    url_or_store: str | Store,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    read_only: bool = False,
    insecure_no_auth: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the dashboard with uvicorn until interrupted (Ctrl-C, SIGTERM).

    Raises:
        ValueError: an unsafe binding (``check_bind``), a bad port, or ``create_app``'s errors.
        OSError: the address cannot be bound (in use, not local).
    """
    import uvicorn

    from resile.web.app import create_app

    check_bind(host, token, insecure_no_auth)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--port must be a port number from 0 to 65535, got {port!r}")
    hosts = list(LOOPBACK_NAMES) if is_loopback(host) else None
    app = create_app(url_or_store, token=token, read_only=read_only, allowed_hosts=hosts)
    sock = _socket(host, port)
    try:
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", proxy_headers=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class Background:
    """The dashboard served by uvicorn in a daemon thread, on a loopback address.

    For programs that show a dashboard beside their own work (``resile demo
    --dashboard``): ``start()`` returns once it listens; ``url`` is where;
    ``stop()`` ends it. Loopback only, so no token is needed.

    Args:
        url_or_store: as ``create_app``.
        host: a loopback address (127.0.0.1 by default).
        port: 0 picks a free one.

    Raises:
        ValueError: ``host`` is not a loopback address.
    """

    def __init__(
        self, url_or_store: str | Store, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"Background: host must be a loopback address, got {host!r}")
        self.host, self.port = host, port
        self.url_or_store = url_or_store
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Listen, serve in a thread; returns the URL (``http://127.0.0.1:PORT/``).

        Raises:
            OSError: the address cannot be bound. RuntimeError: uvicorn did not start in time.
        """
        import uvicorn

        from resile.web.app import create_app

        app = create_app(self.url_or_store, allowed_hosts=list(LOOPBACK_NAMES))
        self._sock = sock = _socket(self.host, self.port)
        port = sock.getsockname()[1]
        name = f"[{self.host.strip('[]')}]" if ":" in self.host.strip("[]") else self.host
        self.url = f"http://{name}:{port}/"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="resile-dashboard",
            daemon=True,
        )
        self._thread.start()
        pause = threading.Event()
        for _ in range(max(1, int(timeout / 0.02))):  # uvicorn says when it listens
            if self._server.started or not self._thread.is_alive():
                break
            pause.wait(0.02)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the dashboard did not start within {timeout} s")
        return self.url

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
