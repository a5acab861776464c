"""deploy/: the alert rules (promtool unit tests), the Grafana dashboard, a real Prometheus scrape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

import resile
from _components import missing
from _prometheus_server import PrometheusServer, find_binary
from _redis_server import free_port
from _waits import wait_for
from resile import metrics
from resile.queue._scheduler import Scheduler
from resile.queue.worker import Worker
from resile.testing import no_waits

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "resile.json"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _test_groups() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    return {group["name"]: group for group in doc["tests"]}


def _promtool() -> str:
    found = find_binary("promtool")
    if found is None:
        missing("promtool", "install Debian's prometheus package (it ships promtool)")
    return found


def _run_unit_test(tmp_path: Path, group: dict[str, Any], rules: Path = ALERTS) -> str:
    """Run one test group of alerts_test.yml against ``rules``; returns promtool's output."""
    doc = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [group]}
    path = tmp_path / f"{group['name']}_test.yml"
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        [_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


class TestAlertRules:
    def test_the_rules_file_is_valid(self) -> None:
        """promtool check rules accepts alerts.yml, with the eight rules."""
        done = subprocess.run(
            [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "8 rules found" in done.stdout

    def test_every_rule_has_a_unit_test(self) -> None:
        """Each alert in alerts.yml has a test group of its name in alerts_test.yml."""
        names = {rule["alert"] for rule in _rules()}
        assert "HighTaskFailureRate" in names
        assert names == set(_test_groups())

    @pytest.mark.parametrize("alert", sorted(rule["alert"] for rule in _rules()))
    def test_the_rule_fires_and_stays_quiet_as_its_unit_test_says(
        self, alert: str, tmp_path: Path
    ) -> None:
        """promtool test rules passes the rule's own test group (a case that fires, one that not)."""
        group = _test_groups()[alert]
        checked = {case["alertname"] for case in group["alert_rule_test"]}
        assert checked == {alert}
        assert any(case["exp_alerts"] for case in group["alert_rule_test"])
        assert any(not case["exp_alerts"] for case in group["alert_rule_test"])
        output = _run_unit_test(tmp_path, group)
        assert output.startswith("rc=0"), output

    def test_a_wrong_threshold_fails_its_unit_test(self, tmp_path: Path) -> None:
        """The failure-rate test bites: with the threshold at 20 % instead of 5 % it fails."""
        text = ALERTS.read_text().replace(") > 0.05", ") > 0.20")
        assert text != ALERTS.read_text()
        changed = tmp_path / "alerts.yml"
        changed.write_text(text)
        output = _run_unit_test(tmp_path, _test_groups()["HighTaskFailureRate"], changed)
        assert output.startswith("rc=1"), output


class TestDashboard:
    def test_the_dashboard_is_grafana_json_with_a_query_per_panel(self) -> None:
        """resile.json loads; panels have unique ids and each has at least one PromQL target."""
        board = json.loads(DASHBOARD.read_text())
        assert board["uid"] == "resile-overview"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)) >= 8
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            assert all(target["expr"].strip() for target in panel["targets"])
        titles = " ".join(panel["title"] for panel in board["panels"]).lower()
        for topic in ("outcome", "failure ratio", "run time", "lateness", "depth", "slots"):
            assert topic in titles
        assert "breaker" in titles


def _names_in_deploy() -> set[str]:
    found: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "alerts_test.yml":
            found |= set(re.findall(r"\bresile_[a-z_]+", path.read_text()))
    return found


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    yield reg
    metrics.uninstall(reg)


HANDLERS = """
import resile

queue = resile.connect({url!r})


@queue.task(backoff=resile.Constant(0.01), max_retries=2)
def flaky(ctx: resile.TaskContext) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("the first attempt fails")
    return ctx.attempt


@queue.task(max_retries=0)
def doomed() -> None:
    raise ValueError("always")
"""


def _run_app(registry: CollectorRegistry, tmp_path: Path) -> str:
    """A small app run for real: a burst worker, @retry, a breaker, a budget, a periodic job."""
    q = resile.connect(f"sqlite:///{tmp_path / 'app.db'}")

    @q.task(name="flaky", backoff=resile.Constant(0.0), max_retries=2)
    def flaky(ctx: resile.TaskContext) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("the first attempt fails")
        return ctx.attempt

    try:
        metrics.install(registry, store=q.store, ttl=0)
        q.enqueue("flaky", {})
        Worker(q, mode="thread", concurrency=2).run(burst=True)
        q.enqueue("flaky", {}, delay=3600)  # one due later: the depth gauges have a PENDING task
        fetch = resile.retry(backoff=resile.Constant(0.0), stop=resile.after_attempts(2))
        with pytest.raises(ConnectionError):
            fetch(_failing())()
        budget = resile.RetryBudget(max_tokens=1, name="api")
        with pytest.raises(ConnectionError):
            resile.retry(backoff=resile.Constant(0.0), budget=budget)(_failing())()
        breaker = resile.CircuitBreaker(failure_threshold=1, name="db")
        with pytest.raises(ConnectionError):
            breaker(_failing())()
        with no_waits():
            resile.Periodic(lambda: None, seconds=1.0, max_repetitions=1, name="cleanup").run()

        @q.periodic(every=60, name="report", missed="latest")
        def report() -> None: ...

        ticks = Scheduler(q.store, q.periodics, [q.name])
        ticks.reconcile(q.store.now())
        ticks.run_due(q.store.now() + 60)  # its first tick: the schedule series
        return generate_latest(registry).decode()  # the store's counts are read while it is open
    finally:
        q.close()


def _failing() -> Any:
    def fn() -> None:
        raise ConnectionError("down")

    return fn


class TestNames:
    def test_every_resile_name_in_deploy_is_exposed(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """Each resile_* name the rules and the dashboard use appears in a real exposition."""
        exposed = set(re.findall(r"^(resile_[a-z_]+)", _run_app(registry, tmp_path), re.M))
        used = _names_in_deploy()
        assert len(used) >= 10
        assert used <= exposed, sorted(used - exposed)


class TestRealPrometheus:
    def test_a_real_prometheus_scrapes_a_running_worker(self, tmp_path: Path) -> None:
        """`resile worker --metrics-port` is scraped by Prometheus; its API shows our attempts."""
        binary = find_binary("prometheus")
        if binary is None:
            missing("prometheus", "install Debian's prometheus package")
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
        (tmp_path / "obs_handlers.py").write_text(HANDLERS.format(url=url), encoding="utf-8")
        with resile.connect(url) as q:  # the producer side does not import the handlers
            for _ in range(5):
                q.enqueue("flaky", {}, strict=False)
            q.enqueue("doomed", {}, strict=False, max_retries=0)
        port = free_port()
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "resile", "worker", "obs_handlers:queue"),
                *("--metrics-port", str(port), "--concurrency", "2"),
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with PrometheusServer(binary, [f"127.0.0.1:{port}"]) as prom:
                expr = 'sum by (outcome) (resile_task_attempts_total{queue="default"})'
                seen: dict[str, float] = {}

                def scraped() -> bool:
                    assert worker.poll() is None, "the worker exited"
                    seen.clear()
                    for row in prom.query(expr):
                        seen[row["metric"]["outcome"]] = float(row["value"][1])
                    return seen == {"succeeded": 5.0, "retrying": 5.0, "dead": 1.0}

                wait_for(scraped, timeout=60, what=f"Prometheus to see the attempts (saw {seen})")
                done = prom.query('max(resile_queue_tasks{queue="default",status="DONE"})')
                assert [float(row["value"][1]) for row in done] == [5.0]
                rate = prom.query('count(resile_task_duration_seconds_count{queue="default"}) > 0')
                assert rate
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
        assert f"metrics at http://127.0.0.1:{port}/metrics" in err
