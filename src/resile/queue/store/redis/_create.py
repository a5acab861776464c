"""Storing new tasks: the create scripts' arguments and what their replies mean."""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from typing import Any

from resile.errors import DuplicateTask
from resile.queue.store._codec import created_task, has_needs
from resile.queue.store.base import IfExists, dumps, dumps_params, dumps_shared
from resile.queue.store.redis import _keys as K
from resile.queue.store.redis import _scripts
from resile.queue.store.redis._decode import decode as _decode
from resile.queue.task import Task, TaskSpec

__all__ = ["create_args", "created", "hgetalls", "replayed"]

_num = _scripts.num


def _priority_hex(priority: int) -> str:
    """``priority`` as 16 hex digits that sort like the number (offset by 2**63)."""
    return format(priority + 2**63, f"0{K.RANK_WIDTH}x")


def _ids(specs: Sequence[TaskSpec]) -> builtins.list[str]:
    """Each spec's id, or a fresh random one (32 hex digits) for those without."""
    fresh = os.urandom(16 * len(specs)).hex()
    return [
        spec.id if spec.id is not None else fresh[32 * i : 32 * i + 32]
        for i, spec in enumerate(specs)
    ]


def hgetalls(root_: str, ids: Sequence[str]) -> builtins.list[tuple[str, str]]:
    """One ``HGETALL`` per task id, for a pipeline."""
    return [("HGETALL", K.task_key(root_, i)) for i in ids]


def replayed(replies: Sequence[Any]) -> tuple[builtins.list[Task], builtins.list[Task]]:
    """The tasks a replayed create finds (every task, and the same as "the new ones")."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
    tasks = [_decode(r, strict=False) for r in replies if r]
    return tasks, tasks


def create_args(
    specs: Sequence[TaskSpec], if_exists: IfExists, now: float
) -> tuple[builtins.list[str], str, builtins.list[str]]:
    """The ids, the script and its arguments that store ``specs`` (checked, not empty)."""
    ids = _ids(specs)
    op = _scripts.op_id()
    now_s = _num(now)
    script = "create1" if len(specs) == 1 else "create"
    spec_ = _scripts.SPECS[script]
    if script == "create1":  # one record: no count
        args = spec_.argv(now_s=now_s, if_exists=if_exists, op=op)
    else:
        args = spec_.argv(now_s=now_s, if_exists=if_exists, op=op, n=str(len(specs)))
    record = spec_.record
    # Specs of one task function share their defaults (the same objects): encode once.
    # ``specs`` keeps those objects alive, so an id() is not reused during the loop.
    policies: dict[int, str] = {}
    gates: dict[int, tuple[str, str]] = {}
    ranks: dict[int, str] = {}
    for spec, task_id in zip(specs, ids, strict=True):
        backoff, resources_, timeout = spec.backoff, spec.resources, spec.timeout
        policy = policies.get(id(backoff))
        if policy is None:
            policy = policies[id(backoff)] = dumps_shared(backoff)  # type: ignore[arg-type]
        gate = gates.get(id(resources_))
        if gate is None:
            gate = gates[id(resources_)] = (
                dumps(dict(resources_)) if resources_ else "",
                "1" if has_needs(resources_) else "0",
            )
        priority = spec.priority
        rank = ranks.get(priority)
        if rank is None:
            rank = ranks[priority] = _priority_hex(priority)
        params = spec.params
        due = now_s if spec.due_at is None and spec.delay == 0 else _num(spec.due_time(now))
        args += record(
            id=task_id,
            queue=spec.queue,
            handler=spec.handler,
            params=dumps_params(params, task_id) if params else "{}",
            priority=str(priority),
            rank_prefix=rank,
            max_retries=str(spec.max_retries),
            backoff=policy,
            due_s=due,
            timeout_s="" if timeout is None else _num(timeout),  # type: ignore[arg-type]
            resources=gate[0],
            gated=gate[1],
            traceparent=spec.traceparent or "",
        )
    return ids, script, args


def created(
    reply: Any, specs: Sequence[TaskSpec], ids: Sequence[str], now: float
) -> tuple[builtins.list[Task], builtins.list[Task]] | None:
    """(every task, the new ones) from the create script's reply; ``None`` for a
    replay (our own earlier write whose reply was lost: the caller reads the tasks).

    Raises:
        DuplicateTask: an id exists and ``if_exists="error"``.
    """
    if reply[0] == "dup":
        raise DuplicateTask(reply[2], reply[1])
    if reply[0] == "replay":
        return None
    out: builtins.list[Task] = []
    created: builtins.list[Task] = []
    made: dict[str, Task] = {}
    for spec, task_id, item in zip(specs, ids, reply[1:], strict=True):
        if isinstance(item, int):
            task = created_task(spec, task_id, item, spec.due_time(now), now)
            created.append(task)
        elif isinstance(item, builtins.list):
            task = _decode(item, strict=False)
        else:  # "again": a repeated id in this batch
            task = made[task_id]
        made.setdefault(task_id, task)
        out.append(task)
    return out, created
