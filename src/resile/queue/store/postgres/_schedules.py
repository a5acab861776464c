"""The PostgreSQL store's schedule records: rows of the meta table, changed by compare-and-set.

A tick's record change and its task's insert are one transaction (``Store.fire_tick``).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from resile.queue._names import SCHEDULE_PREFIX
from resile.queue.store.postgres._db import Cursor, Database, drive
from resile.queue.store.postgres._enqueue import create_steps, prepare
from resile.queue.store.postgres._sql import Queries
from resile.queue.task import Task, TaskSpec

__all__ = ["Schedules"]


class Schedules:
    """``Store``'s three schedule primitives over ``self.q`` and ``self._db``."""

    q: Queries
    _db: Database

    if TYPE_CHECKING:

        def _prefixed(self, prefix: str) -> builtins.list[tuple[str, str]]: ...  # Dashboard's

    def _schedule_texts(self) -> builtins.list[str]:
        return [text for _, text in self._prefixed(SCHEDULE_PREFIX)]

    def _schedule_text(self, name: str) -> str | None:
        def body(cur: Cursor) -> str | None:
            cur.execute(self.q.META_GET, {"key": SCHEDULE_PREFIX + name})
            row = cur.fetchone()
            return None if row is None else str(row["value"])

        found: str | None = self._db.tx(body)
        return found

    def _schedule_swap(
        self, name: str, old: str | None, new: str | None, task: TaskSpec | None, now: float
    ) -> Task | bool:
        params = {"key": SCHEDULE_PREFIX + name, "old": old, "new": new}
        if old is None:
            statement = self.q.SCHEDULE_ADD
        else:
            statement = self.q.SCHEDULE_SWAP if new is not None else self.q.SCHEDULE_DROP

        def body(cur: Cursor) -> Task | bool:
            cur.execute(statement, params)
            if cur.rowcount != 1:
                return False
            if task is None:
                return True
            named, generated = prepare([task], "return")
            _, created = drive(cur, create_steps(self.q, named, "return", now, generated))
            return created[0] if created else True

        result: Task | bool = self._db.tx(body)
        return result
