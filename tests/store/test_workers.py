"""The worker registry: part of the Store contract, run against every backend (``conftest.BACKENDS``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resile.queue import Store
from resile.queue.registry import GONE_KEPT, WorkerRecord
from resile.queue.store import open_store

from .conftest import SHARED_BACKENDS, T0, FakeEpoch


def record(worker_id: str = "host:1:ab", at: float = T0, ttl: float = 20.0) -> WorkerRecord:
    return WorkerRecord(
        id=worker_id,
        host="host",
        pid=1,
        mode="thread",
        concurrency=4,
        queues=("mail", "sms"),
        started_at=at,
        beat_at=at,
        expires_at=at + ttl,
    )


class TestRegistry:
    def test_record_list_remove(self, store: Store) -> None:
        """A recorded worker is listed as written; removing it says whether it was there."""
        assert store.workers() == []
        store.record_worker(record())
        assert store.workers() == [record()]
        assert store.remove_worker("host:1:ab") is True
        assert store.remove_worker("host:1:ab") is False
        assert store.workers() == []

    def test_a_beat_replaces_the_record(self, store: Store) -> None:
        """Writing the record again (a heartbeat) replaces it."""
        store.record_worker(record())
        beat = replace(record(), beat_at=T0 + 7, expires_at=T0 + 27, running=3)
        store.record_worker(beat)
        assert store.workers() == [beat]

    def test_gone_workers_are_shown_then_dropped(self, store: Store) -> None:
        """A worker that stopped beating is listed (not alive) until GONE_KEPT later, then dropped."""
        store.record_worker(record("dead", at=T0))
        store.record_worker(record("live", at=T0 + 100))
        dead, live = store.workers()
        assert not dead.alive(T0 + 100) and live.alive(T0 + 100)
        store.record_worker(record("live", at=T0 + 20 + GONE_KEPT + 1))
        assert [w.id for w in store.workers()] == ["live"]

    def test_records_are_sorted_by_id(self, store: Store) -> None:
        """workers() lists by id."""
        for wid in ("c", "a", "b"):
            store.record_worker(record(wid))
        assert [w.id for w in store.workers()] == ["a", "b", "c"]

    def test_every_opener_sees_the_registry(
        self, store: Store, store_url: str, backend: str, clock: FakeEpoch
    ) -> None:
        """A record written through one store object is read through another (another process)."""
        if backend not in SHARED_BACKENDS:
            pytest.skip(f"{backend} is private to one store object")
        with open_store(store_url, clock=clock) as other:
            other.record_worker(record())
        assert [w.id for w in store.workers()] == ["host:1:ab"]


class TestRecord:
    def test_json_round_trip(self) -> None:
        """to_json / from_json give back the same record."""
        rec = replace(record(), running=2, extra={"gpu": "A100"})
        assert WorkerRecord.from_json(rec.to_json()) == rec

    @pytest.mark.parametrize("text", ["", "[]", '{"id": "x"}', "nope"])
    def test_not_a_record(self, text: str) -> None:
        """Text that is not a record is a ValueError naming the type."""
        with pytest.raises(ValueError, match="WorkerRecord: not a worker record"):
            WorkerRecord.from_json(text)

    def test_bad_fields(self) -> None:
        """An empty id or a time that is not a number is refused at construction."""
        with pytest.raises(ValueError, match="id must be a non-empty str"):
            replace(record(), id="")
        with pytest.raises(ValueError, match="expires_at must be epoch seconds"):
            replace(record(), expires_at=float("nan"))
