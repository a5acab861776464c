"""The worker registry's record: who serves which queues, with how many slots, beating until when.

A worker writes its own ``WorkerRecord`` when it starts and again at every
heartbeat (``Store.record_worker``), and removes it when it stops
(``Store.remove_worker``). A record whose ``expires_at`` has passed belongs
to a worker that stopped beating (killed, hung, its machine gone): readers
show it as gone, and stores drop it ``GONE_KEPT`` seconds later.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GONE_KEPT", "WorkerRecord"]

#: Seconds a gone worker's record is kept (and shown as gone) before stores drop it.
GONE_KEPT = 3600.0


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One worker, as the registry knows it.

    Attributes:
        id: the worker id (its lease owner name).
        host, pid: where it runs.
        mode: ``thread``, ``process`` or ``async``.
        concurrency: its slots (attempts at once).
        queues: the queues it serves.
        running: attempts running at its last beat.
        started_at, beat_at: epoch seconds it started and last beat.
        expires_at: when it counts as gone unless it beats again.
    """

    id: str
    host: str
    pid: int
    mode: str
    concurrency: int
    queues: tuple[str, ...]
    started_at: float
    beat_at: float
    expires_at: float
    running: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"WorkerRecord: id must be a non-empty str, got {self.id!r}")
        for name in ("started_at", "beat_at", "expires_at"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"WorkerRecord: {name} must be epoch seconds, got {value!r}")

    def alive(self, now: float) -> bool:
        """True while the worker beats (``now < expires_at``)."""
        return now < self.expires_at

    def to_json(self) -> str:
        """The record as JSON; ``WorkerRecord.from_json`` reverses it."""
        return json.dumps(
            {
                "id": self.id,
                "host": self.host,
                "pid": self.pid,
                "mode": self.mode,
                "concurrency": self.concurrency,
                "queues": list(self.queues),
                "started_at": self.started_at,
                "beat_at": self.beat_at,
                "expires_at": self.expires_at,
                "running": self.running,
                "extra": dict(self.extra),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerRecord:
        """Rebuild a record from ``to_json()`` output.

        Raises:
            ValueError: not such JSON.
        """
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                mode=str(data["mode"]),
                concurrency=int(data["concurrency"]),
                queues=tuple(str(q) for q in data["queues"]),
                started_at=float(data["started_at"]),
                beat_at=float(data["beat_at"]),
                expires_at=float(data["expires_at"]),
                running=int(data.get("running", 0)),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"WorkerRecord: not a worker record: {text[:80]!r} ({exc})") from None
