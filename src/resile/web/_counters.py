"""The overview's day of per-minute counters, read from the store a little at a time.

A minute's counters change only while transitions still count in it: a
transition counts under the minute of its own ``now``, so once a minute is a
few seconds past (clock skew between processes, a transaction that commits a
moment after its ``now``) it never changes again. ``Counters`` keeps what it
has read of the past minutes and, on each refresh, asks the store only for the
last ``FRESH`` seconds (as ``tallies`` and bucket rows) plus the edge of the
day window that whole hours do not cover. At a day of busy counters on SQLite
this takes the overview's counter reads from about 130 ms a refresh to a few
ms after the first (docs/benchmarks.md, "Dashboard").

One ``Counters`` serves one app; its reads are serialized by a lock (the
overview's reads are shared by every viewer already, see ``SharedReads``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from resile.queue._names import Tally
from resile.queue.store.base import Store, Timings, tally_range, timing_counts

__all__ = ["DAY", "FRESH", "Counters"]

DAY = 86_400
# Seconds read again on every refresh: the minutes that may still be counting.
FRESH = 300
_HOUR_MINUTES = 60


class Counters:
    """Per-minute outcome counters of the last day and run time / lateness of the last hour
    and day, for one store, reading each past minute from it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._minutes: dict[int, dict[Tally, int]] = {}
        self._read_to: float | None = None  # the ``now`` of the last tallies read
        # Whole hours of bucket rows (hour number -> rows), read once each.
        self._hours: dict[int, list[tuple[str, str, int]]] = {}

    def _for(self, store: Store) -> None:
        if store is not self._store:  # another store: nothing read applies
            self._store, self._minutes, self._read_to, self._hours = store, {}, None, {}

    def tallies(self, store: Store, now: float) -> dict[int, dict[Tally, int]]:
        """``store.tallies(since=now - DAY + 1)``, with past minutes from what was read before."""
        with self._lock:
            self._for(store)
            day = now - DAY + 1
            since = day
            if self._read_to is not None:
                since = max(day, (self._read_to - FRESH) // 60 * 60)
            fresh = store.tallies(since=since, until=now)
            kept = {m: c for m, c in self._minutes.items() if day <= m < since}
            kept.update(fresh)
            self._minutes, self._read_to = kept, now
            return dict(kept)

    def timings(self, store: Store, now: float, span: int) -> dict[str, Timings]:
        """``store.timings(since=now - span + 1)``: whole hours older than ``FRESH`` from
        what was read before, the rest from the store."""
        lo, hi = tally_range(now - span + 1, now, now)  # the minutes that start in range
        with self._lock:
            self._for(store)
            rows: list[tuple[str, str, int]] = []
            settled = (int(now) - FRESH) // 60  # minutes up to here no longer change
            first_hour = -(-lo // _HOUR_MINUTES)  # the first whole hour inside the range
            last_hour = (settled + 1) // _HOUR_MINUTES - 1  # the last whole settled hour
            if last_hour < first_hour:
                return timing_counts(store._timing_rows(lo, hi, None))
            for hour in range(first_hour, last_hour + 1):
                got = self._hours.get(hour)
                if got is None:
                    start = hour * _HOUR_MINUTES
                    got = self._hours[hour] = _listed(
                        store._timing_rows(start, start + _HOUR_MINUTES - 1, None)
                    )
                rows.extend(got)
            oldest = lo // _HOUR_MINUTES - 1
            self._hours = {h: r for h, r in self._hours.items() if h >= oldest}
            if lo < first_hour * _HOUR_MINUTES:
                rows.extend(store._timing_rows(lo, first_hour * _HOUR_MINUTES - 1, None))
            rows.extend(store._timing_rows((last_hour + 1) * _HOUR_MINUTES, hi, None))
            return timing_counts(rows)


def _listed(rows: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [(str(q), str(what), int(n)) for q, what, n in rows]
