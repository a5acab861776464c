"""Wake-ups of the PostgreSQL store: NOTIFY payloads, and the LISTEN thread behind ``watch``.

A create, a retry, a release and a requeue send ``pg_notify(channel,
payload)`` in their transaction, so the notification goes out at commit (and
not at all on rollback). The payload is JSON ``{"q": [queues], "due": t}``:
the queues that got work and the earliest due time among it (``"q": null``:
any queue). A worker woken by it reads ``next_due_at`` and arms its timer for
the earliest due task, so a retry in 1 s runs in 1 s, without polling.

``Watcher`` is a daemon thread holding one ``LISTEN`` connection. When that
connection is lost (a server restart, ``pg_terminate_backend``), it is tried
again every ``RELISTEN_EVERY`` seconds, and meanwhile the worker is woken
every ``FALLBACK_POLL`` seconds to look for itself (a bounded poll); once
listening again it wakes the worker once, since notifications may have been
missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from resile.queue.store.base import dumps
from resile.queue.store.postgres._db import Database

__all__ = ["FALLBACK_POLL", "RELISTEN_EVERY", "Watcher", "payload"]

logger = logging.getLogger("resile.queue")

# While the LISTEN connection is down, the worker is woken this often (a bounded poll) ...
FALLBACK_POLL = 0.25
# ... and the connection is tried again this often (repaired well within a second).
RELISTEN_EVERY = 0.2
# A NOTIFY payload stays well under PostgreSQL's 8000 bytes.
_PAYLOAD_MAX = 4000


def payload(pairs: Iterable[tuple[str, float]]) -> str:
    """The NOTIFY payload for ``(queue, due_at)`` pairs: the queues and the earliest due time."""
    queues: dict[str, None] = {}
    due = math.inf
    for queue, at in pairs:
        queues[queue] = None
        due = min(due, at)
    text = dumps({"q": list(queues), "due": due})
    # Too many queues for one payload: "any queue" (every listener looks).
    return text if len(text) <= _PAYLOAD_MAX else dumps({"q": None, "due": due})


class Watcher:
    """A daemon thread on a LISTEN connection; a notification for its queues calls ``wake()``.

    Args:
        db: the store's database (its connection info and channel).
        queues: the queues whose notifications wake.
        wake: called from the thread; must be quick.
        on_stop: called once by ``stop()`` (the store forgets the watcher).
    """

    # The longest a wait for notifications lasts, so that stop() is noticed.
    TICK = 0.2

    def __init__(
        self,
        db: Database,
        queues: set[str],
        wake: Callable[[], None],
        on_stop: Callable[[Watcher], None] = lambda w: None,
    ) -> None:
        self.db = db
        self.queues = queues
        self.wake = wake
        self.on_stop = on_stop
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="resile-pg-listen", daemon=True)
        #: How many times the LISTEN connection was opened (1 + the repairs).
        self.connects = 0
        #: Set while a LISTEN connection is up.
        self.listening = threading.Event()

    def start(self) -> None:
        """Listen (when the server answers within 2 s), then start the thread."""
        with contextlib.suppress(Exception):  # unreachable: the thread keeps trying
            self._listen()
        self._thread.start()

    def _listen(self) -> None:
        conn = self.db.connect(dict_rows=False, timeout=min(self.db.connect_timeout, 2.0))
        try:
            conn.execute(f'LISTEN "{self.db.q.channel}"')
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.connects += 1
        self.listening.set()

    def _drop(self) -> None:
        self.listening.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def wanted(self, text: str) -> bool:
        """Whether a payload concerns our queues (an unreadable one does, to be safe)."""
        try:
            queues = json.loads(text).get("q")
        except (TypeError, ValueError, AttributeError):
            return True
        return queues is None or not self.queues.isdisjoint(queues)

    def _run(self) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            conn = self._conn
            if conn is None:
                mono = time.monotonic()
                if mono >= next_try:
                    try:
                        self._listen()
                    except Exception as exc:
                        logger.warning("resile: PostgreSQL LISTEN connection failed: %s", exc)
                        next_try = mono + RELISTEN_EVERY
                    else:
                        self._wake()  # notifications may have been missed while we were away
                        continue
                # Down: a bounded poll, so the worker still finds new and retried work.
                self._wake()
                self._stop.wait(min(FALLBACK_POLL, max(0.0, next_try - time.monotonic())))
                continue
            try:
                # Wake as each notification arrives: the generator returns only after TICK
                # (or its stop_after), so waking after the loop made a new task wait up to
                # TICK (200 ms) for an idle worker.
                for note in conn.notifies(timeout=self.TICK, stop_after=64):
                    if self.wanted(note.payload):
                        self._wake()
            except Exception as exc:
                if self._stop.is_set():
                    break
                logger.warning("resile: PostgreSQL LISTEN connection lost: %s", exc)
                self._drop()
                next_try = 0.0
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
            self._thread.join(self.TICK * 10)
        self._drop()
        self.on_stop(self)
