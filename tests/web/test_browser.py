"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Each test serves the dashboard with uvicorn on a free loopback port and
drives the pages as an operator would. With ``RESILE_SCREENSHOTS=DIR`` set,
the tests save a screenshot of each page there (``docs/img/`` in the docs).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resile
from _browser import browser
from _waits import wait_for
from resile import Constant
from resile.queue._names import TaskStatus
from resile.queue.registry import WorkerRecord
from resile.queue.schedules import Rule, Schedule
from resile.queue.store import Store
from resile.queue.task import TaskError, TaskSpec
from web.conftest import dead_task

SHOTS = os.environ.get("RESILE_SCREENSHOTS")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    with browser() as b:
        yield b


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser page (its own cookies) whose console errors are collected."""
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.console_errors = []
    tab.on("console", lambda m: m.type == "error" and tab.console_errors.append(m.text))
    tab.on("pageerror", lambda e: tab.console_errors.append(str(e)))
    try:
        yield tab
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    """Save a full-page screenshot as ``NAME.png`` when ``RESILE_SCREENSHOTS`` names a folder."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@contextlib.contextmanager
def working(queue: Any) -> Iterator[None]:
    """A one-slot worker on ``queue`` running in a thread for the block, stopped after it."""
    worker = resile.Worker(queue, concurrency=1)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        yield
    finally:
        worker.stop()
        runner.join(10)


def status_of(store: Store, task_id: str) -> TaskStatus:
    task = store.get(task_id)
    assert task is not None
    return task.status


def sample(store: Store) -> str:
    """A store with something to see in every state; returns the id of a dead task.

    The running task's id is ``"encode-intro"``.
    """
    for i in range(4):
        store.create(TaskSpec("resize_image", {"size": 256 * (i + 1)}, queue="images"))
    store.create(TaskSpec("send_mail", {"to": "ops@example.com"}, queue="mail"))
    t = time.time()
    for i in range(3):  # run 1.2 s, 2.2 s, 3.2 s in the last minutes (the run time table)
        at = t - 90 + 20 * i
        spec = TaskSpec("render_report", {"month": i + 1}, queue="reports")
        done = store.create(spec, now=at)
        store.lease("reports", "worker-a:4711", now=at)
        store.complete(done.id, "worker-a:4711", {"pages": 12 + i}, now=at + 1.2 + i)
    flaky = store.create(  # a retry that a worker took 1.4 s after it was due
        TaskSpec("send_mail", {"to": "ops@example.com"}, queue="mail", backoff=Constant(2.0)),
        now=t - 30,
    )
    store.lease("mail", "worker-a:4711", now=t - 30)
    store.fail(flaky.id, "worker-a:4711", TaskError("ConnectionError", "refused"), now=t - 29.9)
    store.lease("mail", "worker-a:4711", now=t - 26.5)
    store.complete(flaky.id, "worker-a:4711", None, now=t - 26.3)
    running = store.create(
        TaskSpec("encode_video", {"file": "intro.mp4"}, queue="media", id="encode-intro")
    )
    store.lease("media", "worker-b:802")
    store.progress(running.id, 62, worker_id="worker-b:802")
    store.save_checkpoint(running.id, {"frame": 1488}, worker_id="worker-b:802")
    now = time.time()
    for wid, host, mode, slots, running, beat in (
        ("worker-a:4711", "app-1", "thread", 10, 3, now),
        ("worker-b:802", "gpu-1", "process", 2, 1, now),
        ("worker-c:977", "app-2", "thread", 10, 0, now - 900),
    ):
        pid = int(wid.rsplit(":", 1)[1])
        store.record_worker(
            WorkerRecord(
                wid, host, pid, mode, slots, ("mail", "media"), now - 3600, beat, beat + 20, running
            )
        )
    dead_task(
        store,
        params={"to": "x@example.com"},
        error=TaskError(
            "ConnectionError",
            "connection refused by smtp.example.com:25",
            "Traceback (most recent call last):\n"
            '  File "mail.py", line 12, in send_mail\nConnectionError: refused',
        ),
    )
    return dead_task(
        store,
        handler="send_mail",
        params={"to": "y@example.com"},
        error=TaskError("TimeoutError", "no answer within 30 s"),
    )


class TestPages:
    def test_every_page_renders_and_goes_live(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Each page renders its heading, connects its live stream, and logs no error (no CSP hit)."""
        dead = sample(sqlite_store)
        base = serve_app(sqlite_store)
        for path, heading, name in (
            ("/", "Overview", "overview"),
            ("/tasks", "Tasks", "tasks"),
            (f"/tasks/{dead}", "Task", "task-dead"),
            ("/tasks/encode-intro", "Task", "task"),
            ("/workers", "Workers", "workers"),
        ):
            page.goto(base + path)
            assert page.locator("h1").inner_text().startswith(heading)
            page.locator("#live-state").wait_for(state="visible", timeout=5000)
            shot(page, name)
        assert page.console_errors == []

    def test_filter_the_list(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Choosing a state in the filter form lists only the tasks in that state."""
        dead = sample(sqlite_store)
        page.goto(serve_app(sqlite_store) + "/tasks")
        page.select_option("select[name=status]", "FAILED")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/tasks?*status=FAILED*")
        states = page.locator("table.tasks tbody .status").all_inner_texts()
        assert states == ["FAILED", "FAILED"]
        assert page.locator(f'a[title="{dead}"]').count() == 1
        shot(page, "tasks-filtered")


class TestActions:
    def test_retry_a_dead_task_and_watch_it_run(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Retry on a FAILED task's page: a worker runs it again and the page shows it DONE."""
        queue = resile.connect(sqlite_store)
        healthy = threading.Event()

        @queue.task(name="flaky", max_retries=0)
        def flaky() -> str:
            if not healthy.is_set():
                raise ConnectionError("service down")
            return "sent"

        with working(queue):
            task_id = flaky.enqueue().id
            wait_for(lambda: status_of(sqlite_store, task_id) is TaskStatus.FAILED, 10, "FAILED")
            page.goto(serve_app(sqlite_store) + f"/tasks/{task_id}")
            assert page.locator(".head .status").inner_text() == "FAILED"
            healthy.set()
            page.click("text=Retry now")
            page.locator(".notice").wait_for(timeout=5000)
            page.locator(".head .s-done").wait_for(timeout=5000)
            assert "sent" in page.locator("pre.json").nth(1).inner_text()
        assert status_of(sqlite_store, task_id) is TaskStatus.DONE

    def test_retry_now_a_task_waiting_for_its_retry(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Retry now on a PENDING task whose retry is an hour away: it runs at once, DONE."""
        queue = resile.connect(sqlite_store)
        failed_once = threading.Event()

        @queue.task(name="patient", max_retries=1, backoff=resile.Constant(3600.0))
        def patient() -> str:
            if not failed_once.is_set():
                failed_once.set()
                raise ConnectionError("service down")
            return "sent"

        with working(queue):
            task_id = patient.enqueue().id
            wait_for(
                lambda: (
                    (t := sqlite_store.get(task_id)) is not None
                    and t.attempts == 1
                    and t.status is TaskStatus.PENDING
                ),
                10,
                "the retry scheduled an hour ahead",
            )
            page.goto(serve_app(sqlite_store) + f"/tasks/{task_id}")
            assert page.locator(".head .status").inner_text() == "PENDING"
            shot(page, "task-retry-waiting")
            page.click("text=Retry now")
            page.locator(".notice").wait_for(timeout=5000)
            page.locator(".head .s-done").wait_for(timeout=5000)
        assert status_of(sqlite_store, task_id) is TaskStatus.DONE

    def test_delete_a_dead_task(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Delete on a FAILED task's page: back on the list with a notice, the task gone."""
        task_id = dead_task(sqlite_store)
        page.goto(serve_app(sqlite_store) + f"/tasks/{task_id}")
        page.click("button:text('Delete')")
        page.locator(".notice").wait_for(timeout=5000)
        assert "Task deleted." in page.locator(".notice").inner_text()
        assert page.url.split("?")[0].endswith("/tasks")
        assert sqlite_store.get(task_id) is None
        assert page.console_errors == []

    def test_refused_without_the_csrf_token(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """A retry form stripped of its CSRF field is refused (403) and the task stays FAILED."""
        dead = sample(sqlite_store)
        page.goto(serve_app(sqlite_store) + f"/tasks/{dead}")
        page.locator("#live-state").wait_for(state="visible", timeout=5000)
        # One script turn: the live region cannot be swapped between the removal and the submit.
        page.evaluate(
            """() => {
                const form = document.querySelector("form[action$='/retry']");
                form.querySelector("input[name=csrf]").remove();
                form.requestSubmit();
            }"""
        )
        page.locator("h1", has_text="403").wait_for(timeout=5000)
        assert "CSRF" in page.locator(".problem").inner_text()
        assert status_of(sqlite_store, dead) is TaskStatus.FAILED

    def test_bulk_requeue_by_filter(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Retry every FAILED mail task whose error is ConnectionError, from the filtered list."""
        wanted = [
            dead_task(sqlite_store, error=TaskError("ConnectionError", "x")) for _ in range(12)
        ]
        other = dead_task(sqlite_store, error=TaskError("ValueError", "bad address"))
        base = serve_app(sqlite_store, bulk_batch=5)
        page.goto(base + "/tasks?queue=mail&status=FAILED&error=ConnectionError")
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("text=Apply to everything matching the filter")
        page.wait_for_url("**/jobs/*")
        page.locator("#live .status", has_text="done").wait_for(timeout=10000)
        shot(page, "bulk-job")
        assert all(status_of(sqlite_store, i) is TaskStatus.PENDING for i in wanted)
        assert status_of(sqlite_store, other) is TaskStatus.FAILED

    def test_pause_a_queue_and_see_its_worker_stop(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Pause on the overview: a running worker leaves the queue's new task alone until Resume."""
        queue = resile.connect(sqlite_store, queue="mail")

        @queue.task(name="send")
        def send() -> str:
            return "sent"

        with working(queue):
            first = send.enqueue().id
            wait_for(lambda: status_of(sqlite_store, first) is TaskStatus.DONE, 10, "a first run")
            page.goto(serve_app(sqlite_store) + "/")
            page.get_by_role("button", name="Pause queue mail").click()
            page.locator(".notice", has_text="Queue paused").wait_for(timeout=5000)
            assert page.locator("td.leasing .status").inner_text() == "paused"
            shot(page, "overview-paused")
            waiting = send.enqueue().id
            # A window in which a worker that ignored the pause would have run the task.
            threading.Event().wait(1.0)
            assert status_of(sqlite_store, waiting) is TaskStatus.PENDING
            page.get_by_role("button", name="Resume queue mail").click()
            page.locator(".notice", has_text="Queue resumed").wait_for(timeout=5000)
            wait_for(lambda: status_of(sqlite_store, waiting) is TaskStatus.DONE, 5, "resumed run")

    def test_pause_and_run_a_schedule(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """On the schedules page an operator pauses a schedule, sees it paused, runs it now
        and resumes it; each click lands in the store."""
        sched = Schedule("nightly", "reports", Rule(cron="0 3 * * *", tz="Europe/Berlin"),
                         task={"handler": "report", "params": {"full": True}})  # fmt: skip
        sqlite_store.save_schedule("nightly", "reports", sched.declaration())
        page.goto(serve_app(sqlite_store) + "/schedules")
        page.get_by_role("button", name="Pause schedule nightly").click()
        page.locator(".notice", has_text="Schedule paused").wait_for(timeout=5000)
        assert page.locator("td.leasing .status").inner_text() == "paused (operator)"
        shot(page, "schedules-paused")
        page.get_by_role("button", name="Run schedule nightly now").click()
        page.locator(".notice", has_text="One run of the schedule").wait_for(timeout=5000)
        assert [t.handler for t in sqlite_store.list()] == ["report"]
        page.get_by_role("button", name="Resume schedule nightly").click()
        page.locator(".notice", has_text="Schedule resumed").wait_for(timeout=5000)
        assert sqlite_store.get_schedule("nightly").paused == ""  # type: ignore[union-attr]
        assert page.console_errors == []

    def test_read_only_draws_no_button(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """A read-only dashboard shows the badge and no button on any page."""
        dead = sample(sqlite_store)
        base = serve_app(sqlite_store, read_only=True)
        for path in ("/", "/tasks", f"/tasks/{dead}"):
            page.goto(base + path)
            assert page.locator(".badge", has_text="read-only").count() == 1
            assert page.locator("main form[method=post]").count() == 0, path
            assert page.get_by_role("button", name="Retry now").count() == 0, path


class TestLive:
    def test_a_new_task_shows_within_a_second(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """A task created while the list is open appears in it within one second."""
        sample(sqlite_store)
        page.goto(serve_app(sqlite_store) + "/tasks")
        page.locator("#live-state").wait_for(state="visible", timeout=5000)
        task = sqlite_store.create(TaskSpec("resize_image", queue="images"))
        page.locator(f'a[title="{task.id}"]').wait_for(timeout=1000)

    def test_updates_wait_while_tasks_are_ticked(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """A ticked selection holds the list still (with a note); unticking brings the update."""
        sample(sqlite_store)
        page.goto(serve_app(sqlite_store) + "/tasks")
        page.locator("#live-state").wait_for(state="visible", timeout=5000)
        page.locator("table.tasks tbody input[type=checkbox]").first.check()
        task = sqlite_store.create(TaskSpec("resize_image", queue="images"))
        note = page.locator(".paused-note")
        note.wait_for(state="visible", timeout=5000)
        assert page.locator(f'a[title="{task.id}"]').count() == 0
        page.locator("table.tasks tbody input[type=checkbox]").first.uncheck()
        page.locator(f'a[title="{task.id}"]').wait_for(timeout=5000)
        assert note.is_hidden()


class TestSafety:
    def test_xss_payload_stays_inert(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """Markup in params, names and errors shows as text and runs nothing, live or not."""
        payload = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
        task_id = dead_task(
            sqlite_store,
            handler=payload,
            params={"p": payload},
            error=TaskError(payload, payload, payload),
        )
        base = serve_app(sqlite_store)
        for path in ("/", "/tasks", f"/tasks/{task_id}"):
            page.goto(base + path)
            page.locator("#live-state").wait_for(state="visible", timeout=5000)
            assert page.evaluate("window.pwned") is None, path
            assert page.locator("img").count() == 0, path
        assert payload in page.locator("main").inner_text()
        shot(page, "xss")

    def test_login_with_a_token(
        self, page: Any, sqlite_store: Store, serve_app: Callable[..., str]
    ) -> None:
        """With a token, the overview sends the browser to the login form, which lets it in."""
        base = serve_app(sqlite_store, token="open sesame")
        page.goto(base + "/workers")
        page.wait_for_url(base + "/login?next=/workers")
        shot(page, "login")
        page.fill("input[name=token]", "wrong")
        page.get_by_role("button", name="Log in").click()
        assert page.locator(".problem").inner_text() == "Wrong token."
        page.fill("input[name=token]", "open sesame")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(base + "/workers")
        assert page.locator("h1").inner_text() == "Workers"
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert (
            cookies["resile_session"]["httpOnly"]
            and cookies["resile_session"]["sameSite"] == "Strict"
        )
