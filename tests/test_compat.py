"""resile.compat: the seed framework's API (TaskBackoffScheduler & co.) on resile's queue.

The seed README's example runs unchanged but for its import line and its
storage config, as a module in ``tmp_path`` that process-mode children
import. Everything else runs on a real SQLite file per test; waits poll a
condition with a bound.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resile
from _waits import wait_for
from resile import Constant, Exponential, Linear, TaskStatus
from resile.compat import (
    HANDLER_NAME,
    ResultEntity,
    ResultFailed,
    SchedulerConfig,
    StorageConfig,
    TaskBackoffConfig,
    TaskBackoffScheduler,
    TaskConfig,
    TaskEntity,
    ThreadPoolConfig,
    backoff_for,
)

# The seed README's example, verbatim except the import line and the storage config.
SEED_README_EXAMPLE = """
from resile.compat import (
    TaskBackoffScheduler,
    TaskBackoffConfig,
    TaskEntity,
    TaskConfig,
    StorageConfig,
    ThreadPoolConfig,
    SchedulerConfig,
    ResultEntity,
)

# 1. 创建配置
config = TaskBackoffConfig()

# SQLite存储配置
config.storage = StorageConfig(type="sqlite", path={db!r})

# 任务配置
config.task = TaskConfig(
    biz_prefix="my_service",
    batch_size=10,
    max_retry_count=3,
    backoff_strategy="exponential",
    backoff_interval=30,
    backoff_multiplier=2.0,
    min_gpu_memory_gb=0.5,
    min_gpu_utilization=10
)

# 线程池配置
config.threadpool = ThreadPoolConfig(
    concurrency=5,
    exec_timeout=300,
    proc_mode="process"
)

# 调度器配置
config.scheduler = SchedulerConfig(interval=10)

# 2. 创建调度器
scheduler = TaskBackoffScheduler(config)

# 3. 定义任务处理器
def task_handler(task: TaskEntity):
    # 您的业务逻辑
    print(f"处理任务: {{task.task_id}}")
    return ResultEntity.ok(
        result={{"status": "success", "data": "处理完成"}},
        task_id=task.task_id,
    )

def exception_handler(task: TaskEntity):
    # 异常处理逻辑
    return ResultEntity.fail(
        code=-1,
        message="任务执行失败",
        task_id=task.task_id,
    )

# 4. 注册处理器
scheduler.set_custom_task_handler(task_handler)

scheduler.set_custom_task_exception_handler(exception_handler)

# 5. 启动调度器（如果不需要启动调度器，请忽略此步骤，只提供基础的Task API操作）
scheduler.start()
"""


def make_config(db: Path, **task: Any) -> TaskBackoffConfig:
    config = TaskBackoffConfig()
    config.storage = StorageConfig(type="sqlite", path=str(db))
    options: dict[str, Any] = {
        "biz_prefix": "svc",
        "max_retry_count": 2,
        "backoff_strategy": "fixed",
        "backoff_interval": 0.01,
    }
    options.update(task)
    config.task = TaskConfig(**options)
    config.threadpool = ThreadPoolConfig(concurrency=2, exec_timeout=30, proc_mode="thread")
    return config


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[TaskBackoffScheduler]:
    """A thread-mode scheduler on a SQLite file, shut down and closed afterwards."""
    s = TaskBackoffScheduler(make_config(tmp_path / "tasks.db"))
    yield s
    s.close()


def status_of(s: TaskBackoffScheduler, task_id: str) -> str | None:
    entity = s.get_task(task_id)
    return None if entity is None else str(entity.status)


class TestSeedReadmeExample:
    def test_readme_example_runs_tasks_to_done(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The seed README's example (process mode) starts, runs created tasks to DONE and shuts down."""
        db = tmp_path / "seed.db"
        (tmp_path / "seed_readme_example.py").write_text(
            SEED_README_EXAMPLE.format(db=str(db)), encoding="utf-8"
        )
        # The example asks for a GPU (0.5 GB free, at most 90 % busy); this machine's
        # worker gets a fake probe that offers one.
        monkeypatch.setattr(
            "resile.queue.worker.gpu_probe",
            lambda: {"gpu_memory_gb": 8.0, "gpu_utilization": 20.0},
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        module: Any = importlib.import_module("seed_readme_example")
        s: TaskBackoffScheduler = module.scheduler
        try:
            assert s.running and s.worker is not None and s.worker.mode == "process"
            for i in range(5):
                assert s.create_task(task_params={"index": i}, task_id=f"task_{i}") == (
                    True,
                    f"task_{i}",
                )
            wait_for(
                lambda: s.get_queue_statistics()["tasks"]["DONE"]["total"] == 5,
                timeout=30,
                what="5 DONE tasks",
            )
            task = s.get_task("task_3")
            assert task is not None and task.status == "DONE" and task.process == 100
            assert task.result == {"status": "success", "data": "处理完成"}
            assert task.params == {"index": 3} and task.biz_prefix == "my_service"
            with pytest.raises(RuntimeError, match="before start"):
                s.set_custom_task_handler(module.task_handler)
        finally:
            s.shutdown()
            s.queue.close()
            sys.modules.pop("seed_readme_example", None)
        assert not s.running


MAIN_SCRIPT = """
import time
from resile.compat import (
    ResultEntity, StorageConfig, TaskBackoffConfig, TaskBackoffScheduler, TaskConfig,
    ThreadPoolConfig,
)

config = TaskBackoffConfig()
config.storage = StorageConfig(type="sqlite", path={db!r})
config.task = TaskConfig(biz_prefix="script", backoff_strategy="fixed", backoff_interval=0.01)
config.threadpool = ThreadPoolConfig(concurrency=2, exec_timeout=30, proc_mode="process")
scheduler = TaskBackoffScheduler(config)


def task_handler(task):
    import os
    return ResultEntity.ok(result={{"pid": os.getpid(), "n": task.params["n"]}})


scheduler.set_custom_task_handler(task_handler)
scheduler.start()

if __name__ == "__main__":
    for n in range(4):
        scheduler.create_task({{"n": n}}, f"s{{n}}")
    end = time.monotonic() + 30
    while scheduler.get_queue_statistics()["tasks"]["DONE"]["total"] < 4:
        assert time.monotonic() < end, scheduler.get_queue_statistics()
        time.sleep(0.02)
    scheduler.shutdown()
    import os
    pids = {{scheduler.get_task(f"s{{n}}").result["pid"] for n in range(4)}}
    print("main", os.getpid(), "children", sorted(pids))
"""


class TestProcessModeScript:
    def test_handler_in_main_script(self, tmp_path: Path) -> None:
        """`python script.py` in process mode: children load the script's handler, not its main block."""
        script = tmp_path / "app.py"
        script.write_text(MAIN_SCRIPT.format(db=str(tmp_path / "s.db")), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        main_pid, children = re.search(r"main (\d+) children \[(.*)\]", proc.stdout).groups()  # type: ignore[union-attr]
        child_pids = {int(p) for p in children.split(",")}
        assert child_pids and int(main_pid) not in child_pids


class TestConfig:
    def test_storage_urls(self) -> None:
        """StorageConfig maps sqlite paths, redis host/port/db/password and explicit URLs."""
        assert StorageConfig(type="sqlite", path="/x/t.db").to_url() == "sqlite:////x/t.db"
        assert StorageConfig(type="SQLite").to_url() == "sqlite:///resile.db"
        assert StorageConfig().to_url() == "redis://localhost:6379/0"
        assert (
            StorageConfig(type="redis", host="h", port=7000, database=3, password="p@ss/w").to_url()
            == "redis://:p%40ss%2Fw@h:7000/3"
        )
        assert StorageConfig(type="sqlite", url="sqlite:///:memory:").to_url() == (
            "sqlite:///:memory:"
        )

    def test_storage_config_sql_servers(self) -> None:
        """postgresql and mysql (and their other spellings) map to URLs, user and password quoted,
        the type's usual port when none is given."""
        pg = StorageConfig(type="postgres", host="db", database="app", user="u", password="p@ss")
        assert pg.type == "postgresql"
        assert pg.to_url() == "postgresql://u:p%40ss@db:5432/app"
        my = StorageConfig(type="MariaDB", host="db", port=3307, database="app", user="u")
        assert my.type == "mysql" and my.to_url() == "mysql://u@db:3307/app"

    @pytest.mark.parametrize(
        ("build", "match"),
        [
            (
                lambda: StorageConfig(type="oracle"),
                "type must be one of ['sqlite', 'redis', 'postgresql', 'mysql'], got 'oracle'",
            ),
            (
                lambda: StorageConfig(type="postgresql"),
                "database must name the postgresql database (a non-empty str), got 0",
            ),
            (lambda: StorageConfig(port=0), "port must be an int >= 1, got 0"),
            (lambda: StorageConfig(port=70000), "port must be <= 65535, got 70000"),
            (lambda: StorageConfig(database=-1), "database must be an int >= 0, got -1"),
            (lambda: StorageConfig(url="tasks.db"), "url must look like"),
            (lambda: TaskConfig(biz_prefix=""), "biz_prefix must be a non-empty str"),
            (lambda: TaskConfig(max_retry_count=-1), "max_retry_count must be an int >= 0"),
            (lambda: TaskConfig(backoff_strategy="random"), "backoff_strategy must be one of"),
            (lambda: TaskConfig(backoff_interval=-5), "backoff_interval must be a finite"),
            (lambda: TaskConfig(backoff_multiplier=0.5), "backoff_multiplier must be a finite"),
            (lambda: TaskConfig(min_gpu_utilization=101), "min_gpu_utilization must be <= 100"),
            (lambda: ThreadPoolConfig(concurrency=0), "concurrency must be an int >= 1, got 0"),
            (lambda: ThreadPoolConfig(exec_timeout=0), "exec_timeout must be > 0, got 0"),
            (lambda: ThreadPoolConfig(proc_mode="fiber"), "proc_mode must be 'thread' or"),
            (lambda: SchedulerConfig(interval=0), "interval must be > 0, got 0"),
        ],
    )
    def test_bad_values_are_named(self, build: Callable[[], object], match: str) -> None:
        """A bad config value raises ValueError naming the field and the value."""
        with pytest.raises(ValueError, match=re.escape(match)):
            build()

    def test_scheduler_checks_config_types(self, tmp_path: Path) -> None:
        """A config that is not a TaskBackoffConfig, or a part of the wrong type, is refused."""
        with pytest.raises(TypeError, match="config must be a TaskBackoffConfig"):
            TaskBackoffScheduler({"storage": {}})  # type: ignore[arg-type]
        config = make_config(tmp_path / "t.db")
        config.task = {"biz_prefix": "x"}  # type: ignore[assignment]
        with pytest.raises(TypeError, match=r"config\.task must be a TaskConfig"):
            TaskBackoffScheduler(config)

    def test_scheduler_interval_is_accepted(self, tmp_path: Path) -> None:
        """SchedulerConfig(interval=...) is kept on the config (resile does not poll on it)."""
        config = make_config(tmp_path / "t.db")
        config.scheduler = SchedulerConfig(interval=3)
        with TaskBackoffScheduler(config) as s:
            assert s.config.scheduler.interval == 3
            s.queue.close()


class TestStrategies:
    def test_mapping(self) -> None:
        """fixed, linear and exponential map to Constant, Linear and jitter-free Exponential."""
        fixed = backoff_for("fixed", 2)
        assert isinstance(fixed, Constant) and [fixed.delay(n) for n in (1, 2, 3)] == [2, 2, 2]
        linear = backoff_for("linear", 2)
        assert isinstance(linear, Linear) and [linear.delay(n) for n in (1, 2, 3)] == [2, 4, 6]
        exp = backoff_for("exponential", 2, 3.0)
        assert isinstance(exp, Exponential) and exp.jitter == "none"
        assert [exp.delay(n) for n in (1, 2, 3)] == [2, 6, 18]

    @pytest.mark.parametrize(
        ("strategy", "stored_type"),
        [("fixed", "constant"), ("linear", "linear"), ("exponential", "exponential")],
    )
    def test_policy_is_stored_with_the_task(
        self, tmp_path: Path, strategy: str, stored_type: str
    ) -> None:
        """A created task carries the config's policy, readable in the seed's terms."""
        config = make_config(
            tmp_path / "t.db",
            backoff_strategy=strategy,
            backoff_interval=5,
            backoff_multiplier=3.0,
            max_retry_count=4,
            min_gpu_memory_gb=1.5,
        )
        with TaskBackoffScheduler(config) as s:
            assert s.create_task({"a": 1}, "t1") == (True, "t1")
            stored = s.queue.get("t1")
            assert stored is not None and stored.backoff["type"] == stored_type
            assert stored.max_retries == 4 and stored.timeout == 30.0
            assert stored.resources == {"min_gpu_memory_gb": 1.5}
            entity = s.get_task("t1")
            assert entity is not None
            assert (entity.backoff_strategy, entity.backoff_interval) == (strategy, 5.0)
            assert entity.max_retry_count == 4 and entity.min_gpu_memory_gb == 1.5
            s.queue.close()


class TestCreateTask:
    def test_created_pending_with_seed_fields(self, scheduler: TaskBackoffScheduler) -> None:
        """create_task stores a PENDING task; get_task shows it with the seed's field names."""
        before = int(time.time())
        assert scheduler.create_task(task_params={"index": 111, "data": "x"}, task_id="t1") == (
            True,
            "t1",
        )
        entity = scheduler.get_task("t1")
        assert isinstance(entity, TaskEntity)
        assert entity.status == TaskStatus.PENDING == "PENDING"
        assert entity.param == '{"index": 111, "data": "x"}' and entity.params["index"] == 111
        assert entity.biz_prefix == "svc" and entity.retry_count == 0 and entity.process == 0
        assert entity.create_time >= before and entity.next_execution_time >= before
        record = entity.to_dict()
        assert record["status"] == "PENDING" and set(record) >= {
            "task_id",
            "biz_prefix",
            "process",
            "status",
            "result",
            "param",
            "retry_count",
            "next_execution_time",
            "create_time",
            "update_time",
            "max_retry_count",
            "backoff_strategy",
            "backoff_interval",
            "backoff_multiplier",
            "min_gpu_memory_gb",
            "min_gpu_utilization",
        }

    def test_generated_id(self, scheduler: TaskBackoffScheduler) -> None:
        """Without a task_id an id is generated and returned as the message."""
        ok, task_id = scheduler.create_task({"a": 1})
        assert ok and scheduler.get_task(task_id) is not None

    def test_refusals_store_nothing(self, scheduler: TaskBackoffScheduler) -> None:
        """A duplicate id, non-JSON params or a bad priority give (False, reason); nothing changes."""
        assert scheduler.create_task({"a": 1}, "t1")[0]
        assert scheduler.create_task({"a": 2}, "t1") == (
            False,
            "create_task: task_id 't1' already exists",
        )
        ok, msg = scheduler.create_task({"s": {1, 2}}, "t2")
        assert not ok and "params['s']" in msg and "set" in msg
        ok, msg = scheduler.create_task({"a": 1}, "t3", priority="high")  # type: ignore[arg-type]
        assert not ok and "priority" in msg and "'high'" in msg
        ok, msg = scheduler.create_task([1, 2], "t4")  # type: ignore[arg-type]
        assert not ok and "task_params must be a dict" in msg
        stats = scheduler.get_queue_statistics()["tasks"]
        assert stats["PENDING"] == {"total": 1, "queue": ["t1"]}
        entity = scheduler.get_task("t1")
        assert entity is not None and entity.params == {"a": 1}

    def test_priority_none_runs_after_explicit_priorities(
        self, scheduler: TaskBackoffScheduler
    ) -> None:
        """As in the seed, tasks without a priority come after smaller explicit ones, FIFO among themselves."""
        scheduler.create_task({}, "late-1")
        scheduler.create_task({}, "late-2")
        scheduler.create_task({}, "urgent", priority=100)
        leased = scheduler.queue.store.lease("svc", "w", limit=3)
        assert [t.id for t in leased] == ["urgent", "late-1", "late-2"]

    def test_unknown_task(self, scheduler: TaskBackoffScheduler) -> None:
        """get_task of an unknown id returns None."""
        assert scheduler.get_task("nope") is None


class TestCancelTask:
    def test_cancel_states(self, scheduler: TaskBackoffScheduler) -> None:
        """Pending tasks cancel; canceling again is (True, ...); unknown and finished ones are refused."""
        scheduler.create_task({}, "p")
        ok, msg = scheduler.cancel_task("p")
        assert ok and "canceled" in msg and status_of(scheduler, "p") == "CANCELED"
        assert scheduler.cancel_task("p") == (True, "task 'p' was already canceled")
        assert scheduler.cancel_task("ghost") == (False, "task 'ghost' does not exist")
        scheduler.create_task({}, "d")
        store = scheduler.queue.store
        (leased,) = store.lease("svc", "w")
        store.complete(leased.id, "w", {"r": 1})
        assert scheduler.cancel_task("d") == (False, "task 'd' is DONE and cannot be canceled")

    def test_cancel_running_task_in_thread_mode(self, scheduler: TaskBackoffScheduler) -> None:
        """A running task is canceled; its handler sees the state and its result is not stored."""
        started, release = threading.Event(), threading.Event()

        def handler(task: TaskEntity) -> ResultEntity:
            started.set()
            release.wait(10)
            return ResultEntity.ok(result="late", task_id=task.task_id)

        scheduler.set_custom_task_handler(handler)
        scheduler.start()
        scheduler.create_task({}, "run")
        assert started.wait(10)
        assert scheduler.cancel_task("run")[0]
        release.set()
        scheduler.shutdown()
        entity = scheduler.get_task("run")
        assert entity is not None and entity.status == "CANCELED" and entity.result == ""


class TestStatistics:
    def test_seed_shape(self, scheduler: TaskBackoffScheduler) -> None:
        """get_queue_statistics returns the seed's shape: update_time, and total + ids per state."""
        for i in range(3):
            scheduler.create_task({"i": i}, f"t{i}")
        scheduler.cancel_task("t1")
        store = scheduler.queue.store
        (leased,) = store.lease("svc", "w")
        stats = scheduler.get_queue_statistics()
        assert set(stats) == {"system_status", "tasks"}
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", stats["system_status"]["update_time"]
        )
        assert list(stats["tasks"]) == ["PENDING", "DOING", "DONE", "FAILED", "CANCELED"]
        assert stats["tasks"]["PENDING"] == {"total": 1, "queue": ["t2"]}
        assert stats["tasks"]["DOING"] == {"total": 1, "queue": [leased.id]}
        assert stats["tasks"]["DONE"] == {"total": 0, "queue": []}
        assert stats["tasks"]["FAILED"] == {"total": 0, "queue": []}
        assert stats["tasks"]["CANCELED"] == {"total": 1, "queue": ["t1"]}

    def test_only_this_prefix_and_limit(self, tmp_path: Path) -> None:
        """Statistics cover the scheduler's biz_prefix only; limit caps the ids, not the total."""
        a = TaskBackoffScheduler(make_config(tmp_path / "t.db", biz_prefix="a"))
        b = TaskBackoffScheduler(make_config(tmp_path / "t.db", biz_prefix="b"))
        try:
            for i in range(3):
                a.create_task({}, f"a{i}")
            b.create_task({}, "b0")
            assert a.get_queue_statistics(limit=2)["tasks"]["PENDING"] == {
                "total": 3,
                "queue": ["a0", "a1"],
            }
            assert b.get_queue_statistics()["tasks"]["PENDING"] == {"total": 1, "queue": ["b0"]}
        finally:
            a.close()
            b.close()


class TestMarks:
    def test_marks_on_a_running_task(self, scheduler: TaskBackoffScheduler) -> None:
        """mark_task_processing/completed/failed and progress act on a leased task under its lease."""
        scheduler.create_task({}, "a")
        scheduler.create_task({}, "b")
        store = scheduler.queue.store
        leased = store.lease("svc", "w", limit=2)
        assert {t.id for t in leased} == {"a", "b"}
        assert scheduler.mark_task_processing("a")
        assert scheduler.update_task_progress("a", 75)
        entity = scheduler.get_task("a")
        assert entity is not None and entity.process == 75
        assert scheduler.mark_task_completed("a", "执行结果")
        done = scheduler.get_task("a")
        assert done is not None and done.status == "DONE" and done.result == "执行结果"
        assert scheduler.mark_task_failed("b", "失败原因")
        retried = scheduler.queue.get("b")
        assert retried is not None and retried.status is TaskStatus.PENDING
        assert retried.last_error is not None and "失败原因" in retried.last_error.message
        assert store.complete("a", "w", "late") is None  # the worker's late outcome is refused

    def test_marks_refused_when_not_running(self, scheduler: TaskBackoffScheduler) -> None:
        """On a pending, finished or unknown task the marks return False and change nothing."""
        scheduler.create_task({}, "p")
        assert not scheduler.mark_task_processing("p")
        assert not scheduler.mark_task_completed("p", "x")
        assert not scheduler.mark_task_failed("p", "x")
        assert not scheduler.mark_task_completed("ghost")
        assert status_of(scheduler, "p") == "PENDING"
        assert scheduler.update_task_progress("p", 10)
        assert not scheduler.update_task_progress("ghost", 10)
        with pytest.raises(ValueError, match="progress must be a number from 0 to 100, got 150"):
            scheduler.update_task_progress("p", 150)


class TestRunning:
    def test_ok_result_is_stored(self, scheduler: TaskBackoffScheduler) -> None:
        """The handler gets a TaskEntity; ResultEntity.ok(result=...) completes the task with it."""
        seen: list[TaskEntity] = []

        def handler(task: TaskEntity) -> ResultEntity:
            seen.append(task)
            return ResultEntity.ok(result={"double": task.params["n"] * 2}, task_id=task.task_id)

        scheduler.set_custom_task_handler(handler)
        scheduler.start()
        scheduler.start()  # a second start while running does nothing
        scheduler.create_task({"n": 21}, "t")
        wait_for(lambda: status_of(scheduler, "t") == "DONE", what="DONE")
        entity = scheduler.get_task("t")
        assert entity is not None and entity.result == {"double": 42}
        assert seen[0].task_id == "t" and seen[0].status == "DOING"

    def test_fail_result_retries_then_dead_letters(self, scheduler: TaskBackoffScheduler) -> None:
        """ResultEntity.fail counts as a failed attempt: retried max_retry_count times, then FAILED."""
        calls: list[int] = []

        def handler(task: TaskEntity) -> ResultEntity:
            calls.append(task.retry_count)
            return ResultEntity.fail(code=-7, message="下游不可用", result={"why": "503"})

        scheduler.set_custom_task_handler(handler)
        scheduler.start()
        scheduler.create_task({}, "t")
        wait_for(lambda: status_of(scheduler, "t") == "FAILED", what="FAILED")
        assert calls == [0, 1, 2]
        stored = scheduler.queue.get("t")
        assert stored is not None and stored.attempts == 3 and stored.last_error is not None
        assert stored.last_error.type == "ResultFailed"
        assert (
            "[code -7] 下游不可用" in stored.last_error.message
            and "503" in stored.last_error.message
        )
        entity = scheduler.get_task("t")
        assert entity is not None and "下游不可用" in entity.result and entity.retry_count == 2

    def test_exception_calls_exception_handler(self, scheduler: TaskBackoffScheduler) -> None:
        """A raising handler fails the attempt; the exception handler gets the TaskEntity and its message is kept."""
        called: list[str] = []

        def handler(task: TaskEntity) -> ResultEntity:
            if task.retry_count == 0:
                raise ConnectionError("reset by peer")
            return ResultEntity.ok(result="second time lucky")

        def on_exception(task: TaskEntity) -> ResultEntity:
            called.append(task.task_id)
            return ResultEntity.fail(code=-1, message="任务执行失败", task_id=task.task_id)

        scheduler.set_custom_task_handler(handler)
        scheduler.set_custom_task_exception_handler(on_exception)
        scheduler.start()
        scheduler.create_task({}, "t")
        wait_for(lambda: status_of(scheduler, "t") == "DONE", what="DONE")
        assert called == ["t"]
        stored = scheduler.queue.get("t")
        assert stored is not None and stored.history[0].error is not None
        first = stored.history[0].error
        assert first.type == "ResultFailed"
        assert "ConnectionError: reset by peer (任务执行失败)" in first.message
        assert stored.result == "second time lucky"

    def test_broken_exception_handler_is_ignored(self, scheduler: TaskBackoffScheduler) -> None:
        """An exception handler that raises is logged; the handler's own error is recorded."""

        def handler(task: TaskEntity) -> ResultEntity:
            raise KeyError("missing")

        def on_exception(task: TaskEntity) -> ResultEntity:
            raise RuntimeError("broken too")

        scheduler.set_custom_task_handler(handler)
        scheduler.set_custom_task_exception_handler(on_exception)
        scheduler.start()
        scheduler.create_task({}, "t")
        wait_for(lambda: status_of(scheduler, "t") == "FAILED", what="FAILED")
        stored = scheduler.queue.get("t")
        assert stored is not None and stored.last_error is not None
        assert stored.last_error.type == "KeyError"

    def test_permanent_dead_letters_at_once(self, scheduler: TaskBackoffScheduler) -> None:
        """resile.Permanent raised by the handler ends the task FAILED without retries."""

        def handler(task: TaskEntity) -> ResultEntity:
            raise resile.Permanent(ValueError("bad input"))

        scheduler.set_custom_task_handler(handler)
        scheduler.start()
        scheduler.create_task({}, "t")
        wait_for(lambda: status_of(scheduler, "t") == "FAILED", what="FAILED")
        stored = scheduler.queue.get("t")
        assert stored is not None and stored.attempts == 1

    def test_start_needs_a_handler(self, scheduler: TaskBackoffScheduler) -> None:
        """start() without a task handler raises, naming the setter; a non-callable is refused."""
        with pytest.raises(RuntimeError, match=r"set_custom_task_handler\(fn\)"):
            scheduler.start()
        with pytest.raises(TypeError, match="must be callable"):
            scheduler.set_custom_task_handler("handler")  # type: ignore[arg-type]
        assert not scheduler.running

    def test_process_mode_needs_module_level_handlers(self, tmp_path: Path) -> None:
        """Process mode refuses a handler that child processes cannot import, at start()."""
        config = make_config(tmp_path / "t.db")
        config.threadpool = ThreadPoolConfig(concurrency=1, proc_mode="process")
        with TaskBackoffScheduler(config) as s:
            s.set_custom_task_handler(lambda task: ResultEntity.ok())
            with pytest.raises(ValueError, match="module-level function"):
                s.start()
            assert not s.running
            s.queue.close()

    def test_shutdown_is_idempotent_and_api_keeps_working(
        self, scheduler: TaskBackoffScheduler
    ) -> None:
        """shutdown() stops the worker; calling it again is harmless; the task API still works."""
        scheduler.set_custom_task_handler(lambda task: ResultEntity.ok())
        scheduler.start()
        assert scheduler.running
        scheduler.shutdown()
        scheduler.shutdown()
        assert not scheduler.running and scheduler.worker is None
        assert scheduler.create_task({}, "after") == (True, "after")
        assert status_of(scheduler, "after") == "PENDING"

    def test_native_api_sees_compat_tasks(self, scheduler: TaskBackoffScheduler) -> None:
        """Tasks made through compat are ordinary resile tasks under one handler name."""
        scheduler.create_task({"x": 1}, "t")
        task = scheduler.queue.get("t")
        assert task is not None and task.handler == HANDLER_NAME and task.queue == "svc"
        assert task.params == {"x": 1}

    def test_result_failed_message(self) -> None:
        """ResultFailed names the code, the message and the result."""
        err = ResultFailed(-2, "boom", {"k": "v"})
        assert str(err) == '[code -2] boom; result: {"k": "v"}'
        assert (err.code, err.message, err.result) == (-2, "boom", {"k": "v"})
        assert ResultEntity.res(True, 0, result=1).success


class TestSqlStorage:
    @pytest.mark.parametrize("kind", ["postgresql", "mysql"])
    def test_sql_config_opens_the_store(self, kind: str, request: pytest.FixtureRequest) -> None:
        """StorageConfig(type="postgresql" / "mysql", host, port, database, user, password)
        reaches the real server's store, as the seed's roadmap asked."""
        from urllib.parse import unquote, urlsplit

        url: str = request.getfixturevalue("postgres_url" if kind == "postgresql" else "mysql_url")
        parts = urlsplit(url)
        config = make_config(Path("unused.db"), biz_prefix=f"compat-{time.monotonic_ns()}")
        config.storage = StorageConfig(
            type=kind,
            host=parts.hostname or "",
            port=parts.port,
            database=parts.path.lstrip("/"),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )
        s = TaskBackoffScheduler(config)
        try:
            tid = f"{config.task.biz_prefix}-t"
            assert s.create_task({"a": 1}, tid) == (True, tid)
            entity = s.get_task(tid)
            assert entity is not None and entity.status == "PENDING"
            assert s.cancel_task(tid)
        finally:
            s.close()


class TestRedisStorage:
    def test_redis_config_opens_the_redis_store(self, request: pytest.FixtureRequest) -> None:
        """StorageConfig(type="redis") reaches resile.connect's Redis store.

        The seed's config has no namespace, so the store is the default one: this runs on
        a throwaway server of its own, never on a shared ``REDIS_URL``."""
        if importlib.util.find_spec("resile.queue.store.redis") is None:
            pytest.skip("the Redis store is not part of this version yet")
        factory = request.getfixturevalue("redis_server_factory")
        if not factory.available:
            pytest.skip("needs a redis-server binary for a throwaway server")
        url: str = factory().url
        host_port, _, db = url.split("://", 1)[1].rpartition("/")
        host, _, port = host_port.rpartition("@")[2].rpartition(":")
        config = make_config(Path("unused.db"), biz_prefix=f"compat-{time.monotonic_ns()}")
        config.storage = StorageConfig(type="redis", host=host, port=int(port), database=int(db))
        s = TaskBackoffScheduler(config)
        try:
            assert s.create_task({"a": 1}, f"{config.task.biz_prefix}-t") == (
                True,
                f"{config.task.biz_prefix}-t",
            )
            entity = s.get_task(f"{config.task.biz_prefix}-t")
            assert entity is not None and entity.status == "PENDING"
        finally:
            s.close()
