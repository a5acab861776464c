"""The dashboard's token: bearer header or login form, constant-time checked; hosts allowed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from resile.queue.store import Store
from resile.web import create_app
from web.conftest import csrf_of

TOKEN = "s3cret-token"


@pytest.fixture
def locked(sqlite_url: str, serve_app: Callable[..., str]) -> Iterator[str]:
    """The base URL of a dashboard that needs ``TOKEN``."""
    yield serve_app(sqlite_url, token=TOKEN)


class TestToken:
    def test_pages_redirect_to_login(self, locked: str) -> None:
        """Without the token a page redirects to the login form, which names the page to return to."""
        with httpx.Client(base_url=locked) as c:
            response = c.get("/tasks?status=FAILED")
            assert response.status_code == 303
            assert response.headers["location"] == "/login?next=/tasks%3Fstatus%3DFAILED"
            assert c.get("/login").status_code == 200

    def test_streams_and_posts_refused(self, locked: str) -> None:
        """Without the token an event stream or a POST is a 401."""
        with httpx.Client(base_url=locked) as c:
            assert c.get("/live/overview").status_code == 401
            assert c.post("/purge", data={"older_than": "0"}).status_code == 401

    def test_bearer(self, locked: str) -> None:
        """Authorization: Bearer TOKEN opens every page; a wrong token is a 401."""
        with httpx.Client(base_url=locked) as c:
            assert c.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
            wrong = c.get("/", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401

    def test_bearer_post_needs_no_csrf_but_a_local_origin(self, locked: str) -> None:
        """A bearer-authenticated POST needs no CSRF token, but a foreign Origin is still refused."""
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=locked) as c:
            ok = c.post("/purge", data={"older_than": "0"}, headers=auth)
            assert ok.status_code == 303
            foreign = c.post(
                "/purge",
                data={"older_than": "0"},
                headers={**auth, "origin": "http://evil.example"},
            )
            assert foreign.status_code == 403

    def test_login_sets_a_strict_session_cookie(self, locked: str) -> None:
        """The right token at /login sets an HttpOnly, SameSite=Strict cookie that opens the pages."""
        with httpx.Client(base_url=locked) as c:
            token = csrf_of(c, "/login")
            response = c.post(
                "/login",
                data={"csrf": token, "token": TOKEN, "next": "/workers"},
                headers={"origin": locked},
            )
            assert response.status_code == 303 and response.headers["location"] == "/workers"
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("resile_session=")
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert c.get("/workers").status_code == 200

    def test_wrong_token_at_login(self, locked: str) -> None:
        """A wrong token at /login is a 401 that sets no session."""
        with httpx.Client(base_url=locked) as c:
            token = csrf_of(c, "/login")
            response = c.post(
                "/login", data={"csrf": token, "token": "guess"}, headers={"origin": locked}
            )
            assert response.status_code == 401 and "Wrong token." in response.text
            assert "resile_session" not in response.headers.get("set-cookie", "")
            assert c.get("/").status_code == 303

    def test_login_needs_csrf(self, locked: str) -> None:
        """A login POST without the CSRF token (login CSRF) is refused."""
        with httpx.Client(base_url=locked) as c:
            response = c.post("/login", data={"token": TOKEN}, headers={"origin": locked})
            assert response.status_code == 403

    def test_forged_session_refused(self, locked: str) -> None:
        """A session cookie not signed with the token does not open the pages."""
        with httpx.Client(base_url=locked, cookies={"resile_session": "1700000000.abc"}) as c:
            assert c.get("/").status_code == 303

    def test_login_back_to_another_site_is_refused(self, locked: str) -> None:
        """A login whose ``next`` names another site lands on the overview."""
        with httpx.Client(base_url=locked) as c:
            token = csrf_of(c, "/login")
            response = c.post(
                "/login",
                data={"csrf": token, "token": TOKEN, "next": "https://evil.example/"},
                headers={"origin": locked},
            )
            assert response.headers["location"] == "/"


class TestCreateApp:
    def test_bad_arguments(self, store: Store) -> None:
        """An empty token, a bad refresh or batch, or something that is not a store is a ValueError."""
        for kwargs in ({"token": ""}, {"refresh": 0}, {"refresh": "1"}, {"bulk_batch": 0}):
            with pytest.raises(ValueError, match=next(iter(kwargs))):
                create_app(store, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="store URL"):
            create_app("nowhere")

    def test_allowed_hosts(self, sqlite_url: str, serve_app: Callable[..., str]) -> None:
        """With allowed_hosts, a request for another Host (DNS rebinding) is a 400."""
        base = serve_app(sqlite_url, allowed_hosts=["127.0.0.1"])
        with httpx.Client(base_url=base) as c:
            assert c.get("/").status_code == 200
            assert c.get("/", headers={"host": "evil.example"}).status_code == 400

    def test_mounted_under_a_prefix(self, sqlite_url: str, serve_app: Callable[..., str]) -> None:
        """Mounted at /ops in another Starlette app, links and forms carry the prefix."""
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from _web_server import serve

        outer = Starlette(routes=[Mount("/ops", app=create_app(sqlite_url))])
        with serve(outer) as base, httpx.Client(base_url=base) as c:
            page = c.get("/ops/").text
            assert 'href="/ops/tasks"' in page and 'href="/ops/static/style.css"' in page
            assert c.get("/ops/static/live.js").status_code == 200
            assert c.get("/ops/tasks").status_code == 200
