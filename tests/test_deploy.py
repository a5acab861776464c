"""deploy/: the alert rules (promtool unit tests), the Grafana dashboard, a real Prometheus scrape."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from _components import missing
from _prometheus_server import PrometheusServer, find_binary
from _waits import wait_for
from resile import instrument, metrics
from resile.instrument import (
    AttemptOutcome,
    BreakerEvent,
    BudgetEvent,
    GiveUpReason,
    Kind,
    PeriodicEvent,
    RetryEvent,
    SlotsEvent,
    TaskEvent,
)
from resile.queue import TaskSpec
from resile.queue.store.sqlite import SQLiteStore

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
        """promtool check rules accepts alerts.yml, with the seven rules."""
        done = subprocess.run(
            [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "7 rules found" in done.stdout

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


def _run_app(registry: CollectorRegistry, store: SQLiteStore) -> None:
    """Counts of one small app: a store with tasks, attempts, @retry, a breaker, a budget."""
    metrics.install(registry, store=store, ttl=0)
    store.create(TaskSpec("send", queue="emails", due_at=store.now() - 5))
    for event in [
        TaskEvent(Kind.TASK_CREATED, "emails", "send", "t-1"),
        SlotsEvent(Kind.WORKER_SLOTS, "emails", slots=2, busy=1),
        TaskEvent(Kind.ATTEMPT_STARTED, "emails", "send", "t-1", attempt=1, lateness=0.002),
        TaskEvent(
            Kind.ATTEMPT_FINISHED,
            "emails",
            "send",
            "t-1",
            attempt=1,
            outcome=AttemptOutcome.RETRYING,
            duration=0.05,
        ),
        TaskEvent(
            Kind.ATTEMPT_FINISHED,
            "emails",
            "send",
            "t-1",
            attempt=2,
            outcome=AttemptOutcome.SUCCEEDED,
            duration=0.04,
        ),
        RetryEvent(Kind.RETRY_SCHEDULED, "fetch", 1, delay=0.1, error_type="TimeoutError"),
        RetryEvent(Kind.RETRY_GAVE_UP, "fetch", 3, reason=GiveUpReason.DEADLINE),
        BreakerEvent(Kind.BREAKER_TRANSITION, "db", "closed", "open"),
        BudgetEvent(Kind.BUDGET_REJECTED, "api"),
        PeriodicEvent(Kind.PERIODIC_RUN, "cleanup", "succeeded", 0.01),
    ]:
        instrument.emit(event)


class TestNames:
    def test_every_resile_name_in_deploy_is_exposed(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """Each resile_* name the rules and the dashboard use appears in a real exposition."""
        with SQLiteStore(str(tmp_path / "q.db")) as store:
            _run_app(registry, store)
            exposed = set(
                re.findall(r"^(resile_[a-z_]+)", generate_latest(registry).decode(), re.M)
            )
        used = _names_in_deploy()
        assert len(used) >= 10
        assert used <= exposed, sorted(used - exposed)


class TestRealPrometheus:
    def test_a_real_prometheus_scrapes_the_attempts(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """Prometheus scrapes serve()'s endpoint; its HTTP API returns the attempts we made."""
        binary = find_binary("prometheus")
        if binary is None:
            missing("prometheus", "install Debian's prometheus package")
        with SQLiteStore(str(tmp_path / "q.db")) as store:
            _run_app(registry, store)
            for n in range(7):
                instrument.emit(
                    TaskEvent(
                        Kind.ATTEMPT_FINISHED,
                        "emails",
                        "send",
                        f"x-{n}",
                        attempt=1,
                        outcome=AttemptOutcome.DEAD,
                        duration=0.01,
                    )
                )
            with (
                metrics.serve(0, registry=registry) as endpoint,
                PrometheusServer(binary, [f"127.0.0.1:{endpoint.port}"]) as prom,
            ):
                expr = 'sum by (outcome) (resile_task_attempts_total{queue="emails"})'
                seen: dict[str, float] = {}

                def scraped() -> bool:
                    seen.clear()
                    for row in prom.query(expr):
                        seen[row["metric"]["outcome"]] = float(row["value"][1])
                    return len(seen) == 3

                wait_for(scraped, timeout=30, what="Prometheus to scrape the resile endpoint")
                assert seen == {"succeeded": 1.0, "retrying": 1.0, "dead": 7.0}
                pending = prom.query('resile_queue_tasks{queue="emails",status="PENDING"}')
                assert [float(row["value"][1]) for row in pending] == [1.0]
