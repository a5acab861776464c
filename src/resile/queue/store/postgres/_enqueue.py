"""Creating tasks in PostgreSQL: one sequence of statements for the store's pool and for yours.

``create_steps`` is a generator of ``(sql, params)`` steps (see
``_db.drive``): the store runs it in a transaction of its own, and
``in_transaction`` / ``in_transaction_async`` run it inside a caller's psycopg
connection, so that the task is written in the caller's transaction and
exists only if the caller commits (the outbox pattern). The ``NOTIFY`` it
sends is delivered at that commit too.

Ids are chosen before the first try (``prepare``): a try whose commit was
lost and is run again finds its own tasks stored and returns them, instead
of creating them twice or calling them duplicates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from resile.errors import DuplicateTask
from resile.queue import _transitions as tr
from resile.queue.store._codec import created_task, decode, encode_new, has_needs
from resile.queue.store.base import IfExists, check_create_args
from resile.queue.store.postgres._db import Again, Rows, Step, drive, drive_async
from resile.queue.store.postgres._sql import Queries
from resile.queue.store.postgres._watch import payload
from resile.queue.task import Task, TaskSpec, new_task_id

__all__ = ["Created", "create_steps", "in_transaction", "in_transaction_async", "prepare"]

# (the tasks to return, in the order of the specs; the tasks made now)
Created = tuple[list[Task], list[Task]]


def prepare(specs: Iterable[TaskSpec], if_exists: IfExists) -> tuple[list[TaskSpec], set[str]]:
    """The specs, checked, each with an id (new ones generated); and the generated ids.

    Raises:
        ValueError: an unknown ``if_exists``. TypeError: an item that is not a ``TaskSpec``.
    """
    items = list(specs)
    check_create_args(items, if_exists)
    generated: set[str] = set()
    named: list[TaskSpec] = []
    for spec in items:
        if spec.id is None:
            tid = new_task_id()
            generated.add(tid)
            spec = dataclasses.replace(spec, id=tid)
        named.append(spec)
    return named, generated


def create_steps(
    q: Queries, specs: Sequence[TaskSpec], if_exists: IfExists, now: float, generated: set[str]
) -> Generator[Step, Rows, Created]:
    """The statements that create ``specs`` (ids chosen by ``prepare``) at ``now``.

    Raises:
        DuplicateTask: an id exists (not one of ``generated``) and ``if_exists="error"``.
        Again: a concurrent transaction created or finished one of the ids meanwhile.
    """
    stored: dict[str, Task] = {}
    for row in (yield q.EXISTING, {"ids": [s.id for s in specs]}):
        stored[row["id"]] = decode(row, False)
    out: list[Task | None] = []
    new: list[tuple[int, TaskSpec, tr.Created]] = []
    taken: set[str] = set()
    for i, spec in enumerate(specs):
        tid = spec.id or ""
        if tid in stored or tid in taken:
            if if_exists == "error" and tid not in generated:
                found = stored.get(tid)
                raise DuplicateTask(found.queue if found else spec.queue, tid)
            out.append(stored.get(tid))
            continue
        taken.add(tid)
        new.append((i, spec, tr.create(spec.due_at, spec.delay, now)))
        out.append(None)
    created: list[Task] = []
    if new:
        cols: dict[str, list[Any]] = {}
        for _, spec, made in new:
            fields = encode_new(spec, spec.id or "", made.due_at, now)
            fields["has_resources"] = has_needs(spec.resources)
            for k, v in fields.items():
                cols.setdefault(k, []).append(v)
        rows = yield q.INSERT, cols
        seqs = {r["id"]: int(r["seq"]) for r in rows}
        if len(seqs) != len(new):
            raise Again  # a concurrent create of the same id committed meanwhile
        if (yield q.FINISHED_IDS, {"ids": list(seqs)}):
            raise Again  # one was finished (moved) meanwhile: look again
        for i, spec, made in new:
            task = created_task(spec, spec.id or "", seqs[spec.id or ""], made.due_at, now)
            out[i] = task
            created.append(task)
        yield (
            q.NOTIFY,
            {"channel": q.channel, "payload": payload((t.queue, t.due_at) for t in created)},
        )
    # A duplicate within the batch gets the first one's task.
    first = {t.id: t for t in created}
    final = [t if t is not None else first.get(specs[i].id or "") for i, t in enumerate(out)]
    return [t for t in final if t is not None], created


def in_transaction(conn: psycopg.Connection[Any], steps: Generator[Step, Rows, Created]) -> Created:
    """Run ``steps`` in the caller's connection: inside its transaction, as a savepoint.

    A connection in autocommit mode gets a transaction of its own (committed at once).

    Raises:
        TypeError: ``conn`` is not a ``psycopg.Connection``.
    """
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(
            f"create: connection must be a psycopg.Connection, got {type(conn).__name__}"
        )
    if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # Open the caller's transaction (psycopg's implicit BEGIN): a transaction() block
        # opened on an idle connection would commit at its end, before the caller decides.
        conn.execute("SELECT 1")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return drive(cur, steps)


async def in_transaction_async(
    conn: psycopg.AsyncConnection[Any], steps: Generator[Step, Rows, Created]
) -> Created:
    """``in_transaction`` on an ``AsyncConnection``.

    Raises:
        TypeError: ``conn`` is not a ``psycopg.AsyncConnection``.
    """
    if not isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            f"create_async: connection must be a psycopg.AsyncConnection, got {type(conn).__name__}"
        )
    if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        await conn.execute("SELECT 1")
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return await drive_async(cur, steps)
