"""Task stores: the contract (``base.Store``) and one module per backend.

``open_store(url)`` picks the backend from the URL scheme through a registry;
a backend joins it with ``register_store`` (or an entry in ``_BACKENDS``
naming its module, imported only when such a URL is opened).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from resile.queue.store.base import IfExists, Listener, Store

__all__ = ["IfExists", "Listener", "Store", "open_store", "register_store", "schemes"]

StoreFactory = Callable[..., Store]

# scheme -> "module:attribute" (a factory taking the URL and keyword options).
# Strings keep the imports lazy: opening a SQLite store never imports redis-py.
_BACKENDS: dict[str, str | StoreFactory] = {
    "sqlite": "resile.queue.store.sqlite:SQLiteStore.from_url",
    "redis": "resile.queue.store.redis:RedisStore.from_url",
    "rediss": "resile.queue.store.redis:RedisStore.from_url",
    "unix": "resile.queue.store.redis:RedisStore.from_url",
    "postgresql": "resile.queue.store.postgres:PostgresStore.from_url",
    "postgres": "resile.queue.store.postgres:PostgresStore.from_url",
    "mysql": "resile.queue.store.mysql:MySQLStore.from_url",
    "mariadb": "resile.queue.store.mysql:MySQLStore.from_url",
}
# scheme -> the extra that brings its driver, where it is not the scheme's own name.
_EXTRAS = {"rediss": "redis", "unix": "redis", "postgresql": "postgres", "mariadb": "mysql"}


def register_store(scheme: str, factory: str | StoreFactory) -> None:
    """Make ``open_store`` handle ``scheme://...`` URLs with ``factory(url, **options)``.

    ``factory`` may be a ``"module:attr.attr"`` string, imported on first use.
    """
    if not isinstance(scheme, str) or not scheme:
        raise ValueError(f"register_store: scheme must be a non-empty str, got {scheme!r}")
    _BACKENDS[scheme.lower()] = factory


def schemes() -> list[str]:
    """The URL schemes ``open_store`` knows."""
    return sorted(_BACKENDS)


def _resolve(scheme: str, target: str) -> StoreFactory:
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise NotImplementedError(
                f"resile: the {scheme!r} task store is not available yet in this version "
                f"({module_name} is missing); use sqlite:///path.db"
            ) from None
        raise ImportError(
            f"resile: the {scheme!r} task store needs {exc.name!r}; "
            f"install it (pip install 'resile[{_EXTRAS.get(scheme, scheme)}]')"
        ) from exc
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def open_store(url: str, **options: Any) -> Store:
    """Open the store a URL names: ``sqlite:///tasks.db``, ``sqlite:///:memory:``, ``redis://...``.

    Raises:
        ValueError: not a URL, or a scheme no backend handles (the known ones are listed).
        NotImplementedError: a known scheme whose backend is not part of this version.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(
            f"store URL must look like 'sqlite:///tasks.db' or 'redis://host:6379/0', got {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    target = _BACKENDS.get(scheme)
    if target is None:
        raise ValueError(
            f"store URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(schemes())}"
        )
    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number 0-65535
    except ValueError:
        shown = re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)  # no password
        raise ValueError(
            f"store URL {shown!r}: the port must be a number from 0 to 65535"
        ) from None
    factory = _resolve(scheme, target) if isinstance(target, str) else target
    return factory(url, **options)
