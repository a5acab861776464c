"""The durable queue's user API: connect, @queue.task, enqueue, TaskContext."""

from __future__ import annotations

import asyncio
import datetime
import math
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

import resile
from _examples import assert_page_shows, run_example
from _redis_server import drop_namespace
from resile import Constant, DuplicateTask, Exponential, Queue, TaskContext, TaskStatus
from resile.queue.context import context_parameter
from resile.queue.store import Store, open_store, register_store
from resile.queue.store.sqlite import SQLiteStore


@pytest.fixture
def queue() -> Iterator[Queue]:
    """A queue on a private in-memory store."""
    q = resile.connect("sqlite:///:memory:")
    yield q
    q.close()


def stored(queue: Queue) -> int:
    return sum(queue.stats().values())


class TestConnect:
    def test_sqlite_file_and_memory(self, tmp_path: Path) -> None:
        """connect opens SQLite stores from relative, absolute and memory URLs."""
        with resile.connect(f"sqlite:///{tmp_path / 'a.db'}") as q:
            assert isinstance(q.store, SQLiteStore) and q.name == "default"
        assert (tmp_path / "a.db").exists()
        with resile.connect("sqlite:///:memory:", queue="mail") as q:
            assert q.store.memory and q.name == "mail"  # type: ignore[attr-defined]

    def test_with_closes_even_on_error(self, tmp_path: Path) -> None:
        """`with queue:` gives the queue and closes its store on exit, the error passing through."""
        q = resile.connect(f"sqlite:///{tmp_path / 'a.db'}")
        with pytest.raises(KeyError, match="inside"), q as entered:
            assert entered is q
            raise KeyError("inside")
        with pytest.raises(RuntimeError, match="closed"):
            q.get("any")

    def test_looking_methods_are_the_stores(self) -> None:
        """queue.get / list / stats are the store's own methods: same results, contract docstrings."""
        with resile.connect("sqlite:///:memory:") as q:
            for name in ("get", "list", "stats"):
                method = getattr(q, name)
                assert method.__self__ is q.store and method.__func__ is getattr(
                    type(q.store), name
                )
                assert getattr(Queue, name).__doc__ == getattr(Store, name).__doc__
            q.enqueue("job", {"x": 1}, id="a", strict=False)
            assert [t.id for t in q.list(status="PENDING")] == ["a"]
            assert q.get("a") == q.store.get("a") and q.stats()[TaskStatus.PENDING] == 1

    def test_url_options(self, tmp_path: Path) -> None:
        """Query options reach the store; unknown ones are refused."""
        s = open_store(f"sqlite:///{tmp_path / 'a.db'}?busy_timeout=2&synchronous=full")
        assert isinstance(s, SQLiteStore) and s.busy_timeout == 2.0 and s.synchronous == "FULL"
        s.close()
        with pytest.raises(ValueError, match="unknown option 'nope'"):
            open_store(f"sqlite:///{tmp_path / 'a.db'}?nope=1")

    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("tasks.db", "must look like"),
            ("nosuch://x/y", "unknown scheme 'nosuch'"),
            ("sqlite://tasks.db", "three slashes"),
        ],
    )
    def test_bad_urls(self, url: str, match: str) -> None:
        """Malformed URLs and unknown schemes fail naming the URL."""
        with pytest.raises(ValueError, match=match):
            resile.connect(url)

    def test_register_a_backend(self) -> None:
        """A backend joins the URL registry with one call."""
        made: list[str] = []

        def factory(url: str, **options: Any) -> SQLiteStore:
            made.append(url)
            return SQLiteStore(":memory:", **options)

        register_store("testmem", factory)
        with resile.connect("testmem://anything") as q:
            assert made == ["testmem://anything"] and isinstance(q.store, SQLiteStore)

    def test_connect_accepts_a_store(self) -> None:
        """An open Store can be wrapped directly."""
        s = SQLiteStore()
        assert resile.connect(s).store is s
        s.close()


class TestDeclare:
    def test_bare_and_configured(self, queue: Queue) -> None:
        """@queue.task works bare and with options; the defaults are stored per function."""

        @queue.task
        def plain(x: int) -> int:
            return x * 2

        @queue.task(
            backoff=Exponential(1.0, max_delay=60),
            max_retries=5,
            timeout=30,
            priority=3,
            queue="mail",
            name="send",
            resources={"min_gpu_memory_gb": 0.5},
        )
        def send_email(to: str, body: str) -> dict[str, str]:
            return {"to": to}

        assert plain.name == "TestDeclare.test_bare_and_configured.<locals>.plain"
        assert (plain.max_retries, plain.priority, plain.timeout) == (3, 0, None)
        assert send_email.name == "send" and send_email.queue_name == "mail"
        assert send_email.backoff == Exponential(1.0, max_delay=60).to_dict()
        assert (send_email.max_retries, send_email.timeout, send_email.priority) == (5, 30.0, 3)
        assert queue.handlers["send"] is send_email and queue.registry is queue.handlers
        assert queue.queues == ["default", "mail"]

    def test_still_callable_sync_and_async(self, queue: Queue) -> None:
        """A registered function is still an ordinary function (sync or async)."""

        @queue.task
        def double(x: int) -> int:
            return x * 2

        @queue.task
        async def triple(x: int) -> int:
            return x * 3

        assert double(4) == 8 and not double.is_async
        assert asyncio.run(triple(4)) == 12 and triple.is_async
        assert double.__name__ == "double" and double.__wrapped__ is double.fn

    def test_policy_gives_backoff_and_retries(self, queue: Queue) -> None:
        """policy=Retrying(...) supplies the backoff and, from its stop, max_retries."""

        @queue.task(policy=resile.Retrying(backoff=Constant(2), stop=resile.after_attempts(4)))
        def f() -> None: ...

        assert f.backoff == Constant(2).to_dict() and f.max_retries == 3

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"priority": "high"}, r"priority must be an int, got 'high'"),
            ({"priority": 1.5}, r"priority must be an int, got 1.5"),
            ({"timeout": -1}, r"timeout must be a finite number > 0, got -1"),
            ({"timeout": math.nan}, r"timeout must be a finite number > 0, got nan"),
            ({"timeout": 0}, r"timeout must be a finite number > 0, got 0"),
            ({"max_retries": -1}, r"max_retries must be >= 0, got -1"),
            ({"max_retries": True}, r"max_retries must be an int, got True"),
            ({"backoff": "fast"}, r"backoff must be a resile backoff strategy"),
            ({"backoff": {"type": "wobbly"}}, r"backoff .* is not a valid policy"),
            ({"resources": {"gpu": -1}}, r"resources\['gpu'\] must be a finite number >= 0"),
            ({"queue": ""}, r"queue must be a non-empty str"),
            ({"policy": 3}, r"policy must be a resile.Retrying"),
        ],
    )
    def test_bad_options_name_the_field(
        self, queue: Queue, options: dict[str, Any], match: str
    ) -> None:
        """Every invalid option fails at declaration, naming the field and the value."""
        with pytest.raises(ValueError, match=match):

            @queue.task(**options)
            def f() -> None: ...

        assert queue.handlers == {}

    def test_name_clash(self, queue: Queue) -> None:
        """Two different functions cannot share a handler name."""

        @queue.task(name="job")
        def a() -> None: ...

        with pytest.raises(ValueError, match="already registered"):

            @queue.task(name="job")
            def b() -> None: ...


class TestEnqueue:
    def test_enqueue_stores_a_pending_task(self, queue: Queue) -> None:
        """enqueue stores the params and options; get returns the task."""

        @queue.task(max_retries=5, timeout=30, backoff=Constant(1))
        def send_email(to: str, body: str) -> None: ...

        job = send_email.enqueue(to="a@b.c", body="hi", priority=10, delay=0, id="mail-42")
        assert job.id == "mail-42" and job.status is TaskStatus.PENDING
        assert job.params == {"to": "a@b.c", "body": "hi"}
        assert (job.priority, job.max_retries, job.timeout) == (10, 5, 30.0)
        assert job.handler == send_email.name and job.backoff == Constant(1).to_dict()
        got = queue.get("mail-42")
        assert got is not None and got.status == "PENDING"

    def test_positional_arguments_become_keywords(self, queue: Queue) -> None:
        """Positional arguments are bound to parameter names before storing."""

        @queue.task
        def f(a: int, b: int = 2, **extra: Any) -> None: ...

        assert f.enqueue(1, c=3).params == {"a": 1, "c": 3}

    def test_delay_timedelta_and_due_at(self, queue: Queue) -> None:
        """delay accepts seconds or a timedelta; due_at is absolute."""

        @queue.task
        def f() -> None: ...

        t = f.enqueue(delay=datetime.timedelta(seconds=90))
        assert t.due_at == pytest.approx(t.created_at + 90)
        assert f.enqueue(due_at=2e9).due_at == 2e9

    def test_duplicates(self, queue: Queue) -> None:
        """A duplicate id raises DuplicateTask, or returns the existing task on request."""

        @queue.task
        def f(x: int) -> None: ...

        first = f.enqueue(x=1, id="dup")
        with pytest.raises(DuplicateTask, match="'dup' already exists"):
            f.enqueue(x=2, id="dup")
        assert f.enqueue(x=3, id="dup", if_exists="return") == first
        assert stored(queue) == 1

    def test_non_json_params_name_the_path(self, queue: Queue) -> None:
        """Params that are not plain JSON fail naming the offending path; nothing is stored."""

        @queue.task
        def f(items: list[Any], when: Any = None) -> None: ...

        with pytest.raises(
            ValueError, match=r"params\['items'\]\[2\]: set is not JSON-serializable"
        ):
            f.enqueue(items=[1, 2, {3}])
        with pytest.raises(ValueError, match=r"params\['items'\]\[0\]\['x'\]: nan is not valid"):
            f.enqueue(items=[{"x": math.nan}])
        with pytest.raises(ValueError, match=r"params\['items'\]\[0\]: key 1 is a int"):
            f.enqueue(items=[{1: "a"}])
        with pytest.raises(ValueError, match=r"params\['when'\]: datetime is not JSON"):
            f.enqueue(items=[], when=datetime.datetime.now())
        assert stored(queue) == 0

    def test_bad_options_at_enqueue(self, queue: Queue) -> None:
        """Invalid priority, delay or id at enqueue fail naming them; nothing is stored."""

        @queue.task
        def f() -> None: ...

        with pytest.raises(ValueError, match="priority must be an int, got '1'"):
            f.enqueue(priority="1")
        with pytest.raises(ValueError, match="delay must be a finite number >= 0, got -5"):
            f.enqueue(delay=-5)
        with pytest.raises(ValueError, match="id must be a non-empty str"):
            f.enqueue(id=42)
        assert stored(queue) == 0

    def test_per_call_checks_on_the_fast_path(self, queue: Queue) -> None:
        """A task function's specs skip re-checking its defaults, never the per-call values:
        priorities beyond 64 bits or not ints, params that are no mapping; any mapping works."""

        @queue.task
        def f(x: int = 0) -> None: ...

        with pytest.raises(
            ValueError, match="priority must fit in 64 bits, got 9223372036854775808"
        ):
            f.enqueue(priority=2**63)
        with pytest.raises(ValueError, match="priority must be an int, got True"):
            f.enqueue_many([{}], priority=True)
        with pytest.raises(ValueError, match=r"params\[1\] must be a dict, got \[1\]"):
            f.enqueue_many([{}, [1]])  # type: ignore[list-item]
        assert stored(queue) == 0
        made = f.enqueue_many([types.MappingProxyType({"x": 1}), {"x": 2}], priority=-(2**63))
        assert [t.params for t in made] == [{"x": 1}, {"x": 2}] and made[0].priority == -(2**63)

    def test_arguments_must_fit_the_signature(self, queue: Queue) -> None:
        """Missing or unknown arguments fail at enqueue, not in the worker."""

        @queue.task
        def f(a: int) -> None: ...

        with pytest.raises(TypeError, match="missing a required argument: 'a'"):
            f.enqueue()
        with pytest.raises(TypeError, match="unexpected keyword argument 'b'"):
            f.enqueue(a=1, b=2)
        assert stored(queue) == 0

    def test_keyword_calls_bind_as_the_signature_does(self, queue: Queue) -> None:
        """Keyword-only calls skip inspect's binding, with the same outcome and errors."""

        @queue.task
        def f(a: int, /, b: int = 2, *, c: int = 3) -> None: ...

        assert f.enqueue(1, c=4).params == {"a": 1, "c": 4}  # defaults are not stored
        with pytest.raises(TypeError, match="missing a required argument: 'a'"):
            f.enqueue(b=1)
        with pytest.raises(TypeError, match="positional"):
            f.enqueue(a=1)
        with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
            f.enqueue(1, d=1)

        @queue.task
        def g(x: int, **more: int) -> None: ...

        assert g.enqueue(x=1, y=2).params == {"x": 1, "y": 2}
        assert stored(queue) == 2

    def test_context_parameter_is_not_a_param(self, queue: Queue) -> None:
        """The TaskContext parameter is supplied by the worker, never enqueued."""

        @queue.task
        def f(a: int, ctx: TaskContext) -> None: ...

        assert f.context_param == "ctx"
        assert f.enqueue(a=1).params == {"a": 1}
        with pytest.raises(TypeError):
            f.enqueue(a=1, ctx=None)

    def test_param_named_like_an_option(self, queue: Queue) -> None:
        """A parameter named like an option must go through enqueue_params."""

        @queue.task
        def load(id: int) -> None: ...

        with pytest.raises(TypeError, match="enqueue_params"):
            load.enqueue(id=5)
        t = load.enqueue_params({"id": 5}, id="load-5", priority=2)
        assert t.id == "load-5" and t.params == {"id": 5} and t.priority == 2

    def test_enqueue_many_is_atomic(self, queue: Queue) -> None:
        """enqueue_many stores every task or, on a bad one, none."""

        @queue.task
        def f(x: int) -> None: ...

        tasks = f.enqueue_many([{"x": i} for i in range(5)], priority=1)
        assert [t.params["x"] for t in tasks] == list(range(5))
        with pytest.raises(ValueError, match=r"params\['x'\]: set"):
            f.enqueue_many([{"x": 1}, {"x": {1}}])
        with pytest.raises(DuplicateTask):
            f.enqueue_many([{"x": 1}, {"x": 2}], ids=["a", "a"])
        with pytest.raises(ValueError, match="2 ids for 1"):
            f.enqueue_many([{"x": 1}], ids=["a", "b"])
        assert stored(queue) == 5

    def test_enqueue_by_name(self, queue: Queue) -> None:
        """queue.enqueue takes a handler name or function and a params dict."""

        @queue.task(priority=4)
        def f(x: int) -> None: ...

        t = queue.enqueue(f.name, {"x": 1})
        assert t.handler == f.name and t.priority == 4
        assert queue.enqueue(f.fn, {"x": 2}, priority=0).priority == 0
        assert queue.enqueue(f, {"x": 3}, queue="other").queue == "other"
        with pytest.raises(TypeError, match="missing a required argument"):
            queue.enqueue(f, {})

    def test_unknown_handler(self, queue: Queue) -> None:
        """An unknown handler name fails listing the registered ones, unless strict=False."""

        @queue.task(name="known")
        def f() -> None: ...

        with pytest.raises(ValueError, match=r"unknown handler 'nope'; registered: \['known'\]"):
            queue.enqueue("nope")
        with pytest.raises(ValueError, match="not a registered handler"):
            queue.enqueue(print)
        t = queue.enqueue("remote.job", {"a": 1}, strict=False, max_retries=1)
        assert t.handler == "remote.job" and t.max_retries == 1

    def test_enqueue_many_across_handlers(self, queue: Queue) -> None:
        """Specs of several handlers are stored together."""

        @queue.task
        def a(x: int) -> None: ...

        @queue.task
        def b() -> None: ...

        tasks = queue.enqueue_many([a.spec(1, id="a1", priority=2), b.spec(), queue.spec(b)])
        assert [t.handler for t in tasks] == [a.name, b.name, b.name]
        assert tasks[0].id == "a1" and tasks[0].priority == 2 and tasks[0].params == {"x": 1}


class TestManage:
    def test_get_cancel_requeue_stats_list_purge(self, queue: Queue) -> None:
        """The management calls go through to the store."""

        @queue.task
        def f() -> None: ...

        f.enqueue(id="a")
        f.enqueue(id="b")
        assert queue.get("zzz") is None
        assert queue.cancel("a") and not queue.cancel("a")
        assert queue.stats()[TaskStatus.CANCELED] == 1
        assert [t.id for t in queue.list(status="PENDING")] == ["b"]
        assert queue.requeue("a") is not None
        assert queue.get("a").status is TaskStatus.PENDING  # type: ignore[union-attr]
        queue.cancel("b")
        assert queue.purge(0) == 1 and queue.get("b") is None
        assert "default" in repr(queue) or "memory" in repr(queue)


class TestTaskContext:
    def _leased(self, queue: Queue) -> TaskContext:
        @queue.task(max_retries=2, backoff=Constant(0))
        def work(n: int, ctx: TaskContext) -> None: ...

        work.enqueue(n=3, id="w")
        (task,) = queue.store.lease("default", "me")
        return TaskContext(queue.store, task, "me")

    def test_attempt_params_progress_checkpoint(self, queue: Queue) -> None:
        """The context reports the attempt and params and writes progress and checkpoints."""
        ctx = self._leased(queue)
        assert (ctx.task_id, ctx.attempt, ctx.max_attempts, ctx.params) == ("w", 1, 3, {"n": 3})
        assert not ctx.is_last_attempt and ctx.checkpoint is None
        assert ctx.progress(40)
        assert ctx.save_checkpoint({"offset": 10})
        assert ctx.checkpoint == {"offset": 10}
        t = queue.get("w")
        assert t is not None and t.progress == 40 and t.checkpoint == {"offset": 10}
        with pytest.raises(ValueError, match=r"checkpoint\['f'\]: builtin_function"):
            ctx.save_checkpoint({"f": print})
        assert "attempt=1/3" in repr(ctx)

    def test_next_attempt_resumes_from_the_checkpoint(self, queue: Queue) -> None:
        """A retry's context starts from the checkpoint the failed attempt saved."""
        ctx = self._leased(queue)
        ctx.save_checkpoint({"offset": 4096})
        queue.store.fail("w", "me", OSError("reset"))
        (task,) = queue.store.lease("default", "me")
        ctx2 = TaskContext(queue.store, task, "me")
        assert ctx2.attempt == 2 and ctx2.checkpoint == {"offset": 4096}

    def test_canceled(self, queue: Queue) -> None:
        """canceled turns True when the task is canceled (or flagged by the worker)."""
        ctx = self._leased(queue)
        assert not ctx.canceled
        queue.cancel("w")
        ctx._checked_at = -1e18  # skip the 0.1 s rate limit
        assert ctx.canceled
        assert not ctx.progress(50)

        with resile.connect("sqlite:///:memory:") as q2:
            other = self._leased(q2)
            other.mark_canceled()
            assert other.canceled

    def test_the_cancelled_spelling_is_deprecated(self, queue: Queue) -> None:
        """The old names cancelled / mark_cancelled still work and warn DeprecationWarning."""
        ctx = self._leased(queue)
        with pytest.warns(DeprecationWarning, match=r"TaskContext\.cancelled is deprecated"):
            assert ctx.cancelled is False
        with pytest.warns(DeprecationWarning, match=r"use TaskContext\.mark_canceled"):
            ctx.mark_cancelled()
        assert ctx.canceled

    @pytest.mark.parametrize("style", ["annotated", "string", "optional", "named", "none"])
    def test_how_a_handler_asks_for_it(self, style: str) -> None:
        """A parameter annotated TaskContext (any spelling) or named ctx receives the context."""

        def annotated(x: int, job: TaskContext) -> None: ...

        def string(x: int, job: "TaskContext") -> None: ...  # noqa: UP037

        def optional(x: int, job: Optional[TaskContext] = None) -> None: ...  # noqa: UP045

        def named(x: int, ctx: Any) -> None: ...

        def none(x: int) -> None: ...

        fn = locals()[style]
        expected = {"named": "ctx", "none": None}.get(style, "job")
        assert context_parameter(fn) == expected


class TestAsyncApi:
    """The producer API for event-loop code: the same checks and results, awaited."""

    @pytest.mark.anyio
    async def test_enqueue_async_and_friends(self, queue: Queue) -> None:
        """enqueue_async / enqueue_many_async on a task function and on the queue, then
        get / cancel / stats; the same argument checks as the sync calls."""

        @queue.task(name="f", priority=3)
        def f(x: int) -> None: ...

        async with queue:
            t = await f.enqueue_async(x=1, id="one")
            assert (t.id, t.params, t.priority, t.status) == (
                "one",
                {"x": 1},
                3,
                TaskStatus.PENDING,
            )
            many = await f.enqueue_many_async([{"x": 2}, {"x": 3}], ids=["two", "three"])
            assert [m.params["x"] for m in many] == [2, 3]
            by_name = await queue.enqueue_async("f", {"x": 4}, priority=0, delay=60)
            assert by_name.priority == 0 and by_name.due_at > by_name.created_at
            spec = queue.spec(f, {"x": 5}, id="five")
            assert [t.id for t in await queue.enqueue_many_async([spec])] == ["five"]
            assert await queue.get_async("one") == queue.get("one")
            assert await queue.cancel_async("two") is True
            stats = await queue.stats_async()
            assert stats[TaskStatus.PENDING] == 4 and stats[TaskStatus.CANCELED] == 1
            with pytest.raises(TypeError, match="missing a required argument: 'x'"):
                await f.enqueue_async()
            with pytest.raises(ValueError, match=r"params\['x'\]: set"):
                await f.enqueue_many_async([{"x": {1}}])
            with pytest.raises(DuplicateTask):
                await f.enqueue_async(x=1, id="one")
            with pytest.raises(TypeError, match="colour"):
                await queue.enqueue_async("f", {"x": 1}, colour="red")
            assert stored(queue) == 5
        with pytest.raises(RuntimeError, match="closed"):
            queue.get("one")


class TestFastAPIExample:
    @pytest.mark.parametrize("backend", ["sqlite", "redis"])
    def test_example_runs(self, backend: str, request: pytest.FixtureRequest) -> None:
        """docs/examples/queue_fastapi.py enqueues from its endpoints and reads the three
        tasks back DONE, on SQLite and on Redis (the asyncio client); docs/queue.md shows it."""
        env: dict[str, str] = {}
        if backend == "redis":
            url: str = request.getfixturevalue("redis_url")
            namespace = f"example-{uuid.uuid4().hex}"
            request.addfinalizer(lambda: drop_namespace(url, namespace))
            env["RESILE_URL"] = f"{url}{'&' if '?' in url else '?'}namespace={namespace}"
        out = run_example("queue_fastapi.py", env)
        assert out.count("'status': 'DONE'") == 3
        assert "done: 3, sent to: ['ada@example.com', 'bob@example.com', 'cy@example.com']" in out
        assert_page_shows("queue.md", "queue_fastapi.py")
