"""The dashboard: see and steer every queue from a browser (``pip install 'resile[web]'``).

``create_app(url_or_store)`` returns an ASGI app (Starlette, server-rendered
Jinja2 pages, assets shipped in the package); ``serve(url)`` runs it with uvicorn
(``resile dashboard``), on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

try:
    from resile.web._serve import Background, check_bind, serve
    from resile.web.app import create_app
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name in ("starlette", "jinja2", "multipart", "python_multipart"):
        raise ImportError(
            f"resile.web needs {exc.name!r}: install the dashboard extra "
            "(pip install 'resile[web]')"
        ) from exc
    raise

__all__ = ["Background", "check_bind", "create_app", "serve"]
