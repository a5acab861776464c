"""What only the PostgreSQL store does: its URL, schema versions, the hot table, retention,
enqueue in the caller's transaction, LISTEN/NOTIFY wake-ups and their repair, faults.

Everything runs on a real server (the session's throwaway cluster or
``RESILE_TEST_POSTGRES_URL``), each test in a schema of its own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

import resile
from _names_check import python_strings, spelled_states, sql_columns, unknown_fields
from _postgres_server import PostgresServer, drop_schema, free_port
from _proxy import Proxy, through
from _waits import returns_within, wait_for
from resile.errors import StoreUnavailable
from resile.queue import TaskSpec, TaskStatus
from resile.queue._names import FIELDS, TASKS_TABLE, Outcome, Tally
from resile.queue.store import open_store
from resile.queue.store.postgres import SCHEMA_VERSION, PostgresStore, SchemaError
from resile.queue.store.postgres import _sql as pgsql
from resile.queue.store.postgres._maintenance import IndexKeeper, index_sizes, keep_indexes
from resile.queue.worker import Worker

from .conftest import fill_to_count

T0 = 1_700_000_000.0


def spec(**kw: Any) -> TaskSpec:
    kw.setdefault("handler", "h")
    return TaskSpec(**kw)


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(postgres_url, name)


@pytest.fixture
def url(postgres_url: str, schema: str) -> str:
    """The session server's URL on the test's schema."""
    return f"{postgres_url}?schema={schema}"


@pytest.fixture
def stores(url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Open stores on the test's schema (options as keywords); closed afterwards."""
    opened: list[PostgresStore] = []

    def factory(**options: Any) -> PostgresStore:
        s = open_store(url, **options)
        assert isinstance(s, PostgresStore)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


def raw(url: str) -> psycopg.Connection[Any]:
    """A plain autocommit connection to the server (no resile)."""
    return psycopg.connect(url.split("?")[0], autocommit=True)


def vacuum_count(url: str, schema: str) -> int:
    """How many times the hot table of ``schema`` was vacuumed by hand (not by autovacuum)."""
    with raw(url) as c:
        row = c.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            (schema, TASKS_TABLE),
        ).fetchone()
    return int(row[0]) if row else 0


def count(url: str, schema: str, table: str) -> int:
    with raw(url) as c:
        row = c.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()
    assert row is not None
    return int(row[0])


class TestUrl:
    """The URL and its options."""

    def test_both_schemes_open_a_postgres_store(self, postgres_url: str, schema: str) -> None:
        """postgresql:// and postgres:// both open the store; resile.connect takes them."""
        alt = postgres_url.replace("postgresql://", "postgres://", 1)
        for u in (postgres_url, alt):
            q = resile.connect(f"{u}?schema={schema}")
            try:
                assert isinstance(q.store, PostgresStore)
            finally:
                q.close()

    def test_options_reach_the_store_and_libpq(self, stores: Callable[..., PostgresStore]) -> None:
        """resile's options are read; the others (application_name) go to libpq."""
        s = stores()
        assert s.listen and s.retention == 7 * 24 * 3600.0 and s.failed_retention is None
        u = s.url.replace("***", "x")  # the URL as shown: password hidden
        assert "***" in s.url and "x" in u

    def test_option_values(self, url: str) -> None:
        """listen, retention and failed_retention are parsed; application_name passes through."""
        s = open_store(
            f"{url}&listen=false&retention=60&failed_retention=none&application_name=resile-test"
        )
        try:
            assert isinstance(s, PostgresStore)
            assert (s.listen, s.retention, s.failed_retention) == (False, 60.0, None)
            with s._db.connect() as c:
                row = c.execute("SHOW application_name").fetchone()
            assert row == {"application_name": "resile-test"}
        finally:
            s.close()

    @pytest.mark.parametrize(
        ("query", "match"),
        [
            ("listen=maybe", "listen must be true or false, got 'maybe'"),
            ("reindex=sometimes", "reindex must be true or false, got 'sometimes'"),
            ("retention=soon", "retention must be seconds, got 'soon'"),
            ("pool_size=0", "pool_size must be an int >= 1, got 0"),
            ("schema=Bad-Name", "schema must be a lower-case identifier"),
        ],
    )
    def test_bad_options_are_named(self, url: str, query: str, match: str) -> None:
        """A bad option value fails naming the option and the value."""
        with pytest.raises(ValueError, match=match):
            open_store(f"{url}&{query}")

    def test_unreachable_server_is_one_clear_line_fast(self) -> None:
        """Nothing listening: ConnectionError naming the server (password hidden) within 5 s."""
        port = free_port()
        start = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            open_store(f"postgresql://u:secret@127.0.0.1:{port}/db")
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "secret" not in message
        assert "\n" not in message

    def test_wrong_password_is_one_clear_line(self, postgres_url: str) -> None:
        """A refused login is a ConnectionError saying why."""
        bad = postgres_url.replace("://resile:", "://resile:wrong", 1)
        if bad == postgres_url:
            pytest.skip("RESILE_TEST_POSTGRES_URL has another user")
        with pytest.raises(ConnectionError, match="password authentication failed"):
            open_store(bad)


class TestSchema:
    """The schema is versioned, created on open, refused when newer."""

    def test_created_with_its_version(self, stores: Callable[..., PostgresStore]) -> None:
        """Opening creates the tables and stores SCHEMA_VERSION."""
        s = stores()
        assert s.schema_version() == SCHEMA_VERSION == pgsql.SCHEMA_VERSION

    def test_a_newer_schema_is_refused(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A schema written by a newer resile is refused with a clear SchemaError."""
        stores().close()
        with raw(url) as c:
            c.execute(f"UPDATE {schema}.resile_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(SchemaError, match="version 99, newer than this resile"):
            open_store(url)

    def test_migrate_false_refuses_a_missing_schema(self, url: str) -> None:
        """With migrate=false an empty database is refused, pointing at `resile migrate`."""
        with pytest.raises(SchemaError, match="resile migrate"):
            open_store(f"{url}&migrate=false")

    def test_a_version_1_schema_is_migrated(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A schema made before traceparent, the counters and the counts gets them on open,
        tasks kept and counted once."""
        first = stores()
        expected = fill_to_count(first)
        task = first.list(queue="q")[0]
        first.close()
        with raw(url) as c:
            for table in (TASKS_TABLE, pgsql.FINISHED_TABLE):
                c.execute(f"ALTER TABLE {schema}.{table} DROP COLUMN traceparent")
            c.execute(f"DROP TABLE {schema}.resile_tallies")
            c.execute(f"DROP TABLE {schema}.resile_counts")
            c.execute(f"UPDATE {schema}.resile_meta SET value = '1' WHERE key = 'schema_version'")
        s = stores()
        assert s.schema_version() == SCHEMA_VERSION == 4
        assert s.counts() == expected
        got = s.get(task.id)
        assert got is not None and got.traceparent is None
        made = s.create(
            TaskSpec(handler="h", queue="q", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        )
        assert s.get(made.id) == made
        (leased,) = s.lease("q", "w", now=time.time() + 1)
        assert s.complete(leased.id, "w") is not None
        assert sum(c[Tally.DONE] for c in s.tallies(since=0).values()) == 1

    def test_a_version_3_schema_loses_its_count_triggers_and_is_counted_again(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """Version 3 counted through triggers: the migration drops them (the statements
        count now, and a trigger would count twice) and counts the tasks afresh."""
        first = stores()
        expected = fill_to_count(first)
        first.close()
        with raw(url) as c:
            c.execute(
                f"CREATE FUNCTION {schema}.resile_counts_moved() RETURNS trigger"
                " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
            )
            c.execute(
                f"CREATE TRIGGER resile_tasks_count_update AFTER UPDATE ON {schema}.resile_tasks"
                f" FOR EACH ROW EXECUTE FUNCTION {schema}.resile_counts_moved()"
            )
            c.execute(f"UPDATE {schema}.resile_counts SET n = n + 5")  # drifted
            c.execute(f"UPDATE {schema}.resile_meta SET value = '3' WHERE key = 'schema_version'")
        s = stores()
        assert s.schema_version() == 4
        assert s.counts() == expected
        with raw(url) as c:
            found = c.execute(
                "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal"
                " AND tgrelid = ANY(ARRAY[%s::REGCLASS, %s::REGCLASS])",
                (f"{schema}.resile_tasks", f"{schema}.resile_finished"),
            ).fetchone()
        assert found is not None and found[0] == 0

    def test_concurrent_opens_create_it_once(self, url: str) -> None:
        """Several processes' first opens at once: the advisory lock lets one create it."""
        errors: list[BaseException] = []
        opened: list[PostgresStore] = []

        def open_one() -> None:
            try:
                s = open_store(url)
                assert isinstance(s, PostgresStore)
                opened.append(s)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in opened:
            s.close()
        assert errors == [] and len(opened) == 4

    def test_tables_have_exactly_defined_fields(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """Both tables' columns are TaskField values."""
        stores()
        with raw(url) as c:
            for table in (TASKS_TABLE, pgsql.FINISHED_TABLE):
                cols = {
                    r[0]
                    for r in c.execute(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = %s AND table_name = %s",
                        (schema, table),
                    )
                }
                assert cols == set(pgsql.COLUMNS) and cols <= FIELDS

    def test_sql_spells_no_state_and_only_defined_columns(self) -> None:
        """The SQL module gets states injected, and every column it names is a TaskField."""
        source = Path(pgsql.__file__).read_text("utf-8")
        assert [h for t in python_strings(source) for h in spelled_states(t)] == []
        q = pgsql.Queries("s")
        texts = [v for v in vars(q).values() if isinstance(v, str) and " " in v]
        texts += list(q.SET_FIELD.values())
        # Names that are not columns: parameters, the schema ``s.``, and local aliases.
        aliases = {
            "v",
            "r",
            "t",
            "q",
            "name",
            "ins",
            "moved",
            "upd",
            "tal",
            "note",
            "ord",
            "found",
            "n",
            # the pipelined lease's checks and steps, the counters' rows
            "expired",
            "gated",
            "open",
            "pick",
            "leased",
            "k",
            "c",
            "cnt",
            "d",
            "gone",
            "shard",
            pgsql.FINISHED_TABLE,
            pgsql.SEQUENCE,
            # the catalog the live-row estimate is read from
            "pg_class",
            "oid",
            "reltuples",
            # the catalog the index sizes are read from, the rebuilders' advisory lock
            *("pg_index", "pg_attribute", "pg_stats", "pg_relation_size", "i", "a", "st"),
            *("relname", "indexrelid", "indrelid", "indisvalid", "indkey", "attrelid"),
            *("attnum", "attlen", "attname", "avg_width", "schemaname", "tablename"),
            *("size", "entries", "valid", "key_bytes"),
            *("got", "hashtext", "pg_try_advisory_lock", "pg_advisory_unlock"),
        }
        for text in texts:
            if text is q.SCHEMA:
                continue
            bare = re.sub(r"%\(\w+\)s|\bs\.(?=\w)|\bnew_|\bwas_", " ", text)
            assert unknown_fields(sql_columns(bare)) - aliases == set(), text


class TestRoundTrips:
    """The worker's hot calls take as few round trips as they can."""

    def test_a_retry_of_a_task_this_store_leased_is_one_statement(
        self, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """fail() of a task leased through this store retries it without a transaction."""
        s = stores()
        s.create(spec(max_retries=3))
        (task,) = s.lease("default", "w")

        def no_transaction(*a: Any, **k: Any) -> Any:
            raise AssertionError("fail() opened a transaction")

        monkeypatch.setattr(s._db, "tx", no_transaction)
        after = s.fail(task.id, "w", RuntimeError("boom"), now=T0)
        assert after is not None and after.status is TaskStatus.PENDING
        assert after.attempts == 1 and len(after.history) == 1
        assert after.last_error is not None and "boom" in after.last_error.message
        monkeypatch.undo()
        counted = s.tallies(since=T0 - 60, until=T0 + 60)
        assert sum(c.get(Tally.RETRIED, 0) for c in counted.values()) == 1

    def test_a_task_no_longer_held_takes_the_locked_path(
        self, stores: Callable[..., PostgresStore]
    ) -> None:
        """A lease that lapsed and went to another worker: the old holder's fail is refused."""
        s = stores()
        s.create(spec(max_retries=3), now=T0)
        (task,) = s.lease("default", "w1", lease_seconds=1, now=T0)
        (again,) = stores().lease("default", "w2", now=T0 + 5)
        assert again.id == task.id
        assert s.fail(task.id, "w1", RuntimeError("late"), now=T0 + 6) is None
        assert s.get(task.id).lease_owner == "w2"  # type: ignore[union-attr]

    def test_complete_then_lease_of_tasks_this_store_leased_is_one_pipeline(
        self, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The worker's call goes without a locked transaction, and counts what it did."""
        s = stores()
        s.create_many([spec() for _ in range(4)], now=T0)
        first = s.lease("default", "w", limit=2, now=T0)

        def no_transaction(*a: Any, **k: Any) -> Any:
            raise AssertionError("complete_then_lease opened a transaction")

        monkeypatch.setattr(s._db, "tx", no_transaction)
        items = [(t.id, {"n": 1}) for t in first] + [(first[0].id, None)]  # a repeat: once
        flags, more = s.complete_then_lease(items, "default", "w", limit=5, now=T0 + 1)
        monkeypatch.undo()
        assert flags == [True, True, False] and len(more) == 2
        assert all(t.attempts == 1 and t.lease_owner == "w" for t in more)
        done = s.get(first[0].id)
        assert done is not None and done.status is TaskStatus.DONE and done.result == {"n": 1}
        assert len(done.history) == 1 and done.history[0].outcome is Outcome.OK
        assert s.stats()[TaskStatus.DONE] == 2 and s.stats()[TaskStatus.DOING] == 2
        counted = s.tallies(since=T0 - 60, until=T0 + 60)
        assert sum(c.get(Tally.DONE, 0) for c in counted.values()) == 2

    def test_a_completion_of_a_task_no_longer_held_is_refused_in_the_pipeline(
        self, stores: Callable[..., PostgresStore]
    ) -> None:
        """The lease lapsed and went to another worker: the old holder's completion is not
        written, and the lapsed lease's reclaim goes through the locked path."""
        s = stores()
        s.create(spec(max_retries=3), now=T0)
        (task,) = s.lease("default", "w1", lease_seconds=1, now=T0)
        (again,) = stores().lease("default", "w2", now=T0 + 5)
        assert again.id == task.id
        flags, _ = s.complete_then_lease([(task.id, None)], "default", "w1", now=T0 + 6)
        assert flags == [False]
        got = s.get(task.id)
        assert got is not None and got.lease_owner == "w2" and got.status is TaskStatus.DOING

    def test_a_corrupt_task_the_pipelined_lease_took_is_dead_lettered_unleased(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A row that cannot be decoded goes to FAILED with the reason, as it was before the
        lease (attempts, owner), and nothing stored is thrown away; the next one is leased."""
        s = stores()
        s.create(TaskSpec("h", {"a": 1}, id="bad"), now=T0)
        s.create(TaskSpec("h", {"a": 2}, id="good"), now=T0)
        with raw(url) as c:
            c.execute(f"UPDATE {schema}.resile_tasks SET params = '{{not json' WHERE id = 'bad'")
        got = s.lease("default", "w", limit=5, now=T0)
        assert [t.id for t in got] == ["good"]
        bad = s.get("bad")
        assert bad is not None and bad.status is TaskStatus.FAILED
        assert bad.attempts == 0 and bad.lease_owner is None and bad.started_at is None
        assert bad.last_error is not None and bad.last_error.type == "CorruptTask"
        assert "'params'" in bad.last_error.message
        with raw(url) as c:
            kept = c.execute(f"SELECT params FROM {schema}.resile_finished WHERE id = 'bad'")
            assert kept.fetchone() == ("{not json",)
        assert s.stats()[TaskStatus.FAILED] == 1 and s.stats()[TaskStatus.DOING] == 1

    def test_next_due_at_needs_no_transaction(
        self, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """next_due_at reads without BEGIN / COMMIT (a hint for the worker's timer)."""
        s = stores()
        s.create(spec(delay=30), now=T0)

        def no_transaction(*a: Any, **k: Any) -> Any:
            raise AssertionError("next_due_at opened a transaction")

        monkeypatch.setattr(s._db, "tx", no_transaction)
        assert s.next_due_at(["default"]) == pytest.approx(T0 + 30)


class TestHotTable:
    """Finished tasks leave the hot table; retention prunes them in batches."""

    def test_finished_tasks_move_out_and_requeue_moves_back(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """DONE, FAILED and CANCELED rows live in the finished table only; requeue brings one back."""
        s = stores()
        for i in range(4):
            s.create(spec(id=f"t{i}", max_retries=0), now=T0)
        a, b, *_ = s.lease("default", "w", limit=2, now=T0)
        s.complete(a.id, "w", 1, now=T0)
        s.fail(b.id, "w", ValueError("x"), now=T0)
        s.cancel("t2", now=T0)
        assert count(url, schema, TASKS_TABLE) == 1
        assert count(url, schema, pgsql.FINISHED_TABLE) == 3
        assert s.stats()[TaskStatus.DONE] == 1 and s.get(a.id).status == TaskStatus.DONE  # type: ignore[union-attr]
        back = s.requeue(b.id, now=T0)
        assert back is not None and back.status == TaskStatus.PENDING
        assert count(url, schema, TASKS_TABLE) == 2
        assert [t.id for t in s.list()] == ["t0", "t1", "t2", "t3"]

    def test_retention_per_outcome(self, stores: Callable[..., PostgresStore]) -> None:
        """prune() drops DONE/CANCELED past retention and FAILED past failed_retention only."""
        s = stores(retention=10.0, failed_retention=100.0)
        for i in range(3):
            s.create(spec(id=f"t{i}", max_retries=0), now=T0)
        got = s.lease("default", "w", limit=2, now=T0)
        s.complete(got[0].id, "w", now=T0)
        s.fail(got[1].id, "w", ValueError("x"), now=T0)
        s.cancel("t2", now=T0)
        assert s.prune(now=T0 + 5) == 0
        assert s.prune(now=T0 + 11) == 2
        assert [t.status for t in s.list()] == [TaskStatus.FAILED]
        assert s.prune(now=T0 + 101) == 1 and s.list() == []

    def test_purge_in_batches_deletes_them_all(self, stores: Callable[..., PostgresStore]) -> None:
        """A purge larger than one batch deletes every match (several short transactions)."""
        s = stores(retention=None)
        s.create_many([spec(id=f"t{i}") for i in range(1500)], now=T0)
        leased = s.lease("default", "w", limit=1500, now=T0)
        assert all(s.complete_many_flags([(t.id, None) for t in leased], "w", now=T0))
        assert s.purge(0, now=T0 + 1) == 1500
        assert s.stats()[TaskStatus.DONE] == 0

    def test_the_store_vacuums_its_hot_table_while_tasks_complete(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """With vacuum_every, completing tasks vacuums the hot table (autovacuum is too slow)."""
        s = stores(vacuum_every=0.01)
        s.create_many([spec() for _ in range(400)])

        def complete_some() -> bool:
            for t in s.lease("default", "w", limit=2):
                s.complete(t.id, "w")
            return vacuum_count(url, schema) > 0

        wait_for(complete_some, 15, "a vacuum of the hot table", step=0.05)
        assert stores(vacuum_every=None).vacuum_every is None

    def test_churn_makes_a_vacuum_due_before_vacuum_every(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """Finishing 200 tasks vacuums the hot table long before vacuum_every has passed."""
        s = stores(vacuum_every=3600)
        s.create_many([spec() for _ in range(250)])

        leased = s.lease("default", "w", limit=199)
        assert all(s.complete_many_flags([(t.id, None) for t in leased], "w"))
        assert vacuum_count(url, schema) == 0  # 199 finished: not due yet
        (last,) = s.lease("default", "w", limit=1)
        assert s.complete(last.id, "w") is not None
        wait_for(
            lambda: vacuum_count(url, schema) > 0,
            15,
            "a vacuum of the hot table after 200 finished",
        )

    def test_a_bloated_index_is_rebuilt_smaller_and_leftovers_dropped(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """keep_indexes drops an INVALID *_ccnew, then REINDEXes the most bloated index (VALID)."""
        s = stores(vacuum_every=None)
        assert s.reindex and stores(reindex="false")._indexes is None
        s.create_many([spec() for _ in range(3000)])
        hot = f"{schema}.{TASKS_TABLE}"
        with raw(url) as c:
            c.execute(f"DELETE FROM {hot} WHERE seq > 30")
            c.execute(f"VACUUM (INDEX_CLEANUP ON) {hot}")
            with pytest.raises(psycopg.errors.UniqueViolation):  # leaves it INVALID
                c.execute(
                    f"CREATE UNIQUE INDEX CONCURRENTLY {TASKS_TABLE}_id_ccnew ON {hot} (queue)"
                )
        with s._db.connect() as conn:
            before = {ix.name: ix for ix in index_sizes(conn, s.q)}
            assert not before[f"{TASKS_TABLE}_id_ccnew"].valid
            rebuilt = keep_indexes(conn, s.q, ratio=1.5, floor=0)
            after = {ix.name: ix for ix in index_sizes(conn, s.q)}
        assert f"{TASKS_TABLE}_id_ccnew" not in after
        assert rebuilt in (f"{TASKS_TABLE}_id_key", f"{TASKS_TABLE}_pkey")
        assert after[rebuilt].valid and after[rebuilt].size < before[rebuilt].size
        assert after[rebuilt].size <= 1.5 * after[rebuilt].live

    def test_a_failing_rebuild_round_is_logged_once_never_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """IndexKeeper waits ``every`` between rounds; a failed round warns once, then debugs."""
        now = [0.0]
        dead = f"postgresql://u:p@127.0.0.1:{free_port()}/db?connect_timeout=1"
        keeper = IndexKeeper(
            lambda: psycopg.connect(dead, autocommit=True), pgsql.Queries("s"), clock=lambda: now[0]
        )
        caplog.set_level(logging.DEBUG, logger="resile.queue")
        assert keeper.after_vacuum() is None and caplog.records == []  # not due yet: no connect
        for _ in range(2):
            now[0] += keeper.every
            assert keeper.after_vacuum() is None
        assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]
        assert "REINDEX of s.resile_tasks's indexes failed" in caplog.records[0].getMessage()

    def test_partial_indexes_on_live_states(self, url: str, schema: str) -> None:
        """The hot table's lease indexes are partial on the live states; autovacuum is tuned."""
        PostgresStore(url.split("?")[0], schema=schema).close()
        with raw(url) as c:
            defs = [
                r[0]
                for r in c.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                    (schema, TASKS_TABLE),
                )
            ]
            opts = c.execute(
                "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                (f"{schema}.{TASKS_TABLE}",),
            ).fetchone()
        assert any("WHERE (status = 'PENDING'::text)" in d and "priority" in d for d in defs)
        assert any("WHERE (status = 'DOING'::text)" in d for d in defs)
        assert opts is not None and "fillfactor=70" in opts[0]
        assert "autovacuum_vacuum_scale_factor=0.02" in opts[0]


class TestTransactionalEnqueue:
    """create(connection=...) writes in the caller's transaction: the outbox pattern."""

    def test_commit_keeps_the_task_rollback_drops_it(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A task created in a transaction that rolls back never existed; a committed one does."""
        s = stores()
        with psycopg.connect(url.split("?")[0]) as conn:
            s.create(spec(id="kept"), connection=conn)
            assert s.get("kept") is None  # not visible before the caller commits
            conn.commit()
            s.create(spec(id="dropped"), connection=conn)
            conn.rollback()
        assert s.get("kept") is not None and s.get("dropped") is None

    def test_inside_an_explicit_transaction_with_a_business_write(
        self, url: str, schema: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """The business row and the task commit together, or fail together."""
        s = stores()
        with raw(url) as c:
            c.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY)")
        with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
            with conn.transaction():
                conn.execute(f"INSERT INTO {schema}.orders VALUES (1)")
                s.create(spec(id="mail-1", params={"order": 1}), connection=conn)
            with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                s.create(spec(id="mail-2"), connection=conn)
                conn.execute(f"INSERT INTO {schema}.orders VALUES (1)")
        assert s.get("mail-1") is not None and s.get("mail-2") is None

    def test_the_notification_goes_out_at_commit(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A watcher is woken by the caller's commit, not by the uncommitted create."""
        s = stores()
        woke = threading.Event()
        stop = s.watch(["default"], woke.set)
        assert stop is not None
        try:
            woke.clear()
            with psycopg.connect(url.split("?")[0]) as conn:
                s2 = stores()  # another store: its in-process listeners do not reach ``s``
                s2.create(spec(id="x"), connection=conn)
                assert not woke.wait(0.5)
                conn.commit()
                assert woke.wait(5)
        finally:
            stop()

    def test_wrong_connection_type(self, stores: Callable[..., PostgresStore]) -> None:
        """A connection that is not psycopg's is refused, naming the type."""
        with pytest.raises(TypeError, match=r"psycopg\.Connection, got str"):
            stores().create(spec(), connection="conn")  # type: ignore[arg-type]

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_async_commit_and_rollback(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """create_async(connection=AsyncConnection): kept on commit, gone on rollback."""
        s = stores()
        conn = await psycopg.AsyncConnection.connect(url.split("?")[0])
        try:
            await s.create_async(spec(id="kept"), connection=conn)
            await conn.commit()
            await s.create_many_async([spec(id="dropped")], connection=conn)
            await conn.rollback()
        finally:
            await conn.close()
        assert s.get("kept") is not None and s.get("dropped") is None


class TestWakeUps:
    """LISTEN/NOTIFY: new and rescheduled work wakes idle workers; a lost LISTEN is repaired."""

    def test_create_and_retry_notify_with_the_due_time(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """The payload names the queue and the due time, for a create and for a retry."""
        s = stores()
        with raw(url) as listener:
            listener.execute(f'LISTEN "{s.q.channel}"')
            s.create(spec(id="a", queue="mail", delay=30), now=T0)
            (task,) = s.lease("mail", "w", now=T0 + 30)
            s.fail(task.id, "w", ValueError("x"), delay=5, now=T0 + 31)
            notes = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
        assert notes == ['{"q":["mail"],"due":1700000030.0}', '{"q":["mail"],"due":1700000036.0}']

    def test_other_queues_do_not_wake(self, stores: Callable[..., PostgresStore]) -> None:
        """A watcher of queue a is not woken by work on queue b, and is by work on a."""
        s, other = stores(), stores()
        woke = threading.Event()
        stop = s.watch(["a"], woke.set)
        assert stop is not None
        try:
            other.create(spec(queue="b"))
            assert not woke.wait(0.5)
            other.create(spec(queue="a"))
            assert woke.wait(5)
        finally:
            stop()

    def test_listen_false_is_poll_only(self, stores: Callable[..., PostgresStore]) -> None:
        """listen=false (PgBouncer transaction pooling): watch returns None, workers poll,
        and psycopg prepares no statement server-side."""
        s = stores(listen=False)
        assert s.watch(["default"], lambda: None) is None
        with s._db._pool.connection() as conn:
            assert conn.prepare_threshold is None

    def test_a_killed_listen_connection_is_repaired_within_a_second(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """pg_terminate_backend on the LISTEN connection: listening again within 1 s, and
        notifications reach the watcher afterwards."""
        s = stores()
        woke = threading.Event()
        stop = s.watch(["default"], woke.set)
        assert stop is not None
        watcher = s._watchers[0]
        try:
            with raw(url) as c:
                killed = c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
                ).fetchall()
            assert killed
            start = time.monotonic()
            wait_for(lambda: watcher.connects >= 2 and watcher.listening.is_set(), 5, "relisten")
            assert time.monotonic() - start < 1.0
            woke.clear()
            stores().create(spec())
            assert woke.wait(5)
        finally:
            stop()

    def test_a_notification_wakes_at_once_not_at_the_end_of_the_listen_wait(
        self, stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The watcher wakes as a notification arrives, not when its wait for more ends."""
        from resile.queue.store.postgres._watch import Watcher

        monkeypatch.setattr(Watcher, "TICK", 60.0)
        s = stores()
        woke = threading.Event()
        stop = s.watch(["default"], woke.set)
        assert stop is not None
        try:
            wait_for(lambda: s._watchers[0].listening.is_set(), 5, "listening")
            woke.clear()
            stores().create(spec())
            assert woke.wait(10)  # 60 s (TICK) when the wake waited for the wait's end
        finally:
            monkeypatch.setattr(Watcher, "TICK", 0.2)  # stop() joins within 10 TICKs
            stop()

    def test_an_idle_worker_wakes_on_another_processes_task(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """A worker that never polls (poll_interval=None) runs a task created by another store."""
        queue = resile.connect(url)
        ran = threading.Event()

        @queue.task(name="ping")
        def ping() -> str:
            ran.set()
            return "pong"

        worker = Worker(queue, poll_interval=None, concurrency=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: bool(queue.store._watchers), 10, "the worker to watch")  # type: ignore[attr-defined]
            other = stores()
            other.create(spec(handler="ping"))
            assert ran.wait(10)
        finally:
            worker.stop()
            thread.join(10)
            queue.close()


class TestFaults:
    """Connections killed mid-run, a statement timeout, a server restart."""

    def test_killed_pool_connections_are_replaced(
        self, url: str, stores: Callable[..., PostgresStore]
    ) -> None:
        """pg_terminate_backend on every pooled connection: the next call still works."""
        s = stores(listen=False)
        s.create(spec(id="a"), now=T0)
        with raw(url) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            )
        (task,) = s.lease("default", "w", now=T0)
        assert task.id == "a" and s.complete("a", "w", now=T0) is not None

    def test_a_statement_timeout_is_a_clear_error_and_the_store_goes_on(
        self, url: str, schema: str, request: pytest.FixtureRequest
    ) -> None:
        """Blocked past statement_timeout (a lock held elsewhere): StoreUnavailable (its cause
        QueryCanceled) once retry_for runs out; the store works again when the lock goes."""
        s = open_store(f"{url}&retry_for=0.3&options=-c%20statement_timeout%3D100")
        request.addfinalizer(s.close)
        s.create(spec(id="a"), now=T0)
        with raw(url) as blocker:
            blocker.execute("BEGIN")
            blocker.execute(f"LOCK TABLE {schema}.{TASKS_TABLE} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable, match="statement timeout") as got:
                s.lease("default", "w", now=T0)
            assert isinstance(got.value.__cause__, psycopg.errors.QueryCanceled)
            assert "held the rows or the table" in str(got.value)
            blocker.execute("ROLLBACK")
        assert [t.id for t in s.lease("default", "w", now=T0)] == ["a"]

    @pytest.mark.slow
    def test_server_restart_mid_run(self, postgres_server: PostgresServer | None) -> None:
        """A restart while a worker runs: it reconnects, LISTEN comes back, nothing is lost."""
        if postgres_server is None:
            pytest.skip("RESILE_TEST_POSTGRES_URL: the shared server is not ours to restart")
        url = f"{postgres_server.url}?schema=restart_{uuid.uuid4().hex[:8]}"
        queue = resile.connect(url)
        done: set[int] = set()

        @queue.task(name="mark")
        def mark(i: int) -> None:
            done.add(i)

        producer = open_store(url)
        worker = Worker(queue, poll_interval=None, concurrency=2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: bool(queue.store._watchers), 10, "the worker to watch")  # type: ignore[attr-defined]
            watcher = queue.store._watchers[0]  # type: ignore[attr-defined]
            for i in range(20):
                producer.create(spec(handler="mark", params={"i": i}))
            postgres_server.restart()
            for i in range(20, 40):
                producer.create(spec(handler="mark", params={"i": i}))
            wait_for(lambda: len(done) == 40, 30, "every task to run")
            assert watcher.connects >= 2 and watcher.listening.is_set()
        finally:
            worker.stop()
            thread.join(15)
            producer.close()
            queue.close()
            drop_schema(postgres_server.url, url.split("schema=")[1])


class TestSilentAndFrozen:
    """A connection that goes silent, a client frozen inside a transaction (issue 14)."""

    def test_a_silent_connection_is_dropped_and_the_call_run_again(
        self, postgres_url: str, schema: str
    ) -> None:
        """A pooled connection open but silent (a black-holed path): after read_timeout the store drops it and the call succeeds on a fresh one."""
        port = urlsplit(postgres_url).port
        assert port is not None
        proxy = Proxy(port)
        url = through(postgres_url, proxy) + f"?schema={schema}&read_timeout=0.5&pool_size=1"
        s = open_store(url, listen=False)
        try:
            s.create(spec(id="a"), now=T0)
            assert proxy.silence() >= 1
            start = time.monotonic()
            task = returns_within(lambda: s.get("a"), 10, "get on a silent connection")
            assert task is not None and task.id == "a"
            assert time.monotonic() - start >= 0.4  # it waited for the timeout, then retried
        finally:
            s.close()
            proxy.close()

    def test_a_frozen_transaction_loses_its_locks_and_cannot_commit(
        self, stores: Callable[..., PostgresStore], schema: str
    ) -> None:
        """A session idle in a transaction holding a task's row lock is ended after idle_timeout: the others' writes go on, and it cannot commit after."""
        s = stores(idle_timeout=0.5)
        s.create(spec(id="a"), now=T0)
        (task,) = s.lease("default", "w", now=T0)
        frozen = s._db.connect()  # a session with the store's own settings
        frozen.execute("BEGIN")
        frozen.execute(f"SELECT 1 FROM {schema}.{TASKS_TABLE} WHERE id = 'a' FOR UPDATE")
        done = returns_within(lambda: s.complete("a", "w", now=T0 + 1), 10, "complete")
        assert done is not None and done.status is TaskStatus.DONE
        ended = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)
        with pytest.raises(ended):
            frozen.execute(f"UPDATE {schema}.{TASKS_TABLE} SET attempts = 99")
            frozen.execute("COMMIT")
        frozen.close()
        got = s.get("a")
        assert got is not None and got.attempts == task.attempts
