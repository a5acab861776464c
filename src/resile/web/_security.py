"""What keeps the dashboard safe: security headers, the access token, CSRF and origin checks.

* Every response carries a Content-Security-Policy that allows scripts, styles
  and connections from the dashboard itself only (no inline script or style,
  no frames), plus ``nosniff`` and a same-origin referrer policy.
* With a token, a request passes with ``Authorization: Bearer TOKEN`` or with
  the session cookie the login form sets (HttpOnly, SameSite=Strict, signed
  with the token, valid for ``SESSION_SECONDS``). Pages redirect to the login
  form; the event streams and other non-page requests get a 401.
* Every POST needs the CSRF token (a random value in an HttpOnly,
  SameSite=Strict cookie, repeated in the form's ``csrf`` field) and an
  ``Origin`` (or, lacking it, ``Referer``) of the dashboard itself. A request
  authenticated by its bearer header needs no CSRF token (a hostile page
  cannot send that header), but a foreign ``Origin`` is refused all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SESSION_COOKIE",
    "Guard",
    "check_post",
    "route_path",
    "safe_next",
    "session_cookie",
    "token_matches",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CSRF_COOKIE = "resile_csrf"
CSRF_FIELD = "csrf"
SESSION_COOKIE = "resile_session"
SESSION_SECONDS = 12 * 3600
# Paths served without a token: the login form and the stylesheet / script it uses.
_PUBLIC = ("/login", "/static/")


def route_path(scope: Scope) -> str:
    """The request's path inside the dashboard (without the prefix it is mounted under)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _sign(token: str, issued: int) -> str:
    return hmac.new(token.encode(), f"resile-session:{issued}".encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, now: float | None = None) -> str:
    """A session cookie value for ``token``: ``<issued>.<HMAC>``."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_sign(token, issued)}"


def _session_valid(value: str | None, token: str, now: float) -> bool:
    if not value or "." not in value:
        return False
    issued_text, _, mac = value.partition(".")
    if not issued_text.isdigit():
        return False
    issued = int(issued_text)
    if not 0 <= now - issued <= SESSION_SECONDS:
        return False
    return hmac.compare_digest(mac.encode(), _sign(token, issued).encode())


def _bearer(conn: HTTPConnection) -> str | None:
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def safe_next(value: str | None) -> str:
    """A local path to go back to after login; anything else (another site) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _own_origin(conn: HTTPConnection) -> str:
    return f"{conn.url.scheme}://{conn.url.netloc}"


def check_post(conn: HTTPConnection, form_token: str | None) -> str | None:
    """Why a state-changing request must be refused, or ``None`` when it may go on.

    Args:
        form_token: the CSRF token the form (or the ``X-CSRF-Token`` header) carried.
    """
    own = _own_origin(conn)
    origin = conn.headers.get("origin")
    if origin is not None:
        if origin != own:
            return f"origin {origin!r} is not this dashboard ({own})"
    else:
        referer = conn.headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}" != own:
                return f"referer {referer!r} is not this dashboard ({own})"
    if conn.scope.get("state", {}).get("bearer"):
        return None
    cookie = conn.cookies.get(CSRF_COOKIE)
    if (
        not cookie
        or not form_token
        or not hmac.compare_digest(cookie.encode(), form_token.encode())
    ):
        return "missing or wrong CSRF token: reload the page and try again"
    return None


class Guard:
    """ASGI middleware: headers on every response, the CSRF cookie, and the token check."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.token = token
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        state = scope.setdefault("state", {})
        csrf = conn.cookies.get(CSRF_COOKIE)
        fresh = None
        if not csrf or len(csrf) != 43:
            csrf = fresh = secrets.token_urlsafe(32)
        state["csrf"] = csrf
        state["bearer"] = False
        secure = conn.url.scheme == "https"
        root = scope.get("root_path", "") or "/"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = CSP
                headers["x-content-type-options"] = "nosniff"
                headers["referrer-policy"] = "same-origin"
                headers["x-frame-options"] = "DENY"
                if fresh is not None:
                    headers.append(
                        "set-cookie",
                        f"{CSRF_COOKIE}={fresh}; Path={root}; HttpOnly; SameSite=Strict"
                        + ("; Secure" if secure else ""),
                    )
            await send(message)

        if self.token is not None and not self._allowed(conn, state):
            await self._refuse(conn)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _allowed(self, conn: HTTPConnection, state: dict[str, object]) -> bool:
        assert self.token is not None
        bearer = _bearer(conn)
        if bearer is not None:
            state["bearer"] = token_matches(bearer, self.token)
            return bool(state["bearer"])
        path = route_path(conn.scope)
        if path.startswith(_PUBLIC):
            return True
        return _session_valid(conn.cookies.get(SESSION_COOKIE), self.token, self.clock())

    def _refuse(self, conn: HTTPConnection) -> Response:
        path = route_path(conn.scope)
        wants_page = conn.scope.get("method") == "GET" and not path.startswith(
            ("/live/", "/api/", "/openapi.json")
        )
        if wants_page and _bearer(conn) is None:
            query = conn.url.query
            back = path + ("?" + query if query else "")
            root = conn.scope.get("root_path", "")
            return RedirectResponse(f"{root}/login?next={quote(back)}", status_code=303)
        text = "this dashboard needs its token (Authorization: Bearer TOKEN, or log in at /login)"
        headers = {"www-authenticate": 'Bearer realm="resile"'}
        if path.startswith(("/api/", "/openapi.json")):
            return JSONResponse({"error": text, "status": 401}, 401, headers=headers)
        return PlainTextResponse(f"401 Unauthorized: {text}", 401, headers=headers)
