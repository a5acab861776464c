"""The MySQL 8 / MariaDB 10.6+ task store: ``resile.connect("mysql://user:pw@host:3306/db")``.

``pip install 'resile[mysql]'`` (PyMySQL). The same contract, transitions
and conformance suite as every store; the transactions and the SQL are the
SQLite store's, rendered for MySQL in one place (``_dialect``): row locks
with ``FOR UPDATE SKIP LOCKED`` for the lease, so workers skip each other's
picks. There is no NOTIFY: idle workers read the earliest due time and arm a
timer, and find other processes' new tasks by a short bounded poll
(``Worker(poll_interval=...)``).
"""

from __future__ import annotations

from resile.queue.store.mysql._sql import SCHEMA_VERSION
from resile.queue.store.mysql._store import (
    DEFAULT_FAILED_RETENTION,
    DEFAULT_RETENTION,
    MySQLStore,
    SchemaError,
)

__all__ = [
    "DEFAULT_FAILED_RETENTION",
    "DEFAULT_RETENTION",
    "SCHEMA_VERSION",
    "MySQLStore",
    "SchemaError",
]
