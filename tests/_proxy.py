"""The chaos suite's loopback TCP proxy (``benchmarks/chaos.py``), for tests that break a
connection between a store and its real server (latency, resets, silence)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from chaos import Proxy

__all__ = ["Proxy", "through"]


def through(url: str, proxy: Proxy) -> str:
    """``url`` (``scheme://user:pw@127.0.0.1:port/db?...``) pointed at ``proxy`` instead."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{proxy.port}" if auth else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))
