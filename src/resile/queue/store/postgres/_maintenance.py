"""Keeping the hot table's indexes near their live size: ``REINDEX INDEX CONCURRENTLY``.

Vacuum makes an index's emptied pages reusable but never shrinks its file, so
a B-tree keeps the largest size it ever needed; under churn each late vacuum
raises it for good (docs/postgres.md, "Retention and vacuum"). After a vacuum
the store's vacuum thread calls ``IndexKeeper.after_vacuum``, which at most
every ``every`` seconds compares each index with the size a fresh build of its
entries would take (``live_bytes``) and, of those past ``ratio`` times it (and
``floor``), rebuilds the one whose rebuild frees the most bytes, concurrently:
workers keep reading and writing. The most bytes, not the highest ratio: a
small partial index (the leased tasks) reaches 20x in seconds and, picked by
ratio, would be rebuilt every round while the id index grew to 12x.

The live size is estimated from the entries and the key widths, not learned
from an earlier rebuild: it needs no state, so it is right in a fresh process
and for an index that was already bloated when the store opened, and the
index's own entry count (``pg_class.reltuples``, which each vacuum's index
pass refreshes) is right for a partial index, which holds a fraction of the
rows. B-tree deduplication can make an index smaller than the estimate; that
only rebuilds it later, never needlessly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg

from resile.queue.store.postgres._sql import Queries

logger = logging.getLogger("resile.queue")

# A B-tree page, what of it holds entries, and the leaf fill of a fresh build (fillfactor 90).
_PAGE = 8192
_PAGE_ROOM = _PAGE - 24 - 16  # the page header and the B-tree's special space
_LEAF_FILL = 0.9
# An entry: its line pointer (4) and its tuple (an 8-byte header with the heap TID, the key), MAXALIGNed.
_ITEM_ID = 4
_TUPLE_HEADER = 8
# What a failed ``REINDEX ... CONCURRENTLY`` leaves: the new copy or the old one, INVALID.
_LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")

# Defaults: rebuild past 1.7x the estimate and 128 kB; at most one index a round, a round
# at most every second and at most a tenth of the time (a round of a big table waits longer);
# wait at most 1 s for a lock (a rebuild takes none that blocks workers; it waits for vacuums).
RATIO = 1.7
FLOOR = 128 * 1024
EVERY = 1.0
BUSY = 0.1
LOCK_TIMEOUT = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class IndexSize:
    """One index of the hot table: its file's size and the estimate of its live size."""

    name: str
    size: int
    live: int
    valid: bool


def live_bytes(entries: float, key_bytes: float) -> int:
    """The size a fresh B-tree build of ``entries`` keys of ``key_bytes`` takes.

    ``(2 + ceil(entries * entry / (room * 0.9))) * 8192`` with
    ``entry = 4 + MAXALIGN(8 + key_bytes)``: the leaves at fillfactor 90, plus
    the meta page and the root (the inner pages of the small hot table's
    indexes are a fraction of a percent of the leaves, left out).
    """
    entry = _ITEM_ID + 8 * math.ceil((_TUPLE_HEADER + key_bytes) / 8)
    leaves = math.ceil(max(entries, 0.0) * entry / (_PAGE_ROOM * _LEAF_FILL))
    return (2 + leaves) * _PAGE


def index_sizes(conn: psycopg.Connection[Any], q: Queries) -> list[IndexSize]:
    """Each index of the hot table, by name (an autocommit connection of its own)."""
    rows = conn.execute(q.HOT_INDEXES, {"schema": q.schema, "table": q.hot_table}).fetchall()
    return [
        IndexSize(
            name=r["name"],
            size=int(r["size"]),
            # Never counted (-1: not vacuumed yet): taken as live, so not rebuilt.
            live=live_bytes(float(r["entries"]), float(r["key_bytes"] or 0))
            if r["entries"] >= 0
            else int(r["size"]),
            valid=bool(r["valid"]),
        )
        for r in rows
    ]


def drop_leftovers(conn: psycopg.Connection[Any], q: Queries, sizes: list[IndexSize]) -> list[str]:
    """Drop the INVALID ``*_ccnew`` / ``*_ccold`` indexes a failed rebuild left; their names."""
    dropped = []
    for ix in sizes:
        if not ix.valid and _LEFTOVER.search(ix.name):
            conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS {q.schema}."{ix.name}"')
            dropped.append(ix.name)
    return dropped


def keep_indexes(
    conn: psycopg.Connection[Any],
    q: Queries,
    *,
    ratio: float = RATIO,
    floor: int = FLOOR,
    lock_timeout: float = LOCK_TIMEOUT,
) -> str | None:
    """One round: drop leftovers, then rebuild the index whose rebuild frees the most bytes.

    An index is bloated when its file is larger than ``ratio`` times its
    estimated live size and than ``floor`` bytes. ``conn`` must be an
    autocommit connection of its own (``REINDEX CONCURRENTLY`` runs outside a
    transaction; its ``lock_timeout`` is set here). Returns the rebuilt
    index's name; ``None`` when none is bloated, or while another store of
    the schema runs a round (an advisory lock).

    Raises:
        psycopg.Error: a statement failed (the caller logs it).
    """
    conn.execute(f"SET lock_timeout = {max(1, math.ceil(lock_timeout * 1000))}")
    key = {"key": q.REINDEX_LOCK_KEY}
    got = conn.execute(q.REINDEX_LOCK, key).fetchone()
    if not got or not got["got"]:
        return None
    try:
        sizes = index_sizes(conn, q)
        gone = set(drop_leftovers(conn, q, sizes))
        bloated = [
            ix
            for ix in sizes
            if ix.valid and ix.name not in gone and ix.size > floor and ix.size > ratio * ix.live
        ]
        if not bloated:
            return None
        worst = max(bloated, key=lambda ix: ix.size - ix.live)
        conn.execute(f'REINDEX INDEX CONCURRENTLY {q.schema}."{worst.name}"')
        now = {ix.name: ix.size for ix in index_sizes(conn, q)}
        logger.debug(  # at full speed a rebuild a second: not a line an operator wants each time
            "resile: rebuilt index %s.%s (%d kB -> %d kB, about %d kB live)",
            q.schema, worst.name, worst.size // 1024, now.get(worst.name, 0) // 1024,
            worst.live // 1024,
        )  # fmt: skip
        return worst.name
    finally:
        conn.execute(q.REINDEX_UNLOCK, key)


class IndexKeeper:
    """Runs ``keep_indexes`` after a vacuum: at most every ``every`` seconds, and at
    most ``BUSY`` of the time (the next round waits 10x as long as the last took).

    Args:
        connect: opens an autocommit connection of its own (closed after the round).
        q: the store's statements.
        every: the least seconds between two rounds (so at most one rebuild each).
        clock: monotonic seconds.

    Never raises: a failed round is logged (a warning the first time, then at
    debug level) and tried again ``every`` seconds later, after dropping what
    it left.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        q: Queries,
        *,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._q = q
        self.every = every
        self._clock = clock
        self._next = clock() + every
        self._warned = False

    def after_vacuum(self) -> str | None:
        """A round when one is due; the rebuilt index's name, or ``None``."""
        start = self._clock()
        if start < self._next:
            return None
        try:
            with self._connect() as conn:
                return keep_indexes(conn, self._q)
        except Exception as exc:  # housekeeping: a worker never fails for it
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(level, "resile: REINDEX of %s's indexes failed: %s", self._q.hot, exc)
            return None
        finally:
            took = self._clock() - start
            self._next = start + max(self.every, took / BUSY)
