"""The PostgreSQL store's paused queues, per-minute outcome counters and worker registry.

``Dashboard`` is a part of ``PostgresStore`` (a mixin): pause flags and worker
records are rows of the meta table, as in the SQLite store; the counters are a
table of ``(queue, minute, outcome) -> n`` rows that the transitions add to in
their own transaction (``tally``). ``resume`` sends the schema's NOTIFY, so
watching workers look again at once.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from resile.queue._names import TALLY_WINDOW, Tally
from resile.queue.registry import GONE_KEPT, WorkerRecord
from resile.queue.store.base import check_queue, tally_counts, tally_range
from resile.queue.store.postgres._db import Cursor, Database
from resile.queue.store.postgres._sql import Queries
from resile.queue.store.postgres._watch import payload

__all__ = ["Dashboard"]


class Dashboard:
    """Pause flags, outcome counters and the worker registry over ``self.q`` and ``self._db``."""

    q: Queries
    _db: Database
    _tallies_pruned: int = -1  # the minute the counters were last pruned

    if TYPE_CHECKING:

        def now(self, now: float | None = None) -> float: ...  # the Store's

    # -- counters -----------------------------------------------------------------------------

    def tally_rows(
        self, changes: Iterable[tuple[int, str, Tally | str]], now: float
    ) -> dict[str, Any]:
        """What transitions count: one row of the per-minute counters at ``now``'s minute
        for each ``(seq, queue, outcome)`` of a task that changed, as the ``minute`` and
        ``tallies`` (JSON rows of ``TALLY_FIELDS``) parameters of ``TALLY`` and of the
        transitions' statements (which count only the rows they changed, summed and
        sorted: one lock order, no deadlock).

        The one place where the counter rows of a transition are made.
        """
        rows = [[seq, queue, str(outcome), 1] for seq, queue, outcome in changes]
        return {"minute": int(now // 60), "tallies": json.dumps(rows) if rows else None}

    def tally(self, cur: Cursor, counts: Iterable[tuple[str, Tally | str]], now: float) -> None:
        """Count the ``(queue, counter)`` pairs at ``now``'s minute, in ``cur``'s transaction
        (a counter: a ``Tally`` or a name from ``timed_tally``)."""
        params = self.tally_rows(((0, queue, outcome) for queue, outcome in counts), now)
        if params["tallies"] is None:
            return
        cur.execute(self.q.TALLY, params)
        if self.tallies_prune_due(now):
            cur.execute(self.q.PRUNE_TALLIES, self.tallies_cutoff(now))

    def tallies_prune_due(self, now: float) -> bool:
        """Whether the counters are due a prune at ``now`` (once a minute); marks it done."""
        minute = int(now // 60)
        if minute == self._tallies_pruned:
            return False
        self._tallies_pruned = minute
        return True

    @staticmethod
    def tallies_cutoff(now: float) -> dict[str, int]:
        """``PRUNE_TALLIES``' parameters at ``now``: drop what left the window."""
        return {"cutoff": int(now // 60) - int(TALLY_WINDOW // 60)}

    def tallies(
        self, *, since: float, until: float | None = None, queue: str | None = None
    ) -> dict[int, dict[Tally, int]]:
        lo, hi = tally_range(since, until, self.now())
        params = {"lo": lo, "hi": hi, "queue": queue}

        def body(cur: Cursor) -> builtins.list[tuple[int, str, int]]:
            cur.execute(self.q.TALLIES, params)
            return [(int(r["minute"]), str(r["outcome"]), int(r["n"])) for r in cur.fetchall()]

        return tally_counts(self._db.tx(body))

    def _timing_rows(self, lo: int, hi: int, queue: str | None) -> Iterable[tuple[str, str, int]]:
        params = {"lo": lo, "hi": hi, "queue": queue}

        def body(cur: Cursor) -> builtins.list[tuple[str, str, int]]:
            cur.execute(self.q.TIMING_COUNTERS, params)
            return [(str(r["queue"]), str(r["outcome"]), int(r["n"])) for r in cur.fetchall()]

        return self._db.tx(body)

    # -- paused queues --------------------------------------------------------------------------

    def unpaused(self, cur: Cursor, names: Sequence[str]) -> builtins.list[str]:
        """``names`` without the paused queues (read in ``cur``'s transaction)."""
        prefix = self.q.PAUSED_PREFIX
        cur.execute(self.q.PAUSED_OF, {"keys": [prefix + n for n in names]})
        shut = {str(r["key"])[len(prefix) :] for r in cur.fetchall()}
        return [n for n in names if n not in shut]

    def pause(self, queue: str, *, now: float | None = None) -> bool:
        name = check_queue(queue, "pause")
        params = {"key": self.q.PAUSED_PREFIX + name, "value": repr(self.now(now))}

        def body(cur: Cursor) -> bool:
            cur.execute(self.q.PAUSE, params)
            return cur.rowcount == 1

        return bool(self._db.tx(body))

    def resume(self, queue: str) -> bool:
        name = check_queue(queue, "resume")
        at = self.now()

        def body(cur: Cursor) -> bool:
            cur.execute(self.q.META_DELETE, {"key": self.q.PAUSED_PREFIX + name})
            if cur.rowcount != 1:
                return False
            cur.execute(
                self.q.NOTIFY, {"channel": self.q.channel, "payload": payload([(name, at)])}
            )
            return True

        return bool(self._db.tx(body))

    def paused(self) -> dict[str, float]:
        prefix = self.q.PAUSED_PREFIX
        rows = self._prefixed(prefix)
        return {key[len(prefix) :]: float(value) for key, value in rows}

    def _prefixed(self, prefix: str) -> builtins.list[tuple[str, str]]:
        def body(cur: Cursor) -> builtins.list[tuple[str, str]]:
            cur.execute(self.q.META_PREFIXED, {"prefix": prefix})
            return [(str(r["key"]), str(r["value"])) for r in cur.fetchall()]

        rows: builtins.list[tuple[str, str]] = self._db.tx(body)
        return rows

    # -- the worker registry ----------------------------------------------------------------------

    def record_worker(self, record: WorkerRecord) -> None:
        prefix = self.q.WORKER_PREFIX
        row = {"key": prefix + record.id, "value": record.to_json()}
        prune = {"prefix": prefix, "cutoff": record.beat_at - GONE_KEPT}

        def body(cur: Cursor) -> None:
            cur.execute(self.q.PRUNE_WORKERS, prune)
            cur.execute(self.q.RECORD_WORKER, row)

        self._db.tx(body)

    def remove_worker(self, worker_id: str) -> bool:
        key = {"key": self.q.WORKER_PREFIX + worker_id}

        def body(cur: Cursor) -> bool:
            cur.execute(self.q.META_DELETE, key)
            return cur.rowcount == 1

        return bool(self._db.tx(body))

    def workers(self) -> builtins.list[WorkerRecord]:
        out = []
        for _, text in self._prefixed(self.q.WORKER_PREFIX):
            try:
                out.append(WorkerRecord.from_json(text))
            except ValueError:  # a record this version cannot read: not shown
                continue
        return out
