"""The PostgreSQL task store: SKIP LOCKED leases, LISTEN/NOTIFY wake-ups, enqueue in your transaction.

``resile.connect("postgresql://user:pw@host:5432/db")`` (``postgres://`` too;
``pip install 'resile[postgres]'``: psycopg 3 and psycopg_pool).

* Every contract method is one transaction on a pooled connection; the
  transition it applies is decided by ``resile.queue._transitions`` on the
  rows it read and locked (``SELECT ... FOR UPDATE``), never in SQL.
  ``lease`` locks due rows with ``FOR UPDATE SKIP LOCKED`` (workers never wait
  on each other's picks) and leases a batch in one ``UPDATE``.
* Live tasks (``PENDING``, ``DOING``) stay in a small hot table with partial
  indexes on the live states; a task that finishes moves to the finished
  table in the transaction that finishes it, and retention prunes that table
  in bounded batches. The hot table stays the size of the live work.
* A create, a retry, a release and a requeue ``NOTIFY`` with the queue and the
  due time, delivered at commit; ``watch`` holds a ``LISTEN`` connection and
  repairs a lost one within a second, polling meanwhile (``_watch``).
  ``listen=false`` (PgBouncer transaction pooling) turns it off: workers poll.
* ``create(spec, connection=conn)`` writes the task in *your* psycopg
  connection and transaction (sync, or async with ``create_async``): it exists
  only if you commit.
* Lost connections, deadlocks and serialization failures are retried with
  backoff for ``retry_for`` seconds (``_db``).

The modules: ``_sql`` (every statement, named), ``_db`` (connections,
transactions, schema versions), ``_enqueue`` (creating tasks, in your
transaction or ours), ``_watch`` (NOTIFY payloads, the LISTEN thread),
``_store`` (the contract methods).
"""

from __future__ import annotations

from resile.queue.store.postgres._db import SchemaError
from resile.queue.store.postgres._sql import SCHEMA_VERSION
from resile.queue.store.postgres._store import (
    DEFAULT_FAILED_RETENTION,
    DEFAULT_RETENTION,
    PostgresStore,
)

__all__ = [
    "DEFAULT_FAILED_RETENTION",
    "DEFAULT_RETENTION",
    "SCHEMA_VERSION",
    "PostgresStore",
    "SchemaError",
]
