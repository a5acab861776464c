"""The MySQL store's own statements: its schema, its meta table, bounded prunes.

Everything else the store runs is the SQLite store's named SQL rendered by
``_dialect.render``. No state is spelled here; columns are ``TaskField`` values, the same as SQLite's table.
"""

from __future__ import annotations

from resile.queue._names import COUNTS_TABLE, META_TABLE, TALLIES_TABLE, TASKS_TABLE

__all__ = [
    "ADDED_COLUMNS",
    "COUNTS_INIT",
    "COUNTS_LOCK",
    "COUNTS_SCHEMA",
    "COUNTS_UNLOCK",
    "LOCK",
    "META_GET",
    "META_SET",
    "PRUNE_DELETE",
    "PRUNE_PICK",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TABLE_COLUMNS",
    "UNLOCK",
    "VERSION_KEY",
    "add_column",
]

#: The version of the MySQL schema this code writes (``resile_meta.schema_version``).
SCHEMA_VERSION = 3
VERSION_KEY = "schema_version"

_T = TASKS_TABLE

# One statement per item (the driver runs one at a time). utf8mb4_bin: ids and queue
# names compare byte for byte, as in SQLite and Redis.
SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} ("
    " `key` VARCHAR(191) NOT NULL PRIMARY KEY, `value` TEXT NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    f"CREATE TABLE IF NOT EXISTS {_T} ("
    " seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " id VARCHAR(255) NOT NULL,"
    " queue VARCHAR(255) NOT NULL,"
    " handler TEXT NOT NULL,"
    " params LONGTEXT NOT NULL,"
    " priority BIGINT NOT NULL,"
    " status VARCHAR(16) NOT NULL,"
    " ready TINYINT NOT NULL DEFAULT 0,"
    " attempts BIGINT NOT NULL DEFAULT 0,"
    " max_retries BIGINT NOT NULL,"
    " backoff TEXT NOT NULL,"
    " last_delay DOUBLE NULL,"
    " due_at DOUBLE NOT NULL,"
    " lease_owner VARCHAR(255) NULL,"
    " lease_expires_at DOUBLE NULL,"
    " progress DOUBLE NOT NULL DEFAULT 0,"
    " checkpoint LONGTEXT NULL,"
    " result LONGTEXT NULL,"
    " last_error LONGTEXT NULL,"
    " history LONGTEXT NOT NULL DEFAULT ('[]'),"
    " timeout DOUBLE NULL,"
    " resources TEXT NOT NULL,"
    " has_resources TINYINT NOT NULL DEFAULT 0,"
    " created_at DOUBLE NOT NULL,"
    " updated_at DOUBLE NOT NULL,"
    " started_at DOUBLE NULL,"
    " finished_at DOUBLE NULL,"
    " traceparent TEXT NULL,"
    f" UNIQUE KEY {_T}_id (id),"
    # What lease reads: due tasks of a queue in (priority, seq) order (``_dialect``) ...
    f" KEY {_T}_ready (status, queue, priority, seq),"
    # ... delayed ones by due time (flip_due, next_due_at), expired leases, needs.
    f" KEY {_T}_delayed (status, ready, queue, due_at),"
    f" KEY {_T}_leased (status, queue, lease_expires_at),"
    f" KEY {_T}_gated (status, has_resources, queue, due_at),"
    f" KEY {_T}_status (queue, status, seq),"
    f" KEY {_T}_finished (status, finished_at)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    # Version 2: the per-minute outcome counters.
    f"CREATE TABLE IF NOT EXISTS {TALLIES_TABLE} ("
    " queue VARCHAR(255) NOT NULL, minute BIGINT NOT NULL, outcome VARCHAR(16) NOT NULL,"
    " n BIGINT NOT NULL, PRIMARY KEY (queue, minute, outcome)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
)

# Version 3: tasks per (queue, status), kept by triggers in the transaction of every insert,
# delete and change of status. Each connection adds to its own shard of rows (its id modulo
# COUNT_SHARDS), so concurrent transitions of one queue seldom wait on one row; reads sum them.
COUNT_SHARDS = 64
_SHARD = f"CONNECTION_ID() % {COUNT_SHARDS}"


def _bump(row: str, delta: int) -> str:
    return (
        f"INSERT INTO {COUNTS_TABLE} (queue, status, shard, n)"
        f" VALUES ({row}.queue, {row}.status, {_SHARD}, {delta})"
        f" ON DUPLICATE KEY UPDATE n = n + ({delta})"
    )


COUNTS_SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} ("
    " queue VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, shard SMALLINT NOT NULL,"
    " n BIGINT NOT NULL, PRIMARY KEY (queue, status, shard)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_insert AFTER INSERT ON {_T}"
    f" FOR EACH ROW {_bump('NEW', 1)}",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_delete AFTER DELETE ON {_T}"
    f" FOR EACH ROW {_bump('OLD', -1)}",
    f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_update AFTER UPDATE ON {_T} FOR EACH ROW"
    " BEGIN IF NOT (OLD.status <=> NEW.status AND OLD.queue <=> NEW.queue) THEN"
    f" {_bump('OLD', -1)}; {_bump('NEW', 1)}; END IF; END",
)
# The first count of a table made before version 3, while writers wait (exact: no change
# lands between the count and the triggers' first deltas).
COUNTS_LOCK = f"LOCK TABLES {_T} READ, {COUNTS_TABLE} WRITE"
COUNTS_UNLOCK = "UNLOCK TABLES"
COUNTS_INIT: tuple[str, ...] = (
    f"DELETE FROM {COUNTS_TABLE}",
    f"INSERT INTO {COUNTS_TABLE} (queue, status, shard, n)"
    f" SELECT queue, status, 0, COUNT(*) FROM {_T} GROUP BY queue, status",
)
# Columns added after version 1: (name, type); an older table gets each it lacks.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("traceparent", "TEXT NULL"),)
# The task table's column names (to find the ones an older table lacks).
TABLE_COLUMNS = (
    "SELECT column_name FROM information_schema.columns"
    f" WHERE table_schema = DATABASE() AND table_name = '{_T}'"
)


def add_column(name: str, kind: str) -> str:
    """The statement that adds one of ``ADDED_COLUMNS`` to a table made before it."""
    return f"ALTER TABLE {_T} ADD COLUMN {name} {kind}"


META_GET = f"SELECT `value` FROM {META_TABLE} WHERE `key` = %(key)s"
META_SET = (
    f"INSERT INTO {META_TABLE} (`key`, `value`) VALUES (%(key)s, %(value)s)"
    " ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)"
)
# One migration at a time per database, across processes.
LOCK = "SELECT GET_LOCK(%(name)s, %(timeout)s)"
UNLOCK = "SELECT RELEASE_LOCK(%(name)s)"
# Finished tasks of ``statuses`` finished at or before ``cutoff``, at most ``batch`` a time:
# picked skipping rows others hold (a DELETE with a WHERE would wait for them), then deleted.
PRUNE_PICK = (
    f"SELECT seq FROM {_T} WHERE status IN %(statuses)s AND finished_at <= %(cutoff)s"
    " LIMIT %(batch)s FOR UPDATE SKIP LOCKED"
)
PRUNE_DELETE = f"DELETE FROM {_T} WHERE seq IN %(seqs)s"
