"""The Jinja2 environment of the dashboard: packaged templates, autoescape on, a few filters.

Every value from the store (ids, params, results, errors, names) is
untrusted; autoescaping is on for every template and nothing is marked
``safe``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

__all__ = ["environment"]


def _when(ts: float | None) -> str:
    """Epoch seconds as ``2026-01-31 14:05:09`` (UTC); ``—`` for none."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: float | None) -> str:
    """Epoch seconds as an ISO date-time with its zone (for ``<time datetime>``)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def _seconds(value: float | None) -> str:
    """A duration: ``850 ms``, ``12.3 s``, ``4 min 10 s``."""
    if value is None:
        return "—"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _pretty(value: Any) -> str:
    """JSON, indented (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _pathquote(value: str) -> str:
    """A path segment with everything but unreserved characters escaped (``/`` too)."""
    return quote(value, safe="")


def _query(params: dict[str, Any], **extra: Any) -> str:
    """``?a=1&b=2`` from the fields of ``params`` and ``extra`` that are set; empty when none is."""
    items = {k: v for k, v in {**params, **extra}.items() if v is not None and v != ""}
    return "?" + urlencode(items) if items else ""


def _number(value: int) -> str:
    """``1234567`` as ``1,234,567``."""
    return f"{value:,}"


def environment() -> jinja2.Environment:
    """A new environment reading the templates shipped in ``resile.web``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("resile.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        iso=_iso,
        seconds=_seconds,
        pretty=_pretty,
        pathquote=_pathquote,
        query=_query,
        number=_number,
    )
    return env
