"""The connection options the server stores share (``store/_sql_options.py``): checked by
name on PostgreSQL and MySQL alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from _backends import BACKENDS
from resile.queue.store import open_store


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_bad_timeouts_are_refused_by_name(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """read_timeout and idle_timeout must be seconds >= 0 or none; a bad value is named."""
    url = BACKENDS[backend](request, tmp_path)
    join = "&" if "?" in url else "?"
    with pytest.raises(ValueError, match="read_timeout must be seconds"):
        open_store(f"{url}{join}read_timeout=soon")
    with pytest.raises(ValueError, match="idle_timeout"):
        open_store(url, idle_timeout=-1)
    open_store(f"{url}{join}read_timeout=none&idle_timeout=none").close()
