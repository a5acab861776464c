"""The JSON API: the same reads and actions as the pages, and an OpenAPI schema no input breaks."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from _waits import wait_for
from resile.queue._names import TaskStatus
from resile.queue.store import Store
from resile.queue.task import TaskError, TaskSpec
from web.conftest import csrf_of, dead_task


def _api_post(client: httpx.Client, path: str, json: object = None) -> httpx.Response:
    """POST as a same-origin script would: the CSRF cookie's value in X-CSRF-Token."""
    token = csrf_of(client)
    return client.post(path, json=json, headers={"x-csrf-token": token})


class TestReads:
    def test_queues(self, store: Store, client: httpx.Client) -> None:
        """/api/queues gives each queue's counts per state and the totals."""
        store.create(TaskSpec("a", queue="q1"))
        dead_task(store)
        body = client.get("/api/queues").json()
        assert {q["name"]: q["counts"]["PENDING"] for q in body["queues"]} == {"mail": 0, "q1": 1}
        assert body["totals"]["FAILED"] == 1

    def test_tasks_pages(self, store: Store, client: httpx.Client) -> None:
        """/api/tasks pages with ``next`` as the cursor until it is null."""
        ids = [store.create(TaskSpec("a", id=f"t{i}")).id for i in range(5)]
        seen, cursor = [], None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            body = client.get("/api/tasks", params=params).json()
            seen += [t["id"] for t in body["tasks"]]
            cursor = body["next"]
            if cursor is None:
                break
        assert seen == ids

    def test_tasks_sorted_by_updated_time_page_by_key_and_sequence(
        self, store: Store, client: httpx.Client
    ) -> None:
        """/api/tasks?sort=updated&order=desc lists the latest changed first, its ``next`` cursor
        carrying the updated time, until it is null."""
        ids = [store.create(TaskSpec("a", id=f"t{i}", delay=60)).id for i in range(5)]
        store.make_due("t1")  # changed last: first of the list
        want = [t.id for t in store.list(order="updated", descending=True)]
        assert want[0] == "t1" and sorted(want) == ids
        seen, cursor = [], None
        while True:
            params = {"limit": "2", "sort": "updated", "order": "desc"}
            body = client.get(
                "/api/tasks", params={**params, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [t["id"] for t in body["tasks"]]
            cursor = body["next"]
            if cursor is None:
                break
            assert ":" in cursor
        assert seen == want

    @pytest.mark.parametrize(
        ("params", "error"),
        [
            ({"sort": "size"}, "sort: expected one of created, due, updated, got 'size'"),
            ({"order": "sideways"}, "order: expected asc or desc, got 'sideways'"),
            ({"sort": "due", "cursor": "42"}, "cursor: expected KEY:SEQUENCE"),
            ({"cursor": "1.5:42"}, "cursor: expected a non-negative integer"),
        ],
    )
    def test_bad_sort_is_a_json_400(
        self, client: httpx.Client, params: dict[str, str], error: str
    ) -> None:
        """A bad sort, order or cursor of another sort is a 400 naming the field and the value."""
        response = client.get("/api/tasks", params=params)
        assert response.status_code == 400
        assert response.json()["error"].startswith(error)

    def test_task_and_unknown_id(self, store: Store, client: httpx.Client) -> None:
        """/api/tasks/{id} gives the whole task; an unknown id is a JSON 404 naming it."""
        task = store.create(TaskSpec("a", {"x": "<b>"}))
        assert client.get(f"/api/tasks/{task.id}").json()["params"] == {"x": "<b>"}
        missing = client.get("/api/tasks/nope")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "no task with id 'nope' (it may have been purged)",
            "status": 404,
        }

    def test_bad_query_is_a_json_400(self, client: httpx.Client) -> None:
        """A bad filter is a 400 whose JSON names the field and the value."""
        response = client.get("/api/tasks", params={"status": "LOST"})
        assert response.status_code == 400
        assert response.json()["error"].startswith("status: expected one of")


class TestActions:
    def test_retry_needs_the_csrf_header(self, store: Store, client: httpx.Client) -> None:
        """A POST without X-CSRF-Token is refused; with it, the dead task is requeued."""
        task_id = dead_task(store)
        assert client.post(f"/api/tasks/{task_id}/retry").status_code == 403
        response = _api_post(client, f"/api/tasks/{task_id}/retry")
        assert response.json()["changed"] is True
        assert response.json()["task"]["status"] == "PENDING"

    def test_delete_and_retry_now(self, store: Store, client: httpx.Client) -> None:
        """POST /api/tasks/{id}/delete deletes (task null after); retry makes a waiting task due."""
        task_id = dead_task(store)
        assert client.post(f"/api/tasks/{task_id}/delete").status_code == 403  # no CSRF header
        assert _api_post(client, f"/api/tasks/{task_id}/delete").json() == {
            "changed": True,
            "task": None,
        }
        assert store.get(task_id) is None
        assert _api_post(client, f"/api/tasks/{task_id}/delete").json()["changed"] is False
        waiting = store.create(TaskSpec("resize", delay=3600)).id
        body = _api_post(client, f"/api/tasks/{waiting}/retry").json()
        assert body["changed"] is True and body["task"]["due_at"] <= store.now()

    def test_foreign_origin_refused(self, store: Store, client: httpx.Client) -> None:
        """A POST from a foreign Origin is refused even with the right header."""
        task_id = dead_task(store)
        token = csrf_of(client)
        response = client.post(
            f"/api/tasks/{task_id}/cancel",
            headers={"x-csrf-token": token, "origin": "http://evil.example"},
        )
        assert response.status_code == 403

    def test_bulk_ids_and_filter(self, store: Store, client: httpx.Client) -> None:
        """Bulk on ids answers the counts; bulk on a filter starts a job that finishes."""
        listed = [dead_task(store) for _ in range(2)]
        body = _api_post(client, "/api/tasks/bulk", {"action": "retry", "ids": listed}).json()
        assert body == {"changed": 2, "skipped": 0}
        matched = [dead_task(store, error=TaskError("ConnectionError", "x")) for _ in range(3)]
        started = _api_post(
            client,
            "/api/tasks/bulk",
            {"action": "retry", "filter": {"status": "FAILED", "error": "ConnectionError"}},
        )
        assert started.status_code == 202
        url = started.json()["url"]
        wait_for(lambda: client.get(url).json()["state"] == "done", 10, "the bulk job")
        assert client.get(url).json()["changed"] == 3
        assert all(store.get(i).status is TaskStatus.PENDING for i in matched)  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"action": "explode", "ids": ["a"]}, "action"),
            ({"action": "retry", "ids": []}, "ids"),
            ({"action": "retry", "filter": "FAILED"}, "filter"),
            ({"action": "retry", "filter": {"status": 7}}, "status"),
            ([1, 2], "body"),
        ],
    )
    def test_bad_bulk_body(self, client: httpx.Client, body: object, field: str) -> None:
        """A bad bulk body is a 400 naming the field."""
        response = _api_post(client, "/api/tasks/bulk", body)
        assert response.status_code == 400
        assert response.json()["error"].startswith(f"{field}: expected")

    def test_pause_and_resume(self, store: Store, client: httpx.Client) -> None:
        """/api/queues/{name}/pause and /resume change the flag /api/queues reports."""
        store.create(TaskSpec("a", queue="mail"))
        body = _api_post(client, "/api/queues/mail/pause").json()
        assert body == {"queue": "mail", "changed": True, "paused": True}
        assert _api_post(client, "/api/queues/mail/pause").json()["changed"] is False
        (mail,) = client.get("/api/queues").json()["queues"]
        assert mail["paused_at"] is not None
        assert _api_post(client, "/api/queues/mail/resume").json()["changed"] is True
        assert client.get("/api/queues").json()["queues"][0]["paused_at"] is None

    def test_purge(self, store: Store, client: httpx.Client) -> None:
        """/api/purge deletes finished tasks older than the age."""
        dead_task(store)
        assert _api_post(client, "/api/purge", {"older_than": "1h"}).json() == {"deleted": 0}
        assert _api_post(client, "/api/purge", {"older_than": 0}).json() == {"deleted": 1}


class TestToken:
    def test_api_needs_the_bearer(self, sqlite_url: str, serve_app: Callable[..., str]) -> None:
        """With a token, the API is a JSON 401 without it and answers with it."""
        base = serve_app(sqlite_url, token="t0k")
        with httpx.Client(base_url=base) as c:
            refused = c.get("/api/queues")
            assert refused.status_code == 401 and refused.json()["status"] == 401
            ok = c.get("/api/queues", headers={"authorization": "Bearer t0k"})
            assert ok.status_code == 200


class TestSchema:
    def test_no_input_gives_a_500(self, sqlite_url: str, serve_app: Callable[..., str]) -> None:
        """Schemathesis, fed /openapi.json, finds no 500 and no answer outside the schema."""
        import schemathesis
        from hypothesis import HealthCheck, given, settings
        from schemathesis.checks import (
            content_type_conformance,
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
        )

        from resile.queue.store import open_store

        with open_store(sqlite_url) as store:
            for _ in range(3):
                dead_task(store, error=TaskError("ConnectionError", "x"))
            store.create(TaskSpec("a", id="known"))
        base = serve_app(sqlite_url, token="t0k")
        schema = schemathesis.openapi.from_url(
            base + "/openapi.json", headers={"authorization": "Bearer t0k"}
        )
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: object) -> None:
                case.call_and_validate(  # type: ignore[attr-defined]
                    base_url=base, headers={"authorization": "Bearer t0k"}, checks=checks
                )

            check()
        assert operations == 12
