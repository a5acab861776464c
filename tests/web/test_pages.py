"""The dashboard's pages over a real store: what each shows, escaping, and 4xx for bad input."""

from __future__ import annotations

import html
import time

import httpx
import pytest

from resile import Constant
from resile.queue.store import Store
from resile.queue.task import TaskError, TaskSpec
from web.conftest import dead_task


def _count_link(queue: str, status: str, n: int) -> str:
    return f'href="/tasks?queue={queue}&amp;status={status}">{n}</a>'


def _next_link(text: str) -> str | None:
    """The href of the page's "Next page" link, or None when it has none."""
    marker = text.find('rel="next"')
    if marker == -1:
        return None
    start = text.rfind('href="', 0, marker) + len('href="')
    return html.unescape(text[start : text.index('"', start)])


class TestOverview:
    def test_counts_per_queue_and_state(self, store: Store, client: httpx.Client) -> None:
        """Each queue's row shows its count in each state, linked to the filtered list."""
        for _ in range(3):
            store.create(TaskSpec("resize", queue="images"))
        dead_task(store)
        store.create(TaskSpec("send_mail", queue="mail"))
        page = client.get("/").text
        assert _count_link("images", "PENDING", 3) in page
        assert _count_link("mail", "FAILED", 1) in page
        assert _count_link("mail", "PENDING", 1) in page

    def test_dead_letters_listed(self, store: Store, client: httpx.Client) -> None:
        """A FAILED task appears among the dead letters with its error type."""
        task_id = dead_task(store, error=TaskError("SMTPError", "mailbox full"))
        page = client.get("/").text
        assert f"/tasks/{task_id}" in page
        assert "SMTPError" in page
        assert "(1 FAILED)" in page

    def test_outcome_charts(self, store: Store, client: httpx.Client) -> None:
        """The charts count the last hour's and day's outcomes from the store's counters."""
        for _ in range(2):
            task = store.create(TaskSpec("add"))
            store.lease("default", "w")
            store.complete(task.id, "w", 1)
        dead_task(store)
        retried = store.create(TaskSpec("add", max_retries=2))
        store.lease("default", "w")
        store.fail(retried.id, "w", TaskError("E", "x"))
        page = client.get("/").text
        assert "Last hour, per minute: 2 done, 1 retried, 1 dead" in page
        assert "Last day, per hour: 2 done, 1 retried, 1 dead" in page
        assert page.count('class="bar-done"') == 2  # this minute's bar, in each chart

    def test_run_time_and_lateness(self, store: Store, client: httpx.Client) -> None:
        """Each queue's run time and retry lateness p50 / p95 (with n) per window; none: "—"."""
        t = time.time()
        task = store.create(TaskSpec("add", max_retries=1, backoff=Constant(5.0)), now=t - 30)
        store.lease("default", "w", now=t - 20)
        store.fail(task.id, "w", TaskError("E", "x"), now=t - 19.7)  # run 0.3 s; due t - 14.7
        store.lease("default", "w", now=t - 10)  # 4.7 s late
        store.complete(task.id, "w", None, now=t - 7)  # run 3 s
        store.create(TaskSpec("add", queue="idle"))
        page = client.get("/").text
        row = page[page.index('<th scope="row">default</th>') :].split("</tr>")[0]
        assert row.count("500 ms / 4.6 s") == 2  # last hour, last day
        assert row.count("3.2 s / 4.8 s") == 2
        assert row.count("(n 2)") == 2 and row.count("(n 1)") == 2
        idle = page[page.index('<th scope="row">idle</th>', page.index("Run time")) :]
        assert idle.split("</tr>")[0].count("—") == 4
        (default, _) = sorted(client.get("/api/queues").json()["queues"], key=lambda q: q["name"])
        assert default["timings"]["run"]["day"]["n"] == 2
        assert default["timings"]["late"]["hour"]["p50"] == pytest.approx(2 * 2.5**0.5)

    def test_empty_store(self, client: httpx.Client) -> None:
        """An empty store renders an overview that says so."""
        response = client.get("/")
        assert response.status_code == 200
        assert "No tasks yet." in response.text


class TestTaskList:
    def test_status_filter(self, store: Store, client: httpx.Client) -> None:
        """status=FAILED (any case) lists the dead task and not the pending one."""
        dead = dead_task(store)
        pending = store.create(TaskSpec("send_mail", queue="mail")).id
        page = client.get("/tasks", params={"status": "failed"}).text
        assert dead in page and pending not in page

    def test_name_error_and_prefix_filters(self, store: Store, client: httpx.Client) -> None:
        """task, error and prefix filters each keep only the tasks that match."""
        a = dead_task(store, error=TaskError("ConnectionError", "x"), id="aaa-1")
        b = dead_task(store, error=TaskError("ValueError", "y"), id="bbb-1")
        c = store.create(TaskSpec("resize", queue="mail", id="aaa-2")).id
        by_error = client.get("/tasks", params={"error": "ConnectionError"}).text
        assert a in by_error and b not in by_error
        by_name = client.get("/tasks", params={"task": "resize"}).text
        assert c in by_name and a not in by_name
        by_prefix = client.get("/tasks", params={"prefix": "aaa-"}).text
        assert a in by_prefix and c in by_prefix and b not in by_prefix

    def test_time_range_filter(self, store: Store, client: httpx.Client) -> None:
        """since / until bound the updated time (UTC date-times or epoch seconds)."""
        task = store.create(TaskSpec("resize", id="t-now"))
        before = client.get("/tasks", params={"until": str(task.updated_at - 60)}).text
        assert "t-now" not in before
        around = client.get(
            "/tasks",
            params={
                "since": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(task.updated_at - 60)),
                "until": str(task.updated_at + 60),
            },
        ).text
        assert "t-now" in around

    def test_keyset_pages(self, store: Store, client: httpx.Client) -> None:
        """limit=2 over five tasks gives three pages, in creation order, each linked to the next."""
        ids = [store.create(TaskSpec("resize", id=f"task-{i}")).id for i in range(5)]
        seen: list[str] = []
        url: str | None = "/tasks?limit=2"
        pages = 0
        while url is not None:
            text = client.get(url).text
            pages += 1
            seen += [i for i in ids if f'title="{i}"' in text]
            url = _next_link(text)
        assert pages == 3
        assert seen == ids

    def test_sort_by_due_time_newest_first_pages_in_order(
        self, store: Store, client: httpx.Client
    ) -> None:
        """sort=due&order=desc lists by due time, latest first, and its next links keep the sort
        and go on after the last row's due time; the form shows the sort chosen."""
        for i, delay in enumerate([30, 10, 50, 20, 40]):
            store.create(TaskSpec("resize", id=f"task-{i}", delay=delay))
        want = ["task-2", "task-4", "task-0", "task-3", "task-1"]
        seen: list[str] = []
        url: str | None = "/tasks?limit=2&sort=due&order=desc"
        while url is not None:
            text = client.get(url).text
            assert '<option value="due" selected>' in text
            assert '<option value="desc" selected>' in text
            on_page = sorted(
                (text.index(f'title="{i}"'), i) for i in want if f'title="{i}"' in text
            )
            seen += [i for _, i in on_page]
            url = _next_link(text)
            assert url is None or ("sort=due" in url and "order=desc" in url and "%3A" in url)
        assert seen == want

    def test_bad_input_is_a_4xx_naming_the_field(self, client: httpx.Client) -> None:
        """A bad status, cursor, limit or date is a 400 that names the field and the value."""
        cases = {
            "status": ("RUNNING", "status"),
            "cursor": ("abc", "cursor"),
            "limit": ("100000", "limit"),
            "since": ("yesterday", "since"),
            "sort": ("size", "sort"),
            "order": ("sideways", "order"),
        }
        for field, (value, name) in cases.items():
            response = client.get("/tasks", params={field: value})
            assert response.status_code == 400, (field, response.status_code)
            assert f"{name}: expected" in response.text and f"&#39;{value}&#39;" in response.text


class TestTaskPage:
    def test_everything_about_a_task(self, store: Store, client: httpx.Client) -> None:
        """The task page shows params, progress, checkpoint, lease owner and every attempt."""
        task = store.create(TaskSpec("encode", {"video": "cat.mp4"}, queue="media", max_retries=2))
        store.lease("media", "worker-7")
        store.progress(task.id, 40, worker_id="worker-7")
        store.save_checkpoint(task.id, {"frame": 1200}, worker_id="worker-7")
        store.fail(task.id, "worker-7", TaskError("DiskFull", "no space left", "Traceback (x)"))
        store.lease("media", "worker-8", now=time.time() + 3600)
        page = client.get(f"/tasks/{task.id}").text
        for expected in (
            "cat.mp4",
            "frame",
            "1200",
            'value="40.0"',
            "worker-8",
            "DiskFull",
            "no space left",
            "Traceback (x)",
            "2 of 3",
        ):
            assert expected in page, expected

    def test_attempts_show_their_worker_and_the_task_its_trace_id(
        self, store: Store, client: httpx.Client
    ) -> None:
        """Each attempt row names the worker that ran it; the trace id of the traceparent shows."""
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        task = store.create(TaskSpec("encode", traceparent=f"00-{trace}-00f067aa0ba902b7-01"))
        store.lease("default", "worker-7:41")
        store.fail(task.id, "worker-7:41", TaskError("DiskFull", "no space left"))
        page = client.get(f"/tasks/{task.id}").text
        assert "<code>worker-7:41</code>" in page
        assert f'<code class="trace">{trace}</code>' in page

    def test_result_of_a_done_task(self, store: Store, client: httpx.Client) -> None:
        """A DONE task shows its result and a full progress bar."""
        task = store.create(TaskSpec("add", {"a": 1}))
        store.lease("default", "w")
        store.complete(task.id, "w", {"sum": 42})
        page = client.get(f"/tasks/{task.id}").text
        assert "&#34;sum&#34;: 42" in page and 'value="100.0"' in page

    def test_unknown_id_is_404(self, client: httpx.Client) -> None:
        """An id the store does not hold is a 404 naming it."""
        response = client.get("/tasks/no-such-task")
        assert response.status_code == 404
        assert "no task with id &#39;no-such-task&#39;" in response.text

    def test_id_with_slash_and_spaces(self, store: Store, client: httpx.Client) -> None:
        """An id holding a slash, a space and a question mark opens through its escaped link."""
        store.create(TaskSpec("resize", id="batch/7 of 9?x"))
        listing = client.get("/tasks").text
        assert "/tasks/batch%2F7%20of%209%3Fx" in listing
        page = client.get("/tasks/batch%2F7%20of%209%3Fx")
        assert page.status_code == 200 and "batch/7 of 9?x" in page.text

    def test_find_by_id(self, store: Store, client: httpx.Client) -> None:
        """The header's id box redirects to the task's page."""
        response = client.get("/find", params={"id": "abc/d"})
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks/abc%2Fd"


class TestWorkersPage:
    def test_lease_holders(self, store: Store, client: httpx.Client) -> None:
        """A worker holding a running task is listed with its count and queue."""
        store.create(TaskSpec("encode", queue="media"))
        store.create(TaskSpec("encode", queue="media"))
        store.lease("media", "host-a:123", limit=2)
        page = client.get("/workers").text
        assert "host-a:123" in page and "media" in page and 'status=DOING">2<' in page

    def test_registered_workers_and_slots(self, store: Store, client: httpx.Client) -> None:
        """/workers lists registered workers, beating or gone; the overview sums the live slots."""
        from resile.queue.registry import WorkerRecord

        now = time.time()

        def rec(wid: str, beat: float, running: int) -> WorkerRecord:
            return WorkerRecord(
                wid, "box", 7, "thread", 4, ("mail",), beat, beat, beat + 20, running
            )

        store.record_worker(rec("w-live", now, 3))
        store.record_worker(rec("w-dead", now - 600, 1))
        page = client.get("/workers").text
        assert "w-live" in page and "w-dead" in page
        assert ">beating</span>" in page and ">gone</span>" in page
        assert "(1 beating, 3 of 4 slots busy)" in page
        assert "1 beating</a>, 3 of 4 slots busy" in client.get("/").text


class TestEscaping:
    PAYLOAD = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>"

    def test_untrusted_text_is_escaped_everywhere(self, store: Store, client: httpx.Client) -> None:
        """Params, names and errors holding markup show as text on every page, never as tags."""
        task_id = dead_task(
            store,
            handler="<b>h</b>",
            queue="q<i>",
            params={"body": self.PAYLOAD},
            error=TaskError("Err<script>", self.PAYLOAD, self.PAYLOAD),
        )
        store.create(TaskSpec("<b>h</b>", queue="q<i>", params={"body": self.PAYLOAD}))
        for path in ("/", "/tasks", f"/tasks/{task_id}", "/tasks?queue=q%3Ci%3E"):
            text = client.get(path).text
            assert "<script>alert" not in text, path
            assert "<img src=x" not in text, path
            assert "<b>h</b>" not in text and "q<i>" not in text, path
            assert "&lt;" in text, path


class TestHeaders:
    def test_content_security_policy(self, client: httpx.Client) -> None:
        """Pages carry a CSP without inline scripts or styles, and refuse framing."""
        headers = client.get("/").headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"

    def test_assets_are_served_by_the_dashboard(self, client: httpx.Client) -> None:
        """The page links only its own stylesheet and script, both served from the package."""
        page = client.get("/").text
        assert "://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        for asset in ("/static/style.css", "/static/live.js"):
            assert asset in page
            assert client.get(asset).status_code == 200

    def test_no_inline_script_or_style(self, store: Store, client: httpx.Client) -> None:
        """No page holds an inline <script> body, a style attribute or an on* handler."""
        task_id = dead_task(store)
        for path in ("/", "/tasks", f"/tasks/{task_id}", "/workers"):
            text = client.get(path).text
            assert "<script>" not in text and "style=" not in text and " onclick" not in text
