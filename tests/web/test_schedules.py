"""The dashboard's schedules page: list with next / last fire, pause / resume / run now."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from resile.queue.schedules import Rule, Schedule
from resile.queue.store import Store
from web.conftest import post


def declare(store: Store, name: str = "nightly", **task: object) -> None:
    """Store a declared schedule, as a worker does at start."""
    template = {"handler": "report", "params": {"full": True}, **task}
    sched = Schedule(name, "reports", Rule(cron="0 3 * * *", tz="Europe/Berlin"), task=template)
    store.save_schedule(name, "reports", sched.declaration())


class TestSchedulesPage:
    def test_lists_schedules_with_fire_times(self, store: Store, client: httpx.Client) -> None:
        """/schedules shows each schedule's rule, policies, task and its pause and run buttons."""
        declare(store)
        text = client.get("/schedules").text
        assert "nightly" in text and "cron &#39;0 3 * * *&#39; Europe/Berlin" in text
        assert "skip / allow" in text and 'aria-label="Pause schedule nightly"' in text
        assert 'aria-label="Run schedule nightly now"' in text

    def test_output_is_escaped(self, store: Store, client: httpx.Client) -> None:
        """A template's params are shown escaped, never as markup."""
        declare(store, params={"note": "<script>alert(1)</script>"})
        text = client.get("/schedules").text
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;" in text

    def test_pause_resume_and_run_now(self, store: Store, client: httpx.Client) -> None:
        """The POST actions pause, resume and trigger the schedule, each with its notice."""
        declare(store)
        r = post(client, "/schedules/nightly/pause", {"next": "/schedules"}, page="/schedules")
        assert r.status_code == 303 and r.headers["location"] == "/schedules?notice=schedule-paused"
        assert store.get_schedule("nightly").paused == "operator"  # type: ignore[union-attr]
        assert "Resume schedule nightly" in client.get("/schedules").text
        r = post(client, "/schedules/nightly/resume", {"next": "/schedules"}, page="/schedules")
        assert r.headers["location"] == "/schedules?notice=schedule-resumed"
        r = post(client, "/schedules/nightly/trigger", {"next": "/schedules"}, page="/schedules")
        assert r.headers["location"] == "/schedules?notice=schedule-triggered"
        (task,) = store.list()
        assert task.handler == "report" and task.params == {"full": True}

    def test_actions_need_the_csrf_token(self, store: Store, client: httpx.Client) -> None:
        """A POST without the CSRF token is refused and changes nothing."""
        declare(store)
        client.get("/schedules")
        r = client.post("/schedules/nightly/pause", data={})
        assert r.status_code == 403
        assert store.get_schedule("nightly").paused == ""  # type: ignore[union-attr]

    def test_unknown_schedule_is_404(self, store: Store, client: httpx.Client) -> None:
        """An action on a schedule that does not exist answers 404."""
        declare(store, "other")
        assert post(client, "/schedules/nope/pause", {}, page="/schedules").status_code == 404

    def test_read_only_hides_and_refuses_actions(
        self, store: Store, serve_app: Callable[..., str]
    ) -> None:
        """A read-only dashboard draws no buttons and answers 403 to the action routes."""
        declare(store)
        base = serve_app(store, read_only=True)
        with httpx.Client(base_url=base, timeout=10) as c:
            text = c.get("/schedules").text
            assert "Pause schedule" not in text and 'method="post"' not in text
            for action in ("pause", "resume", "trigger"):
                r = c.post(f"/schedules/nightly/{action}", data={}, headers={"origin": base})
                assert r.status_code == 403
        assert store.get_schedule("nightly").paused == ""  # type: ignore[union-attr]
