"""Every server backend raises ``StoreUnavailable`` when its server stops answering.

The server is real; between it and the store runs a loopback TCP forwarder of this
test's own, which the test cuts (every connection dropped, new ones refused) and
restores on the same port. A producer's call during the cut raises
``resile.errors.StoreUnavailable`` (the driver's error is its cause), the tasks stored
before are untouched, and the same store works again once the server answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from resile.errors import StoreUnavailable
from resile.queue import TaskSpec, TaskStatus
from resile.queue.store import open_store

from .conftest import BACKENDS, T0

SERVERS = ["redis", "postgres", "mysql"]
# Short ride-throughs, so that a cut surfaces in about a second.
OPTIONS = {
    "redis": "retry_for=0.3&socket_connect_timeout=1",
    "postgres": "retry_for=0.3&connect_timeout=1",
    "mysql": "retry_for=0.3&connect_timeout=1",
}


class Forwarder:
    """127.0.0.1:<port> forwarded to ``target``; ``cut()`` / ``restore()`` the link."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        """Listen (again, on the same port) and forward every connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture(params=SERVERS)
def through_forwarder(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Forwarder]]:
    """A fresh store URL of a server backend, pointed at a forwarder to its server."""
    backend = str(request.param)
    url = BACKENDS[backend](request, tmp_path)
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    forwarder = Forwarder((parts.hostname, parts.port))
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{forwarder.port}"
    query = f"{parts.query}&{OPTIONS[backend]}" if parts.query else OPTIONS[backend]
    try:
        yield urlunsplit(parts._replace(netloc=netloc, query=query)), forwarder
    finally:
        forwarder.cut()


def test_a_server_that_stops_answering_is_store_unavailable(
    through_forwarder: tuple[str, Forwarder],
) -> None:
    """A create while the server cannot be reached raises StoreUnavailable naming the
    server (no password) and what to do; stored tasks are kept; the store recovers."""
    url, link = through_forwarder
    store = open_store(url)
    try:
        store.create(TaskSpec("h", {"n": 1}, id="kept"), now=T0)
        link.cut()
        with pytest.raises(StoreUnavailable) as got:
            store.create(TaskSpec("h", id="refused"), now=T0)
        message = str(got.value)
        assert f"127.0.0.1:{link.port}" in message and "check that the server runs" in message
        assert isinstance(got.value, ConnectionError) and got.value.__cause__ is not None
        password = urlsplit(url).password
        assert not password or password not in message
        link.restore()
        kept = store.get("kept")
        assert kept is not None and kept.params == {"n": 1} and kept.status is TaskStatus.PENDING
        store.create(TaskSpec("h", id="after"), now=T0)
        assert store.get("after") is not None
    finally:
        store.close()


@pytest.mark.parametrize("backend", SERVERS)
def test_an_unreachable_server_at_open_is_store_unavailable(backend: str) -> None:
    """Opening a store on a port where nothing listens raises StoreUnavailable at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheme = {"redis": "redis", "postgres": "postgresql", "mysql": "mysql"}[backend]
    url = f"{scheme}://u:secret@127.0.0.1:{port}/0?{OPTIONS[backend]}"
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}") as got:
        store = open_store(url)
        store.stats()  # Redis connects on first use
    assert "secret" not in str(got.value)
