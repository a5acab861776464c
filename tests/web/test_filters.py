"""The task list's filters and its bounded scan, on a real store."""

from __future__ import annotations

import importlib.resources

import pytest

from resile.queue._names import TaskStatus
from resile.queue.store import Store
from resile.queue.task import TaskError, TaskSpec
from resile.web._filters import (
    BadInput,
    Cursor,
    TaskFilter,
    parse_age,
    parse_cursor,
    scan,
    scan_all,
)
from web.conftest import dead_task


class TestParsing:
    def test_filter_fields(self) -> None:
        """Every field is read; blank ones are unset; the state is case-insensitive."""
        flt = TaskFilter.from_params(
            {"queue": "mail", "status": "failed", "task": " send ", "prefix": "", "since": "0"}
        )
        assert flt == TaskFilter(queue="mail", status=TaskStatus.FAILED, task="send", since=0.0)
        assert flt.narrowing and not TaskFilter(queue="mail").narrowing
        assert TaskFilter().empty

    def test_round_trip(self) -> None:
        """to_params() gives fields that from_params() reads back to the same filter."""
        flt = TaskFilter.from_params(
            {"queue": "q", "status": "DONE", "error": "E", "since": "2026-01-31T14:05:09"}
        )
        assert TaskFilter.from_params(flt.to_params()) == flt
        ordered = TaskFilter.from_params({"queue": "q", "sort": "Due", "order": "desc"})
        assert ordered == TaskFilter(queue="q", sort="due", descending=True)
        assert ordered.to_params() == {"queue": "q", "sort": "due", "order": "desc"}
        assert TaskFilter.from_params(ordered.to_params()) == ordered
        assert not ordered.narrowing and not ordered.empty

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"status": "LOST"}, "status"),
            ({"since": "noon"}, "since"),
            ({"until": "nan"}, "until"),
            ({"since": "10", "until": "5"}, "until"),
            ({"queue": "q" * 300}, "queue"),
            ({"sort": "size"}, "sort"),
            ({"order": "up"}, "order"),
        ],
    )
    def test_bad_fields(self, params: dict[str, str], field: str) -> None:
        """A bad value raises BadInput naming its field."""
        with pytest.raises(BadInput, match=f"^{field}: expected") as info:
            TaskFilter.from_params(params)
        assert info.value.field == field

    def test_ages_and_cursors(self) -> None:
        """Ages take s, m, h, d; cursors are a sequence, or KEY:SEQUENCE for a sort by time."""
        assert [parse_age(v) for v in ("90", "90s", "15m", "12h", "7d", "0.5h")] == [
            90.0,
            90.0,
            900.0,
            43200.0,
            604800.0,
            1800.0,
        ]
        for bad in ("", "-1", "1w", "h"):
            with pytest.raises(BadInput, match="older_than"):
                parse_age(bad)
        assert parse_cursor("") is None and parse_cursor("42") == Cursor(42)
        for bad in ("-1", "1.5", "x", "9" * 30, "1.5:42"):
            with pytest.raises(BadInput, match="cursor"):
                parse_cursor(bad)
        keyed = parse_cursor("1764790000.25:42", keyed=True)
        assert keyed == Cursor(42, 1764790000.25) and str(keyed) == "1764790000.25:42"
        for bad in ("42", "x:42", "nan:42", "inf:1", "1.5:-1", "1.5:"):
            with pytest.raises(BadInput, match="cursor"):
                parse_cursor(bad, keyed=True)


class TestScan:
    def test_budget_ends_a_page_early_and_the_cursor_goes_on(self, store: Store) -> None:
        """With a rare filter, a page reads at most ``budget`` rows and the next goes on from there."""
        for _ in range(25):
            store.create(TaskSpec("common", queue="mail"))
        rare = [store.create(TaskSpec("rare", queue="mail")).id for _ in range(2)]
        flt = TaskFilter(task="rare")
        first = scan(store, flt, limit=10, budget=10)
        assert first.tasks == () and first.scanned == 10 and first.next is not None
        found, cursor, pages = [], None, 0
        while True:
            page = scan(store, flt, cursor=cursor, limit=10, budget=10)
            pages += 1
            found += [t.id for t in page.tasks]
            if page.next is None:
                break
            cursor = page.next
        assert found == rare and pages == 3

    def test_full_page_has_a_next_only_when_more_exist(self, store: Store) -> None:
        """A page of exactly the last ``limit`` tasks has no next page."""
        for _ in range(4):
            store.create(TaskSpec("t"))
        assert scan(store, TaskFilter(), limit=4).next is None
        assert scan(store, TaskFilter(), limit=3).next is not None

    def test_sorted_pages_walk_every_match_once(self, store: Store) -> None:
        """Sorted by due time, newest first, narrowed by name: the pages hold every match once, in
        order, each cursor carrying the last row's due time."""
        dues = [7.0, 3.0, 9.0, 3.0, 1.0, 5.0, 9.0, 2.0]
        made = [
            store.create(TaskSpec("rare" if i % 2 else "common", delay=d, id=f"t{i}"))
            for i, d in enumerate(dues)
        ]
        want = [
            t.id
            for t in sorted(made, key=lambda t: (t.due_at, t.sequence), reverse=True)
            if t.handler == "rare"
        ]
        flt = TaskFilter(task="rare", sort="due", descending=True)
        found: list[str] = []
        cursor = None
        while True:
            page = scan(store, flt, cursor=cursor, limit=1, budget=3)
            found += [t.id for t in page.tasks]
            if page.next is None:
                break
            assert page.next.key is not None
            cursor = page.next
        assert found == want
        with pytest.raises(BadInput, match="cursor"):
            scan(store, flt, cursor=Cursor(3))

    def test_scan_all_in_batches(self, store: Store) -> None:
        """scan_all yields every match once, in batches of at most ``batch``."""
        wanted = [dead_task(store, error=TaskError("ConnectionError", "x")) for _ in range(11)]
        dead_task(store, error=TaskError("ValueError", "x"))
        flt = TaskFilter(status=TaskStatus.FAILED, error="ConnectionError")
        batches = list(scan_all(store, flt, batch=4))
        assert [len(b) for b in batches] == [4, 4, 3]
        assert [t.id for b in batches for t in b] == wanted


def test_assets_ship_in_the_package() -> None:
    """The templates and static files are package data (they ship in the wheel)."""
    root = importlib.resources.files("resile.web")
    for name in ("templates/base.html", "static/style.css", "static/live.js"):
        assert (root / name).is_file(), name
