"""Where MySQL's SQL differs from SQLite's: the one place that knows it.

The MySQL store runs the SQLite store's named statements
(``resile.queue.store._sqlite_sql``), rendered by ``render``:

* ``:name`` parameters become PyMySQL's ``%(name)s``;
* SQLite's ``INDEXED BY`` hints go (InnoDB picks the composite index);
* reads that a transaction writes after get row locks, since InnoDB's plain
  ``SELECT`` reads a snapshot without locking: the lease's picks ``FOR UPDATE
  SKIP LOCKED`` (workers skip each other's rows instead of waiting); the
  reclaim of expired leases and a read of one task by id ``FOR UPDATE`` (a
  lapsed lease whose holder is renewing it at that instant is waited for, not
  skipped: the reclaim must not miss it);
* the meta table's ``key`` and ``value`` columns are quoted (``key`` is reserved);
  SQLite's ``INSERT OR IGNORE`` / ``INSERT OR REPLACE`` / ``ON CONFLICT ... DO
  UPDATE`` become ``INSERT IGNORE`` / ``REPLACE`` / ``ON DUPLICATE KEY UPDATE``;
* the ``ready`` flag is not flipped: SQLite's lease first marks the delayed
  rows that came due (an ``UPDATE``), but an ``UPDATE`` cannot skip rows other
  workers have locked, so it would wait on them. On MySQL the lease reads the
  due ``PENDING`` rows directly, ``due_at <= now`` in ``(priority, seq)``
  order, through its own index; ``next_due_at`` reads stay right, since a
  delayed row that came due still counts by its due time.

What is MySQL's own (the schema, the meta table whose ``key`` column is a
reserved word there, bounded prunes) is in ``_sql``.
"""

from __future__ import annotations

import functools
import re

from resile.queue._names import META_TABLE
from resile.queue.store import _sqlite_sql as lite

__all__ = ["render"]

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+")

# The SQLite statements whose rows the same transaction then changes.
_SKIP_LOCKED_PREFIXES = (
    lite.READY_FIRST.split(" ORDER BY ")[0],
    lite.READY_NEXT.split(" ORDER BY ")[0],
)
_FOR_UPDATE_PREFIXES = (lite.select_expired(1).split(" IN ")[0],)
_FOR_UPDATE = frozenset({lite.SELECT_HELD, lite.SELECT_BY_ID})
_READY = frozenset({lite.READY_FIRST, lite.READY_NEXT})
_FLIP_PREFIX = lite.flip_due(1).split(" IN ")[0]
_ONLY_READY = " AND ready = 1"
_META_COLUMN = re.compile(r"(?<![:\w`])\b(key|value)\b")
_UPSERT = re.compile(r" ON CONFLICT \([^)]*\) DO UPDATE SET ")
_VERBS = (
    ("INSERT OR IGNORE INTO", "INSERT IGNORE INTO"),
    ("INSERT OR REPLACE INTO", "REPLACE INTO"),
)


@functools.lru_cache(maxsize=512)
def render(statement: str) -> str:
    """A statement of the SQLite store, as MySQL 8 / MariaDB 10.6+ runs it (cached)."""
    if statement.startswith(_FLIP_PREFIX):
        return "DO 0"
    out = _INDEXED_BY.sub("", statement)
    if f" {META_TABLE} " in out:
        out = _META_COLUMN.sub(r"`\1`", out)
    for sqlite_verb, mysql_verb in _VERBS:
        if out.startswith(sqlite_verb):
            out = mysql_verb + out[len(sqlite_verb) :]
    out = _UPSERT.sub(" ON DUPLICATE KEY UPDATE ", out)
    if statement in _READY:
        out = out.replace(_ONLY_READY, "", 1)
    if statement.startswith(_SKIP_LOCKED_PREFIXES):
        out += " FOR UPDATE SKIP LOCKED"
    elif statement in _FOR_UPDATE or statement.startswith(_FOR_UPDATE_PREFIXES):
        out += " FOR UPDATE"
    return _PARAM.sub(r"%(\1)s", out.replace("%", "%%"))
