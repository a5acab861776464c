"""The dashboard's actions: one POST route each, CSRF and origin checked, read-only refuses them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx
import pytest

from _waits import wait_for
from resile.queue._names import TaskStatus
from resile.queue.store import Store
from resile.queue.task import TaskError, TaskSpec
from web.conftest import csrf_of, dead_task, post


def _status(store: Store, task_id: str) -> TaskStatus:
    task = store.get(task_id)
    assert task is not None
    return task.status


class TestOneTask:
    def test_retry_a_dead_task(self, store: Store, client: httpx.Client) -> None:
        """POST /tasks/{id}/retry puts a FAILED task back to PENDING and redirects with a notice."""
        task_id = dead_task(store)
        response = post(client, f"/tasks/{task_id}/retry", {"next": f"/tasks/{task_id}"})
        assert response.status_code == 303
        assert response.headers["location"] == f"/tasks/{task_id}?notice=retried"
        assert _status(store, task_id) is TaskStatus.PENDING
        assert "Task queued to run again now." in client.get(response.headers["location"]).text

    def test_cancel_a_pending_task(self, store: Store, client: httpx.Client) -> None:
        """POST /tasks/{id}/cancel cancels a PENDING task."""
        task_id = store.create(TaskSpec("resize")).id
        assert post(client, f"/tasks/{task_id}/cancel", {}).status_code == 303
        assert _status(store, task_id) is TaskStatus.CANCELED

    def test_action_that_does_not_apply(self, store: Store, client: httpx.Client) -> None:
        """Retrying a PENDING task changes nothing and says so."""
        task_id = store.create(TaskSpec("resize")).id
        response = post(client, f"/tasks/{task_id}/retry", {"next": "/tasks"})
        assert response.headers["location"] == "/tasks?notice=not-retried"
        assert _status(store, task_id) is TaskStatus.PENDING

    def test_retry_now_a_pending_task_that_waits(self, store: Store, client: httpx.Client) -> None:
        """A PENDING task waiting for its due time shows "Retry now"; POST retry makes it due now."""
        task_id = store.create(TaskSpec("resize", delay=3600)).id
        page = client.get(f"/tasks/{task_id}").text
        assert f'action="/tasks/{task_id}/retry"' in page
        response = post(client, f"/tasks/{task_id}/retry", {"next": f"/tasks/{task_id}"})
        assert response.headers["location"] == f"/tasks/{task_id}?notice=retried"
        task = store.get(task_id)
        assert task is not None and task.status is TaskStatus.PENDING
        assert task.due_at <= store.now() and task.attempts == 0
        assert f'action="/tasks/{task_id}/retry"' not in client.get(f"/tasks/{task_id}").text

    def test_delete_a_task(self, store: Store, client: httpx.Client) -> None:
        """POST /tasks/{id}/delete deletes a finished task and redirects to the list."""
        task_id = dead_task(store)
        assert f'action="/tasks/{task_id}/delete"' in client.get(f"/tasks/{task_id}").text
        response = post(client, f"/tasks/{task_id}/delete", {"next": f"/tasks/{task_id}"})
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks?notice=deleted"
        assert store.get(task_id) is None
        assert "Task deleted." in client.get(response.headers["location"]).text
        assert client.get(f"/tasks/{task_id}").status_code == 404

    def test_a_running_task_is_not_deleted(self, store: Store, client: httpx.Client) -> None:
        """A DOING task draws no Delete button, and a POST deletes nothing and says so."""
        task_id = store.create(TaskSpec("resize")).id
        store.lease("default", "w-1")
        assert f'action="/tasks/{task_id}/delete"' not in client.get(f"/tasks/{task_id}").text
        response = post(client, f"/tasks/{task_id}/delete", {"next": f"/tasks/{task_id}"})
        assert response.headers["location"] == f"/tasks/{task_id}?notice=not-deleted"
        assert _status(store, task_id) is TaskStatus.DOING

    def test_delete_needs_csrf(self, store: Store, client: httpx.Client) -> None:
        """A delete without the CSRF token is refused and deletes nothing."""
        task_id = dead_task(store)
        assert client.post(f"/tasks/{task_id}/delete", data={}).status_code == 403
        assert store.get(task_id) is not None

    def test_next_must_be_local(self, store: Store, client: httpx.Client) -> None:
        """A ``next`` pointing at another site redirects to the overview instead."""
        task_id = store.create(TaskSpec("resize")).id
        response = post(client, f"/tasks/{task_id}/cancel", {"next": "//evil.example/x"})
        assert response.headers["location"] == "/?notice=canceled"

    def test_get_is_not_an_action(self, store: Store, client: httpx.Client) -> None:
        """A GET on an action's URL acts on nothing (it names no page: 404; /purge: 405)."""
        task_id = dead_task(store)
        assert client.get(f"/tasks/{task_id}/retry").status_code == 404
        assert client.get("/purge").status_code == 405
        assert _status(store, task_id) is TaskStatus.FAILED

    def test_audit_line(
        self, store: Store, client: httpx.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every action writes what, which task and from where to the audit log."""
        task_id = dead_task(store)
        with caplog.at_level(logging.INFO, logger="resile.web.audit"):
            post(client, f"/tasks/{task_id}/retry", {})
        lines = [r.getMessage() for r in caplog.records if r.name == "resile.web.audit"]
        assert any(f"retry task={task_id} changed=True client=127.0.0.1:" in m for m in lines)


class TestCrossSite:
    def test_refused_without_csrf_token(self, store: Store, client: httpx.Client) -> None:
        """A POST without the form's CSRF token is a 403 and changes nothing."""
        task_id = dead_task(store)
        csrf_of(client)  # the cookie is there; the field is not
        response = client.post(f"/tasks/{task_id}/retry", data={})
        assert response.status_code == 403 and "CSRF" in response.text
        assert _status(store, task_id) is TaskStatus.FAILED

    def test_refused_with_a_wrong_token(self, store: Store, client: httpx.Client) -> None:
        """A CSRF field that does not match the cookie is refused."""
        task_id = dead_task(store)
        csrf_of(client)
        response = client.post(f"/tasks/{task_id}/retry", data={"csrf": "x" * 43})
        assert response.status_code == 403
        assert _status(store, task_id) is TaskStatus.FAILED

    def test_refused_without_the_cookie(self, store: Store, dashboard: str) -> None:
        """A token copied from a page is refused by a client without the matching cookie."""
        task_id = dead_task(store)
        with httpx.Client(base_url=dashboard) as first, httpx.Client(base_url=dashboard) as other:
            token = csrf_of(first)
            response = other.post(f"/tasks/{task_id}/retry", data={"csrf": token})
        assert response.status_code == 403
        assert _status(store, task_id) is TaskStatus.FAILED

    def test_foreign_origin_refused(self, store: Store, client: httpx.Client) -> None:
        """A POST whose Origin is another site is a 403, even with the right token and cookie."""
        task_id = dead_task(store)
        token = csrf_of(client)
        response = client.post(
            f"/tasks/{task_id}/retry",
            data={"csrf": token},
            headers={"origin": "http://evil.example"},
        )
        assert response.status_code == 403 and "evil.example" in response.text
        assert _status(store, task_id) is TaskStatus.FAILED

    def test_foreign_referer_refused(self, store: Store, client: httpx.Client) -> None:
        """Without an Origin, a Referer from another site is refused."""
        task_id = dead_task(store)
        token = csrf_of(client)
        response = client.post(
            f"/tasks/{task_id}/retry",
            data={"csrf": token},
            headers={"referer": "http://evil.example/page"},
        )
        assert response.status_code == 403
        assert _status(store, task_id) is TaskStatus.FAILED


class TestBulk:
    def test_selected_tasks(self, store: Store, client: httpx.Client) -> None:
        """Bulk retry of a selection requeues the FAILED ones and counts the others as skipped."""
        dead = [dead_task(store) for _ in range(3)]
        pending = store.create(TaskSpec("send_mail", queue="mail")).id
        response = post(
            client,
            "/tasks/bulk",
            {"action": "retry", "scope": "selected", "ids": [*dead, pending], "next": "/tasks"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks?notice=bulk&changed=3&skipped=1"
        assert all(_status(store, i) is TaskStatus.PENDING for i in dead)

    def test_everything_matching_the_filter(
        self, store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Bulk retry by filter requeues every FAILED mail task whose error matches, in batches."""
        with httpx.Client(base_url=serve_app(store, bulk_batch=7)) as client:
            wanted = [dead_task(store, error=TaskError("ConnectionError", "x")) for _ in range(30)]
            other_error = [dead_task(store, error=TaskError("ValueError", "x")) for _ in range(4)]
            other_queue = [dead_task(store, queue="sms") for _ in range(4)]
            response = post(
                client,
                "/tasks/bulk",
                {
                    "action": "retry",
                    "scope": "filter",
                    "queue": "mail",
                    "status": "FAILED",
                    "error": "ConnectionError",
                },
            )
            assert response.status_code == 303
            job_page = response.headers["location"]
            assert re.fullmatch(r"/jobs/[0-9a-f]{16}", job_page)
            wait_for(lambda: ">done</span>" in client.get(job_page).text, 10, "the bulk job")
            text = client.get(job_page).text
            assert "<dt>Changed</dt><dd>30</dd>" in text
            assert "<dt>Batches</dt><dd>5</dd>" in text
            assert all(_status(store, i) is TaskStatus.PENDING for i in wanted)
            assert all(_status(store, i) is TaskStatus.FAILED for i in other_error + other_queue)

    def test_bulk_delete_selected(self, store: Store, client: httpx.Client) -> None:
        """Bulk delete on ticked tasks deletes the ones not running and counts the rest skipped."""
        dead = [dead_task(store) for _ in range(2)]
        running = store.create(TaskSpec("resize", queue="busy")).id
        store.lease("busy", "w-1")
        assert 'value="delete"' in client.get("/tasks").text
        form = {"action": "delete", "scope": "selected", "ids": [*dead, running]}
        response = post(client, "/tasks/bulk", form, page="/tasks")
        assert "changed=2" in response.headers["location"]
        assert "skipped=1" in response.headers["location"]
        assert all(store.get(i) is None for i in dead)
        assert _status(store, running) is TaskStatus.DOING

    def test_bad_bulk_input(self, store: Store, client: httpx.Client) -> None:
        """An unknown action or scope, or no selection, is a 400 naming the field."""
        task_id = dead_task(store)
        cases = [
            ({"action": "explode", "ids": [task_id]}, "action"),
            ({"action": "retry", "scope": "everything"}, "scope"),
            ({"action": "retry", "scope": "selected"}, "ids"),
            ({"action": "retry", "scope": "filter", "status": "NOPE"}, "status"),
        ]
        for data, field in cases:
            response = post(client, "/tasks/bulk", data)
            assert response.status_code == 400, data
            assert f"{field}: expected" in response.text
        assert _status(store, task_id) is TaskStatus.FAILED


class TestPurge:
    def test_purge_by_age_and_state(self, store: Store, client: httpx.Client) -> None:
        """Purge deletes the finished tasks older than the age, of the chosen states only."""
        done = store.create(TaskSpec("add"))
        store.lease("default", "w")
        store.complete(done.id, "w", 1)
        failed = dead_task(store)
        kept = post(client, "/purge", {"older_than": "1h", "statuses": ["DONE", "FAILED"]})
        assert kept.headers["location"] == "/?notice=purged&count=0"
        response = post(client, "/purge", {"older_than": "0s", "statuses": ["DONE"]})
        assert response.headers["location"] == "/?notice=purged&count=1"
        assert store.get(done.id) is None and store.get(failed) is not None

    def test_bad_age_or_state(self, client: httpx.Client) -> None:
        """An age that is not a duration, or an unfinished state, is a 400 naming the field."""
        response = post(client, "/purge", {"older_than": "soon"})
        assert response.status_code == 400 and "older_than: expected" in response.text
        response = post(client, "/purge", {"older_than": "1d", "statuses": ["PENDING"]})
        assert response.status_code == 400 and "statuses: expected" in response.text


class TestPauseQueue:
    def test_pause_and_resume_from_the_overview(self, store: Store, client: httpx.Client) -> None:
        """Pause on the overview stops leases of that queue; the row says paused; resume undoes."""
        store.create(TaskSpec("send_mail", queue="mail"))
        response = post(client, "/queues/mail/pause", {"next": "/"})
        assert response.headers["location"] == "/?notice=paused"
        assert store.lease("mail", "w") == []
        page = client.get("/").text
        assert ">paused</span>" in page and 'action="/queues/mail/resume"' in page
        post(client, "/queues/mail/resume", {})
        assert len(store.lease("mail", "w")) == 1

    def test_pause_a_queue_before_it_has_tasks(self, store: Store, client: httpx.Client) -> None:
        """A paused queue without tasks is listed on the overview all the same."""
        post(client, "/queues/later/pause", {})
        assert "later" in store.paused()
        assert 'action="/queues/later/resume"' in client.get("/").text

    def test_pause_needs_csrf(self, store: Store, client: httpx.Client) -> None:
        """A pause without the CSRF token is refused and pauses nothing."""
        csrf_of(client)
        assert client.post("/queues/mail/pause").status_code == 403
        assert store.paused() == {}


class TestReadOnly:
    def test_no_button_and_every_action_refused(
        self, store: Store, serve_app: Callable[..., str]
    ) -> None:
        """read_only=True draws no action form and answers 403 to every action route."""
        task_id = dead_task(store)
        base = serve_app(store, read_only=True)
        with httpx.Client(base_url=base) as c:
            for path in ("/", "/tasks", f"/tasks/{task_id}"):
                text = c.get(path).text
                assert "read-only" in text
                assert 'method="post"' not in text, path
            token_page = c.get("/")
            assert token_page.status_code == 200
            for path, data in (
                (f"/tasks/{task_id}/retry", {}),
                (f"/tasks/{task_id}/cancel", {}),
                (f"/tasks/{task_id}/delete", {}),
                ("/tasks/bulk", {"action": "delete", "ids": task_id}),
                ("/tasks/bulk", {"action": "retry", "ids": task_id}),
                ("/purge", {"older_than": "0"}),
                ("/queues/mail/pause", {}),
            ):
                response = c.post(path, data=data, headers={"origin": base})
                assert response.status_code == 403, path
        assert _status(store, task_id) is TaskStatus.FAILED
