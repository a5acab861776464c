"""Wake-ups across processes: a thread subscribed to the queues' pub/sub channels."""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from resile.queue.store.redis._connection import RECONNECT_BACKOFF, Connection, is_transient

__all__ = ["Watcher"]

logger = logging.getLogger("resile.queue")


class Watcher:
    """A daemon thread subscribed to wake-up channels; each message calls ``wake()``.

    It reconnects with backoff (the outage noted on ``io``) and calls ``wake()``
    after each reconnect, as messages may have been missed meanwhile.
    ``on_stop`` is called with the watcher when it is stopped.
    """

    # A local timer so that stop() is noticed; it sends nothing to Redis.
    _TICK = 0.2

    def __init__(
        self,
        io: Connection,
        channels: builtins.list[str],
        wake: Callable[[], None],
        on_stop: Callable[[Watcher], None],
    ) -> None:
        self.io = io
        self.channels = channels
        self.wake = wake
        self._on_stop = on_stop
        self._stop = threading.Event()
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, name="resile-redis-watch", daemon=True)

    def start(self) -> None:
        """Subscribe (or fail quietly: the thread keeps trying), then start the thread."""
        with contextlib.suppress(Exception):
            self._subscribe()
        self._thread.start()

    def _subscribe(self) -> None:
        ps = self.io.client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
        try:
            ps.subscribe(*self.channels)
            confirmed = 0
            end = time.monotonic() + 5.0
            while confirmed < len(self.channels):
                left = end - time.monotonic()
                if left <= 0:
                    raise RedisTimeoutError("no SUBSCRIBE confirmation from Redis")
                msg = ps.get_message(timeout=left)
                if msg is not None and msg.get("type") == "subscribe":
                    confirmed += 1
        except BaseException:
            with contextlib.suppress(Exception):
                ps.close()
            raise
        self._pubsub = ps

    def _drop(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            with contextlib.suppress(Exception):
                ps.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._pubsub is None:
                try:
                    self._subscribe()
                except Exception as exc:
                    failures += 1
                    if is_transient(exc):
                        self.io.trouble(exc)
                    else:
                        logger.exception("resile: Redis wake-up subscription failed")
                    self._stop.wait(RECONNECT_BACKOFF.delay(min(failures, 30)))
                    continue
                failures = 0
                self.io.recovered()
                self._wake()  # messages may have been missed while we were away
            try:
                msg = self._pubsub.get_message(timeout=self._TICK)
                if msg is None or msg.get("type") != "message":
                    continue
                while self._pubsub.get_message(timeout=0.0) is not None:
                    pass  # a burst of wake-ups is one wake-up
            except Exception as exc:
                if self._stop.is_set():
                    break
                if is_transient(exc) or isinstance(exc, (OSError, ValueError, AttributeError)):
                    self.io.trouble(exc)
                else:
                    logger.exception("resile: Redis wake-up subscription failed")
                self._drop()
                continue
            self._wake()
        self._drop()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:
            logger.exception("resile: wake-up callback %r failed", self.wake)

    def stop(self) -> None:
        """Stop the thread and close its connection; idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self._TICK * 10)
        self._on_stop(self)
