"""The dashboard as an ASGI app: ``create_app(url_or_store)``, pages, actions and live streams.

Pages are rendered on the server and readable without JavaScript; the one
script (``static/live.js``) only swaps in the live fragments that the
``/live/...`` event streams send. Each action is its own POST route behind
the CSRF and origin checks of ``_security``; ``read_only=True`` refuses them
all (403) and draws no button. Every action writes an audit line to the
``resile.web.audit`` logger.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from resile.queue._names import (
    ACTIVE_STATUSES,
    MAX_ID_LENGTH,
    TERMINAL_STATUSES,
    Tally,
    TaskStatus,
)
from resile.queue.api import Queue
from resile.queue.schedules import check_name as check_schedule_name
from resile.queue.store import Store, open_store
from resile.web._api import routes as api_routes
from resile.web._counters import Counters
from resile.web._filters import (
    MAX_LIMIT,
    BadInput,
    TaskFilter,
    parse_age,
    parse_cursor,
    parse_limit,
)
from resile.web._jobs import Job, Jobs
from resile.web._live import SharedReads, digest, stream
from resile.web._security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Guard,
    check_post,
    safe_next,
    session_cookie,
    token_matches,
)
from resile.web._templates import environment
from resile.web._views import (
    STATUSES,
    NotFound,
    overview_view,
    schedules_view,
    task_view,
    tasks_view,
    workers_view,
)

__all__ = ["create_app"]

audit = logging.getLogger("resile.web.audit")


# What each action does to one task: True when the store changed it.
def _retry(store: Store, task_id: str) -> bool:
    """Retry now: a FAILED or CANCELED task requeued, or a PENDING one that waits made due."""
    return store.requeue(task_id) is not None or store.make_due(task_id) is not None


ACTIONS: dict[str, Callable[[Store, str], bool]] = {
    "cancel": lambda store, task_id: store.cancel(task_id),
    "retry": _retry,
    "delete": lambda store, task_id: store.delete(task_id),
}
# The states each action applies to (the buttons a task shows; "retry" on a PENDING task
# only while it waits for its due time).
APPLIES: dict[str, frozenset[TaskStatus]] = {
    "cancel": ACTIVE_STATUSES,
    "retry": frozenset({TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.PENDING}),
    "delete": frozenset(TaskStatus) - {TaskStatus.DOING},
}
# Fixed texts for the notice an action redirects to (never text from the request).
NOTICES = {
    "canceled": "Task canceled.",
    "not-canceled": "Nothing canceled: the task had already finished.",
    "retried": "Task queued to run again now.",
    "not-retried": "Not retried: only a FAILED or CANCELED task, or a PENDING one that waits, can be.",
    "deleted": "Task deleted.",
    "not-deleted": "Nothing deleted: the task is running (cancel it first) or gone.",
    "bulk": "{changed} tasks changed, {skipped} skipped (in another state).",
    "purged": "{count} finished tasks deleted.",
    "stopped": "The bulk job stops after its current batch.",
    "paused": "Queue paused: workers take none of its tasks until it is resumed.",
    "resumed": "Queue resumed.",
    "schedule-paused": "Schedule paused: no worker fires its ticks until it is resumed.",
    "schedule-resumed": "Schedule resumed: its missed= policy decides about the ticks it missed.",
    "schedule-triggered": "One run of the schedule enqueued now.",
    "schedule-unchanged": "Nothing changed: the schedule was already in that state.",
}


def _fields(params: Any, names: Sequence[str]) -> dict[str, str]:
    return {n: str(params.get(n, "")) for n in names}


_FILTER_FIELDS = ("queue", "status", "task", "error", "prefix", "since", "until")
_NOTICE_FIELDS = ("notice", "changed", "skipped", "count")


class _Dashboard:
    """The routes of one dashboard over one store."""

    def __init__(
        self, store: Store, *, read_only: bool, token: str | None, refresh: float, batch: int
    ) -> None:
        self.store = store
        self.read_only = read_only
        self.token = token
        self.reads = SharedReads(refresh)
        self.counters = Counters()  # the overview's past minutes, read once
        self.jobs = Jobs(store, batch=batch)
        self.env = environment()
        self.actions = ACTIONS

    # -- rendering --------------------------------------------------------------------------------

    def context(self, request: Request, **data: Any) -> dict[str, Any]:
        root = request.scope.get("root_path", "")
        notice = NOTICES.get(request.query_params.get("notice", ""))
        if notice is not None:
            counts = {
                k: int(v) if v.isdigit() else 0
                for k, v in request.query_params.items()
                if k in ("changed", "skipped", "count")
            }
            notice = notice.format(**{"changed": 0, "skipped": 0, "count": 0, **counts})
        return {
            "request": request,
            "root": root,
            "csrf": request.state.csrf,
            "csrf_field": CSRF_FIELD,
            "read_only": self.read_only,
            "login": self.token is not None,
            "statuses": STATUSES,
            "applies": APPLIES,
            "tallies": (Tally.DONE, Tally.RETRIED, Tally.DEAD),
            "notice": notice,
            "here": _here(request),
            **data,
        }

    def render(self, name: str, ctx: dict[str, Any]) -> str:
        return self.env.get_template(name).render(ctx)

    def page(self, request: Request, name: str, status_code: int = 200, **data: Any) -> Response:
        return HTMLResponse(self.render(name, self.context(request, **data)), status_code)

    def live_page(self, request: Request, name: str, stream_path: str, **data: Any) -> Response:
        """A page with a live region: its fragment, and the stream URL naming what it shows."""
        ctx = self.context(request, **data)
        fragment = self.render(f"_{name}_live.html", ctx)
        query = [p for p in request.url.query.split("&") if p and not p.startswith("digest=")]
        query.append(f"digest={digest(fragment)}")
        ctx["live_html"] = Markup(fragment)  # our own template's output, escaped already
        ctx["live_url"] = f"{ctx['root']}/live{stream_path}?" + "&".join(query)
        return HTMLResponse(self.render(f"{name}.html", ctx))

    def live(
        self, request: Request, key: Any, load: Callable[[], dict[str, Any]], fragment: str
    ) -> Response:
        def render(data: dict[str, Any]) -> str:
            return self.render(fragment, self.context(request, **data))

        def render_error(exc: Exception) -> str:
            text = str(exc) if isinstance(exc, NotFound) else f"The store could not be read: {exc}"
            return self.render("_problem.html", self.context(request, problem=text))

        events: AsyncIterator[str] = stream(
            self.reads, key, load, render, render_error, shown=request.query_params.get("digest")
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- pages ------------------------------------------------------------------------------------

    def overview_read(self) -> tuple[Any, Callable[[], dict[str, Any]]]:
        return ("overview",), lambda: overview_view(self.store, self.counters)

    def tasks_read(self, request: Request) -> tuple[Any, Callable[[], dict[str, Any]]]:
        params = request.query_params
        flt = TaskFilter.from_params(params)
        cursor = parse_cursor(params.get("cursor"), keyed=flt.keyed)
        limit = parse_limit(params.get("limit"))
        return ("tasks", flt, cursor, limit), lambda: tasks_view(self.store, flt, cursor, limit)

    def task_read(self, task_id: str) -> tuple[Any, Callable[[], dict[str, Any]]]:
        return ("task", task_id), lambda: task_view(self.store, task_id)

    def workers_read(self) -> tuple[Any, Callable[[], dict[str, Any]]]:
        return ("workers",), lambda: workers_view(self.store)

    async def overview(self, request: Request) -> Response:
        key, load = self.overview_read()
        return self.live_page(request, "overview", "/overview", **await self.reads.get(key, load))

    async def tasks(self, request: Request) -> Response:
        key, load = self.tasks_read(request)
        return self.live_page(request, "tasks", "/tasks", **await self.reads.get(key, load))

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        key, load = self.task_read(task_id)
        path = "/tasks/" + self.env.filters["pathquote"](task_id)
        return self.live_page(request, "task", path, **await self.reads.get(key, load))

    async def workers(self, request: Request) -> Response:
        key, load = self.workers_read()
        return self.live_page(request, "workers", "/workers", **await self.reads.get(key, load))

    async def job(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            raise NotFound(f"no bulk job with id {request.path_params['job_id']!r}")
        return self.live_page(request, "job", f"/jobs/{job.id}", job=job)

    async def find(self, request: Request) -> Response:
        task_id = request.query_params.get("id", "").strip()
        if not task_id:
            raise BadInput("id", task_id, "a task id")
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/tasks/{self.env.filters['pathquote'](task_id)}", 303)

    # -- live streams -----------------------------------------------------------------------------

    async def live_overview(self, request: Request) -> Response:
        key, load = self.overview_read()
        return self.live(request, key, load, "_overview_live.html")

    async def live_tasks(self, request: Request) -> Response:
        key, load = self.tasks_read(request)
        return self.live(request, key, load, "_tasks_live.html")

    async def live_task(self, request: Request) -> Response:
        key, load = self.task_read(request.path_params["task_id"])
        return self.live(request, key, load, "_task_live.html")

    async def live_workers(self, request: Request) -> Response:
        key, load = self.workers_read()
        return self.live(request, key, load, "_workers_live.html")

    async def live_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if self.jobs.get(job_id) is None:
            raise NotFound(f"no bulk job with id {job_id!r}")

        def load() -> dict[str, Any]:
            return {"job": self.jobs.get(job_id)}

        return self.live(request, ("job", job_id), load, "_job_live.html")

    # -- actions ----------------------------------------------------------------------------------

    async def _checked_form(self, request: Request) -> FormData:
        """The POSTed form, once it passed the CSRF and origin checks (else a 403)."""
        form = await request.form()
        token = form.get(CSRF_FIELD)
        why = check_post(
            request,
            token if isinstance(token, str) else request.headers.get("x-csrf-token"),
        )
        if why is not None:
            audit.warning(
                "refused %s %s from %s: %s", request.method, request.url.path, _client(request), why
            )
            raise HTTPException(403, why)
        return form

    async def _form(self, request: Request) -> FormData:
        """The form of an action, once it passed the read-only, CSRF and origin checks."""
        if self.read_only:
            raise HTTPException(403, "this dashboard is read-only: actions are turned off")
        return await self._checked_form(request)

    def _back(self, request: Request, form: FormData, fallback: str, **notice: Any) -> Response:
        """A 303 back to the page the form came from (a local path only), with a notice."""
        raw = form.get("next")
        target = safe_next(raw if isinstance(raw, str) else fallback).split("#", 1)[0]
        base, _, query = target.partition("?")
        kept = [p for p in query.split("&") if p and p.split("=", 1)[0] not in _NOTICE_FIELDS]
        kept += [f"{k}={v}" for k, v in notice.items()]
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{base}" + ("?" + "&".join(kept) if kept else ""), 303)

    def action(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        """The POST endpoint of one action on one task."""

        async def endpoint(request: Request) -> Response:
            return await self.act(request, action)

        return endpoint

    # The action steps shared by the forms and the JSON API: store calls in a thread, the
    # shared reads cleared, an audit line.

    async def apply(self, request: Request, action: str, task_id: str) -> bool:
        """``action`` on one task; True when the store changed it."""
        changed = await run_in_threadpool(ACTIONS[action], self.store, task_id)
        self.reads.clear()
        audit.info("%s task=%s changed=%s client=%s", action, task_id, changed, _client(request))
        return changed

    async def apply_many(self, request: Request, action: str, ids: Sequence[str]) -> int:
        """``action`` on each listed task; how many it changed."""
        run = ACTIONS[action]
        changed = await run_in_threadpool(lambda: sum(run(self.store, tid) for tid in ids))
        self.reads.clear()
        audit.info(
            "bulk %s tasks=%s changed=%d client=%s",
            action,
            ",".join(ids),
            changed,
            _client(request),
        )
        return changed

    async def start_job(self, request: Request, action: str, flt: TaskFilter) -> Job:
        """A bulk job running ``action`` on every task ``flt`` matches."""
        expected = None
        if not flt.narrowing and flt.status is not None:
            counts = await run_in_threadpool(self.store.stats, flt.queue)
            expected = counts[flt.status]
        run = ACTIONS[action]
        job = self.jobs.start(
            action,
            lambda task: run(self.store, task.id),
            flt,
            client=_client(request),
            expected=expected,
            on_batch=self.reads.clear,
        )
        audit.info(
            "bulk %s job=%s started filter=%s client=%s",
            action,
            job.id,
            flt.to_params(),
            _client(request),
        )
        return job

    async def purge_tasks(
        self, request: Request, age: float, statuses: Sequence[str], queue: str | None
    ) -> int:
        """Delete the finished tasks of ``statuses`` older than ``age`` seconds.

        Raises:
            BadInput: a state that is not a finished one.
        """
        chosen = []
        for s in statuses or [t.value for t in TERMINAL_STATUSES]:
            try:
                status = TaskStatus(s.upper())
            except ValueError:
                raise BadInput("statuses", s, "DONE, FAILED or CANCELED") from None
            if status not in TERMINAL_STATUSES:
                raise BadInput("statuses", s, "DONE, FAILED or CANCELED (finished tasks only)")
            chosen.append(status)
        count = await run_in_threadpool(lambda: self.store.purge(age, statuses=chosen, queue=queue))
        self.reads.clear()
        audit.info(
            "purge older_than=%ss statuses=%s queue=%s deleted=%d client=%s",
            age,
            [s.value for s in chosen],
            queue,
            count,
            _client(request),
        )
        return count

    async def set_paused(self, request: Request, queue: str, pause: bool) -> bool:
        """Pause or resume ``queue``; True when that changed it.

        Raises:
            BadInput: not a queue name.
        """
        if not queue or len(queue) > MAX_ID_LENGTH:
            raise BadInput("queue", queue, f"a queue name of 1 to {MAX_ID_LENGTH} characters")
        if pause:
            changed = await run_in_threadpool(self.store.pause, queue)
        else:
            changed = await run_in_threadpool(self.store.resume, queue)
        self.reads.clear()
        audit.info(
            "%s queue=%s changed=%s client=%s",
            "pause" if pause else "resume",
            queue,
            changed,
            _client(request),
        )
        return bool(changed)

    # -- schedules --------------------------------------------------------------------------------

    async def schedules(self, request: Request) -> Response:
        data = await self.reads.get(("schedules",), lambda: schedules_view(self.store))
        return self.page(request, "schedules.html", **data)

    def schedule_action(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        """The POST endpoint that pauses, resumes or triggers one schedule."""

        async def endpoint(request: Request) -> Response:
            form = await self._form(request)
            name = request.path_params["name"]
            try:
                check_schedule_name(name)
            except ValueError:
                raise BadInput("schedule", name, "a schedule name") from None
            if await run_in_threadpool(self.store.get_schedule, name) is None:
                raise NotFound(f"no schedule named {name!r}")
            if action == "trigger":
                queue = Queue(self.store)
                await run_in_threadpool(queue.trigger_schedule, name)
                changed = True
            else:
                step = (
                    self.store.pause_schedule if action == "pause" else self.store.resume_schedule
                )
                changed = bool(await run_in_threadpool(step, name))
            self.reads.clear()
            audit.info("schedule %s name=%s changed=%s client=%s", action, name, changed,
                       _client(request))  # fmt: skip
            past = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action]
            notice = f"schedule-{past}" if changed else "schedule-unchanged"
            return self._back(request, form, "/schedules", notice=notice)

        return endpoint

    # -- form actions -----------------------------------------------------------------------------

    def queue_action(self, pause: bool) -> Callable[[Request], Awaitable[Response]]:
        """The POST endpoint that pauses (or resumes) a queue."""

        async def endpoint(request: Request) -> Response:
            form = await self._form(request)
            await self.set_paused(request, request.path_params["queue"], pause)
            return self._back(request, form, "/", notice="paused" if pause else "resumed")

        return endpoint

    async def act(self, request: Request, action: str) -> Response:
        form = await self._form(request)
        task_id = request.path_params["task_id"]
        changed = await self.apply(request, action, task_id)
        past = {"cancel": "canceled", "retry": "retried", "delete": "deleted"}[action]
        notice = past if changed else f"not-{past}"
        if action == "delete" and changed:  # its page is gone: back to the list
            return self._back(request, FormData(), "/tasks", notice=notice)
        return self._back(
            request, form, f"/tasks/{self.env.filters['pathquote'](task_id)}", notice=notice
        )

    async def bulk(self, request: Request) -> Response:
        form = await self._form(request)
        action = str(form.get("action", ""))
        if action not in ACTIONS:
            raise BadInput("action", action, "one of " + ", ".join(ACTIONS))
        scope = str(form.get("scope", "selected"))
        if scope == "selected":
            ids = [str(v) for v in form.getlist("ids") if str(v)]
            if not ids:
                raise BadInput("ids", "", "at least one selected task")
            if len(ids) > MAX_LIMIT:
                raise BadInput("ids", f"{len(ids)} ids", f"at most {MAX_LIMIT} at once")
            changed = await self.apply_many(request, action, ids)
            return self._back(
                request, form, "/tasks", notice="bulk", changed=changed, skipped=len(ids) - changed
            )
        if scope != "filter":
            raise BadInput("scope", scope, "selected or filter")
        flt = TaskFilter.from_params(_fields(form, _FILTER_FIELDS))
        job = await self.start_job(request, action, flt)
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/jobs/{job.id}", 303)

    async def stop_job(self, request: Request) -> Response:
        form = await self._form(request)
        job_id = request.path_params["job_id"]
        if not self.jobs.stop(job_id):
            raise NotFound(f"no bulk job with id {job_id!r}")
        audit.info("stop job=%s client=%s", job_id, _client(request))
        return self._back(request, form, f"/jobs/{job_id}", notice="stopped")

    async def purge(self, request: Request) -> Response:
        form = await self._form(request)
        age = parse_age(str(form.get("older_than", "")))
        statuses = [str(v) for v in form.getlist("statuses")]
        queue = str(form.get("queue", "")).strip() or None
        count = await self.purge_tasks(request, age, statuses, queue)
        return self._back(request, form, "/", notice="purged", count=count)

    # -- login ------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.token is None:
            return RedirectResponse(f"{request.scope.get('root_path', '')}/", 303)
        return self.page(
            request, "login.html", next=safe_next(request.query_params.get("next")), wrong=False
        )

    async def login(self, request: Request) -> Response:
        form = await self._checked_form(request)
        target = safe_next(str(form.get("next", "/")))
        given = form.get("token")
        if self.token is None or not token_matches(
            given if isinstance(given, str) else None, self.token
        ):
            audit.warning("login refused client=%s", _client(request))
            return self.page(request, "login.html", 401, next=target, wrong=True)
        audit.info("login client=%s", _client(request))
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}{target}", 303)
        response.set_cookie(
            SESSION_COOKIE,
            session_cookie(self.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=root or "/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self._checked_form(request)
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=root or "/")
        return response

    # -- errors -----------------------------------------------------------------------------------

    async def problem(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, text = exc.status_code, str(exc.detail)
        elif isinstance(exc, NotFound):
            status, text = 404, str(exc)
        else:
            status, text = 400, str(exc)
        path = _route(request)
        if path.startswith("/api/"):
            return JSONResponse({"error": text, "status": status}, status)
        if path.startswith("/live/"):
            return Response(text, status, media_type="text/plain")
        return self.page(request, "error.html", status, status=status, problem=text)


def _here(request: Request) -> str:
    """The page's own path and query (encoded, without the mount prefix), for ``next`` fields.

    A live fragment names the page it belongs to, not its event stream.
    """
    root = request.scope.get("root_path", "")
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.startswith("/live/"):
        path = "/" if path == "/live/overview" else path[len("/live") :]
    query = "&".join(p for p in request.url.query.split("&") if p and not p.startswith("digest="))
    return path + ("?" + query if query else "")


def _route(request: Request) -> str:
    root = request.scope.get("root_path", "")
    return request.url.path[len(root) :]


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def create_app(
    url_or_store: str | Store,
    *,
    token: str | None = None,
    read_only: bool = False,
    refresh: float = 0.75,
    allowed_hosts: Sequence[str] | None = None,
    bulk_batch: int = 200,
) -> Starlette:
    """The dashboard as an ASGI app, to serve with uvicorn or mount in a Starlette/FastAPI app.

    Args:
        url_or_store: a store URL (``sqlite:///tasks.db``, ``redis://...``; the app opens
            it and closes it at shutdown) or an open ``Store`` (left open).
        token: when set, every request needs it: ``Authorization: Bearer TOKEN``, or the
            session cookie set by the login form (``/login``).
        read_only: no action: the buttons are not drawn and every action route answers 403.
        refresh: seconds a store read is shared by every viewer of a page; live pages see
            changes within about this long, at about one read per view per ``refresh``.
        allowed_hosts: the ``Host`` names to answer (``["127.0.0.1", "localhost"]``); others
            get a 400, which stops DNS-rebinding pages. ``None`` answers any host.
        bulk_batch: tasks per batch of a bulk action on a filter (each batch is one bounded
            scan of the store, then one atomic call per task).

    Raises:
        ValueError: an empty token, a ``refresh`` that is not a positive number, or a bad URL.
    """
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError(f"create_app: token must be a non-empty str or None, got {token!r}")
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not 0 < refresh < 3600:
        raise ValueError(f"create_app: refresh must be seconds in (0, 3600), got {refresh!r}")
    if isinstance(bulk_batch, bool) or not isinstance(bulk_batch, int) or not bulk_batch >= 1:
        raise ValueError(f"create_app: bulk_batch must be an int >= 1, got {bulk_batch!r}")
    owned = isinstance(url_or_store, str)
    store = open_store(url_or_store) if isinstance(url_or_store, str) else url_or_store
    if not isinstance(store, Store):
        raise ValueError(f"create_app: expected a store URL or a Store, got {url_or_store!r}")
    dash = _Dashboard(
        store, read_only=read_only, token=token, refresh=float(refresh), batch=bulk_batch
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            dash.jobs.close()
            if owned:
                store.close()

    routes = [
        Route("/", dash.overview, methods=["GET"], name="overview"),
        Route("/tasks", dash.tasks, methods=["GET"], name="tasks"),
        Route("/tasks/bulk", dash.bulk, methods=["POST"], name="bulk"),
        Route("/find", dash.find, methods=["GET"], name="find"),
        Route("/purge", dash.purge, methods=["POST"], name="purge"),
        Route("/workers", dash.workers, methods=["GET"], name="workers"),
        Route("/schedules", dash.schedules, methods=["GET"], name="schedules"),
        Route("/schedules/{name}/pause", dash.schedule_action("pause"), methods=["POST"]),
        Route("/schedules/{name}/resume", dash.schedule_action("resume"), methods=["POST"]),
        Route("/schedules/{name}/trigger", dash.schedule_action("trigger"), methods=["POST"]),
        Route("/queues/{queue:path}/pause", dash.queue_action(True), methods=["POST"]),
        Route("/queues/{queue:path}/resume", dash.queue_action(False), methods=["POST"]),
        Route("/jobs/{job_id}", dash.job, methods=["GET"], name="job"),
        Route("/jobs/{job_id}/stop", dash.stop_job, methods=["POST"], name="stop_job"),
        Route("/login", dash.login_form, methods=["GET"], name="login_form"),
        Route("/login", dash.login, methods=["POST"], name="login"),
        Route("/logout", dash.logout, methods=["POST"], name="logout"),
        Route("/live/overview", dash.live_overview, methods=["GET"]),
        Route("/live/tasks", dash.live_tasks, methods=["GET"]),
        Route("/live/workers", dash.live_workers, methods=["GET"]),
        Route("/live/jobs/{job_id}", dash.live_job, methods=["GET"]),
        Route("/live/tasks/{task_id:path}", dash.live_task, methods=["GET"]),
        *(
            Route(f"/tasks/{{task_id:path}}/{name}", dash.action(name), methods=["POST"])
            for name in ACTIONS
        ),
        Route("/tasks/{task_id:path}", dash.task, methods=["GET"], name="task"),
        *api_routes(dash),
        Mount("/static", StaticFiles(packages=[("resile.web", "static")]), name="static"),
    ]
    middleware = [Middleware(Guard, token=token)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPException: dash.problem,
            BadInput: dash.problem,
            NotFound: dash.problem,
        },
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.state.store = store
    return app
