"""A read timeout for psycopg connections, which have none of their own.

libpq waits on its socket for as long as the server stays silent: a
connection that a firewall or a NAT stopped forwarding, but did not reset,
hangs the call (and the worker that made it) for good. TCP keepalives and
``tcp_user_timeout`` notice a peer that stopped acknowledging; they cannot
notice a path that still acknowledges but never answers. ``Guard`` bounds
each transaction instead: one daemon thread per store shuts down the socket
of a connection whose transaction outlasted ``timeout`` seconds, so that
libpq sees the connection end, psycopg raises ``OperationalError`` (the
store's "transient, run it again on a fresh connection") and the pool drops
the connection. The other pooled connections, idle since before, likely went
silent with it: ``on_end`` (the store drains its pool) replaces them before
each costs another ``timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

__all__ = ["Guard"]

logger = logging.getLogger("resile.queue")


class Guard:
    """Ends the connections whose transaction has lasted more than ``timeout`` seconds.

    Args:
        timeout: seconds one transaction may wait on the server (``None``: no bound).
        name: the store, for the log line.
        on_end: called (in the guard's thread) after it ended connections.
    """

    def __init__(
        self, timeout: float | None, name: str, on_end: Callable[[], None] = lambda: None
    ) -> None:
        self.timeout = timeout
        self.name = name
        self.on_end = on_end
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Bound the work done on ``conn`` inside this block by ``timeout`` seconds."""
        if self.timeout is None:
            yield
            return
        key = id(conn)
        with self._lock:
            self._watched[key] = (time.monotonic() + self.timeout, conn)
            if self._thread is None or not self._thread.is_alive():
                # Started on first use (and again in a forked child, whose threads are gone).
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="resile-pg-guard"
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(key, None)

    def _run(self) -> None:
        assert self.timeout is not None
        tick = min(0.5, max(0.05, self.timeout / 4))
        while True:
            self._wake.wait(tick)
            now = time.monotonic()
            with self._lock:
                late = [(k, c) for k, (at, c) in self._watched.items() if at <= now]
                for key, conn in late:
                    # Under the lock: once ``watch`` has removed it, the connection is no
                    # longer ours to end (the pool may have lent it to someone else).
                    del self._watched[key]
                    self._end(conn)
            if late:
                try:
                    self.on_end()
                except Exception:
                    logger.exception(
                        "resile: %s: replacing the pooled connections failed", self.name
                    )

    def _end(self, conn: psycopg.Connection[Any]) -> None:
        try:
            fd = conn.pgconn.socket
        except psycopg.Error:
            return  # already closed
        logger.warning(
            "resile: %s: no answer from the server for %.1f s; dropping the connection",
            self.name,
            self.timeout,
        )
        # A duplicate of libpq's descriptor: shutdown ends the socket itself, and
        # closing our duplicate leaves libpq's descriptor for libpq to close.
        with contextlib.suppress(OSError), socket.socket(fileno=socket.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
