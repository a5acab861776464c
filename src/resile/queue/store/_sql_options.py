"""What the SQL server stores share: URL options, redaction, retention and its prune timer.

``read_options`` reads resile's query options from a ``postgresql://`` or
``mysql://`` URL (seconds, ``none``, ints, booleans), each bad value named;
the options it does not know are handed back, for the driver.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from resile.queue._names import TaskStatus

__all__ = [
    "DEFAULT_FAILED_RETENTION",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETENTION",
    "RETENTION_OPTIONS",
    "SERVER_OPTIONS",
    "PruneTimer",
    "read_options",
    "redact",
    "retention_classes",
]

#: Seconds ``DONE`` and ``CANCELED`` tasks are kept (as the Redis store).
DEFAULT_RETENTION: float | None = 7 * 24 * 3600.0
#: Seconds dead letters (``FAILED``) are kept; ``None``: until purged.
DEFAULT_FAILED_RETENTION: float | None = None
#: Seconds a store call waits on a silent server before it drops the connection and retries
#: on a fresh one (as the Redis store's socket timeout).
DEFAULT_READ_TIMEOUT: float | None = 10.0
#: Seconds the server lets a session sit idle inside a transaction before it ends the session
#: and rolls back (a frozen worker's row locks last no longer); shorter than any lease.
DEFAULT_IDLE_TIMEOUT: float | None = 1.0
RETENTION_OPTIONS = ("retention", "failed_retention")
#: The URL options both SQL server stores take.
SERVER_OPTIONS = (
    *RETENTION_OPTIONS,
    "pool_size",
    "connect_timeout",
    "retry_for",
    "migrate",
    "read_timeout",
    "idle_timeout",
)
# Options that also take "none".
_NULLABLE = (*RETENTION_OPTIONS, "vacuum_every", "read_timeout", "idle_timeout")
_SECONDS = (*_NULLABLE, "connect_timeout", "retry_for")
_INTS = ("pool_size",)
_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS.update({"0": False, "false": False, "no": False, "off": False})


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and ``repr``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_options(
    url: str, known: Collection[str], *, what: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """resile's options in ``url``'s query, and the other ``(key, value)`` pairs in order.

    Seconds options (``retention``, ``failed_retention``, ``connect_timeout``,
    ``retry_for``, ``read_timeout``, ``idle_timeout``; all but ``connect_timeout``
    and ``retry_for`` also ``none``), int ones (``pool_size``)
    and booleans (``listen``, ``migrate``: true/false, 1/0, yes/no, on/off) are
    converted; other ``known`` options stay text.

    Raises:
        ValueError: ``"<what> URL <url>: <key> must be ..., got <value>"`` (password hidden).
    """
    opts: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    shown = redact(url)
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key not in known:
            rest.append((key, value))
        elif key in _NULLABLE and value.strip().lower() in ("", "none"):
            opts[key] = None
        elif key in _SECONDS or key in _INTS:
            try:
                opts[key] = float(value) if key in _SECONDS else int(value)
            except ValueError:
                kind = "seconds" if key in _SECONDS else "an int"
                raise ValueError(
                    f"{what} URL {shown!r}: {key} must be {kind}, got {value!r}"
                ) from None
        elif key in ("listen", "migrate"):
            flag = _BOOLS.get(value.strip().lower())
            if flag is None:
                raise ValueError(
                    f"{what} URL {shown!r}: {key} must be true or false, got {value!r}"
                )
            opts[key] = flag
        else:
            opts[key] = value
    return opts, rest


def retention_classes(
    retention: float | None, failed_retention: float | None
) -> list[tuple[tuple[TaskStatus, ...], float]]:
    """``(statuses, seconds kept)`` for each outcome that has a retention (``None``: kept)."""
    out: list[tuple[tuple[TaskStatus, ...], float]] = []
    if retention is not None:
        out.append(((TaskStatus.DONE, TaskStatus.CANCELED), retention))
    if failed_retention is not None:
        out.append(((TaskStatus.FAILED,), failed_retention))
    return out


class PruneTimer:
    """Runs a store's retention prune from its lease, at most every ``every`` seconds of the
    store's clock; a failing prune is logged, never raised (it is housekeeping).

    Args:
        prune: ``prune(now)``, deleting what retention says may go.
        every: seconds of the store's clock between two prunes.
    """

    def __init__(self, prune: Callable[[float], int], every: float = 30.0) -> None:
        self.prune = prune
        self.every = every
        self._next = -math.inf

    def tick(self, at: float) -> None:
        """Prune when the last one is ``every`` seconds old (by ``at``)."""
        if at < self._next:
            return
        self._next = at + self.every
        try:
            self.prune(at)
        except Exception:
            logging.getLogger("resile.queue").exception("resile: retention prune failed")
