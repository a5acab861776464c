"""The dashboard's JSON API (``/api/...``) and its OpenAPI description (``/openapi.json``).

The same reads (shared through ``SharedReads``) and the same actions as the
pages, with JSON in and out. A POST passes the same checks as a form: the
bearer token when the dashboard has one, else the ``X-CSRF-Token`` header
equal to the CSRF cookie (a custom header, which a cross-site page cannot
send without a CORS preflight that the dashboard never grants), and never a
foreign ``Origin``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resile.queue._names import TERMINAL_STATUSES, TaskStatus
from resile.queue.store import Store
from resile.queue.store.base import LIST_ORDERS, Quantiles, Timings
from resile.queue.task import Task
from resile.web._filters import MAX_LIMIT, BadInput, TaskFilter, parse_age
from resile.web._jobs import Job, Jobs
from resile.web._live import SharedReads
from resile.web._security import check_post
from resile.web._views import TIMING_WINDOWS

__all__ = ["Dashboard", "openapi", "routes"]

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
Read = tuple[Any, Callable[[], dict[str, Any]]]


class Dashboard(Protocol):
    """What the API needs of the app's dashboard object (``app._Dashboard``)."""

    @property
    def store(self) -> Store: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def reads(self) -> SharedReads: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def actions(self) -> Mapping[str, Callable[[Store, str], bool]]: ...

    def overview_read(self) -> Read: ...
    def tasks_read(self, request: Request) -> Read: ...
    def task_read(self, task_id: str) -> Read: ...
    def workers_read(self) -> Read: ...
    async def apply(self, request: Request, action: str, task_id: str) -> bool: ...
    async def apply_many(self, request: Request, action: str, ids: Sequence[str]) -> int: ...
    async def start_job(self, request: Request, action: str, flt: TaskFilter) -> Job: ...
    async def purge_tasks(
        self, request: Request, age: float, statuses: Sequence[str], queue: str | None
    ) -> int: ...
    async def set_paused(self, request: Request, queue: str, pause: bool) -> bool: ...


def _task_json(task: Task) -> dict[str, Any]:
    return task.to_dict()


def _timings_json(windows: Mapping[str, Timings] | None) -> dict[str, Any]:
    """``{"run"|"late": {"hour"|"day": {"n", "p50", "p95"}}}`` (seconds; null when n is 0)."""
    out: dict[str, Any] = {"run": {}, "late": {}}
    for window, _ in TIMING_WINDOWS:
        got = (windows or {}).get(window) or Timings(Quantiles(), Quantiles())
        for kind, q in (("run", got.run), ("late", got.late)):
            out[kind][window] = q.to_dict()
    return out


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("body", "(not JSON)", "a JSON object") from None
    if not isinstance(data, dict):
        raise BadInput("body", data, "a JSON object")
    return data


def _string_fields(data: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise BadInput(name, value, "a string")
        out[name] = str(value)
    return out


_FILTERS = ("queue", "status", "task", "error", "prefix", "since", "until")


def routes(dash: Dashboard) -> list[Route]:
    """The API's routes over one dashboard."""

    async def guard(request: Request) -> None:
        if dash.read_only:
            raise HTTPException(403, "this dashboard is read-only: actions are turned off")
        why = check_post(request, request.headers.get("x-csrf-token"))
        if why is not None:
            raise HTTPException(403, why)

    async def queues(request: Request) -> Response:
        key, load = dash.overview_read()
        data = await dash.reads.get(key, load)
        return JSONResponse(
            {
                "queues": [
                    {
                        "name": name,
                        "counts": {s.value: n for s, n in counts.items()},
                        "paused_at": data["paused"].get(name),
                        "timings": _timings_json(data["timings"].get(name)),
                    }
                    for name, counts in data["rows"]
                ],
                "totals": {s.value: n for s, n in data["totals"].items()},
            }
        )

    async def tasks(request: Request) -> Response:
        key, load = dash.tasks_read(request)
        page = (await dash.reads.get(key, load))["page"]
        return JSONResponse(
            {
                "tasks": [_task_json(t) for t in page.tasks],
                "next": None if page.next is None else str(page.next),
                "scanned": page.scanned,
            }
        )

    async def task(request: Request) -> Response:
        key, load = dash.task_read(request.path_params["task_id"])
        return JSONResponse(_task_json((await dash.reads.get(key, load))["task"]))

    def action(name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            await guard(request)
            task_id = request.path_params["task_id"]
            changed = await dash.apply(request, name, task_id)
            current = await run_in_threadpool(dash.store.get, task_id)
            return JSONResponse(
                {"changed": changed, "task": None if current is None else _task_json(current)}
            )

        return endpoint

    async def bulk(request: Request) -> Response:
        await guard(request)
        data = await _body(request)
        name = data.get("action")
        if not isinstance(name, str) or name not in dash.actions:
            raise BadInput("action", name, "one of " + ", ".join(dash.actions))
        if "ids" in data:
            ids = data["ids"]
            if (
                not isinstance(ids, list)
                or not ids
                or not all(isinstance(i, str) and i for i in ids)
            ):
                raise BadInput("ids", ids, "a non-empty list of task ids")
            if len(ids) > MAX_LIMIT:
                raise BadInput("ids", f"{len(ids)} ids", f"at most {MAX_LIMIT} at once")
            changed = await dash.apply_many(request, name, ids)
            return JSONResponse({"changed": changed, "skipped": len(ids) - changed})
        raw = data.get("filter")
        if not isinstance(raw, dict):
            raise BadInput(
                "filter", raw, 'an object of filters ({"status": "FAILED", ...}), or ids'
            )
        flt = TaskFilter.from_params(_string_fields(raw, _FILTERS))
        job = await dash.start_job(request, name, flt)
        return JSONResponse({"job": job.id, "url": f"/api/jobs/{job.id}"}, status_code=202)

    async def job(request: Request) -> Response:
        found = dash.jobs.get(request.path_params["job_id"])
        if found is None:
            raise HTTPException(404, f"no bulk job with id {request.path_params['job_id']!r}")
        return JSONResponse(
            {
                "id": found.id,
                "action": found.action,
                "state": found.state,
                "filter": found.filter.to_params(),
                "expected": found.expected,
                "changed": found.changed,
                "skipped": found.skipped,
                "batches": found.batches,
                "started_at": found.started_at,
                "finished_at": found.finished_at,
                "error": found.error,
            }
        )

    async def purge(request: Request) -> Response:
        await guard(request)
        data = await _body(request)
        age_value = data.get("older_than")
        if isinstance(age_value, bool) or not isinstance(age_value, (str, int, float)):
            raise BadInput("older_than", age_value, "an age such as 3600, 90s, 15m, 12h or 7d")
        age = parse_age(str(age_value))
        statuses = data.get("statuses", [s.value for s in TERMINAL_STATUSES])
        if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
            raise BadInput("statuses", statuses, "a list of DONE, FAILED, CANCELED")
        queue = data.get("queue")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise BadInput("queue", queue, "a queue name")
        deleted = await dash.purge_tasks(request, age, statuses, queue)
        return JSONResponse({"deleted": deleted})

    async def workers(request: Request) -> Response:
        key, load = dash.workers_read()
        data = await dash.reads.get(key, load)
        return JSONResponse(
            {
                "workers": [
                    {
                        "worker": h.worker,
                        "running": h.running,
                        "queues": list(h.queues),
                        "since": h.since,
                        "lease_expires_at": h.lease_expires_at,
                        "expired": h.expired,
                    }
                    for h in data["holders"]
                ],
                "truncated": data["truncated"],
                "registered": [json.loads(w.to_json()) for w in data["registered"]],
                "slots": data["slots"],
            }
        )

    def pausing(pause: bool) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            await guard(request)
            queue = request.path_params["queue"]
            changed = await dash.set_paused(request, queue, pause)
            return JSONResponse({"queue": queue, "changed": changed, "paused": pause})

        return endpoint

    async def schema(request: Request) -> Response:
        return JSONResponse(openapi(request.scope.get("root_path", "")))

    return [
        Route("/openapi.json", schema, methods=["GET"]),
        Route("/api/queues", queues, methods=["GET"]),
        Route("/api/tasks", tasks, methods=["GET"]),
        Route("/api/tasks/bulk", bulk, methods=["POST"]),
        Route("/api/jobs/{job_id}", job, methods=["GET"]),
        Route("/api/purge", purge, methods=["POST"]),
        Route("/api/workers", workers, methods=["GET"]),
        Route("/api/queues/{queue:path}/pause", pausing(True), methods=["POST"]),
        Route("/api/queues/{queue:path}/resume", pausing(False), methods=["POST"]),
        *(
            Route(f"/api/tasks/{{task_id:path}}/{name}", action(name), methods=["POST"])
            for name in dash.actions
        ),
        Route("/api/tasks/{task_id:path}", task, methods=["GET"]),
    ]


def _error() -> dict[str, Any]:
    return {
        "description": "bad input, unknown id, refused: the message names the field and value",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                    "required": ["error", "status"],
                }
            }
        },
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi(root: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0 description of ``/api``."""
    statuses = [s.value for s in TaskStatus]
    task = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    spread = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "p50": {"type": "number", "nullable": True},
            "p95": {"type": "number", "nullable": True},
        },
        "required": ["n", "p50", "p95"],
    }
    windows = {
        "type": "object",
        "properties": {window: spread for window, _ in TIMING_WINDOWS},
        "required": [window for window, _ in TIMING_WINDOWS],
    }
    timings = {
        "type": "object",
        "description": "run time and retry lateness, seconds, estimated p50 / p95",
        "properties": {"run": windows, "late": windows},
        "required": ["run", "late"],
    }
    filters = {
        name: {"type": "string"} for name in ("queue", "task", "error", "prefix", "since", "until")
    } | {"status": {"type": "string", "enum": statuses}}
    errors = {"400": _error(), "401": _error(), "403": _error(), "404": _error()}
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    action_result = _ok(
        {
            "type": "object",
            "properties": {"changed": {"type": "boolean"}, "task": {"nullable": True, **task}},
            "required": ["changed"],
        }
    )
    paths: dict[str, Any] = {
        "/api/queues": {
            "get": {
                "summary": "Tasks per queue and state",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "queues": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {"type": "string"},
                                            "counts": counts,
                                            "paused_at": {"type": "number", "nullable": True},
                                            "timings": timings,
                                        },
                                    },
                                },
                                "totals": counts,
                            },
                            "required": ["queues", "totals"],
                        }
                    ),
                    **errors,
                },
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "One page of tasks matching the filters (keyset: pass `next` as cursor)",
                "parameters": [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in filters.items()
                ]
                + [
                    {
                        "name": "sort",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(LIST_ORDERS)},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["asc", "desc"]},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "a page's `next`: SEQUENCE, or KEY:SEQUENCE when sorted by"
                        " due or updated time",
                        "schema": {
                            "type": "string",
                            "pattern": "^([0-9]{1,18}|-?[0-9][0-9.e+-]{0,30}:[0-9]{1,18})$",
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    },
                ],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "tasks": {"type": "array", "items": task},
                                "next": {"type": "string", "nullable": True},
                                "scanned": {"type": "integer"},
                            },
                            "required": ["tasks", "next"],
                        }
                    ),
                    **errors,
                },
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task, whole",
                "parameters": [task_id],
                "responses": {"200": _ok(task), **errors},
            }
        },
        "/api/tasks/bulk": {
            "post": {
                "summary": "An action on listed tasks, or on every task matching a filter (a job)",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "properties": {
                            "action": {"type": "string", "enum": ["cancel", "retry", "delete"]},
                            "ids": {"type": "array", "items": {"type": "string"}},
                            "filter": {"type": "object", "properties": filters},
                        },
                        "required": ["action"],
                    }
                ),
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "changed": {"type": "integer"},
                                "skipped": {"type": "integer"},
                            },
                        },
                        "done on the listed tasks",
                    ),
                    "202": _ok(
                        {
                            "type": "object",
                            "properties": {"job": {"type": "string"}, "url": {"type": "string"}},
                        },
                        "a bulk job started",
                    ),
                    **errors,
                },
            }
        },
        "/api/jobs/{job_id}": {
            "get": {
                "summary": "A bulk job's progress",
                "parameters": [
                    {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _ok({"type": "object"}), **errors},
            }
        },
        "/api/purge": {
            "post": {
                "summary": "Delete finished tasks older than an age",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "properties": {
                            "older_than": {"type": "string"},
                            "statuses": {
                                "type": "array",
                                "items": {
                                    "type": "string",
                                    "enum": ["DONE", "FAILED", "CANCELED"],
                                },
                            },
                            "queue": {"type": "string"},
                        },
                        "required": ["older_than"],
                    }
                ),
                "responses": {
                    "200": _ok({"type": "object", "properties": {"deleted": {"type": "integer"}}}),
                    **errors,
                },
            }
        },
        "/api/workers": {
            "get": {
                "summary": "The workers holding leases now",
                "responses": {"200": _ok({"type": "object"}), **errors},
            }
        },
    }
    queue_param = {"name": "queue", "in": "path", "required": True, "schema": {"type": "string"}}
    for name in ("pause", "resume"):
        paths[f"/api/queues/{{queue}}/{name}"] = {
            "post": {
                "summary": f"{name.capitalize()} a queue (workers stop / start leasing its tasks)",
                "parameters": [queue_param],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "queue": {"type": "string"},
                                "changed": {"type": "boolean"},
                                "paused": {"type": "boolean"},
                            },
                            "required": ["queue", "changed", "paused"],
                        }
                    ),
                    **errors,
                },
            }
        }
    for name in ("cancel", "retry", "delete"):
        paths[f"/api/tasks/{{task_id}}/{name}"] = {
            "post": {
                "summary": f"{name.capitalize()} one task",
                "parameters": [task_id],
                "responses": {"200": action_result, **errors},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "resile dashboard API", "version": "1"},
        "servers": [{"url": root or "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
