"""resile.queue.store._codec: one encoding of a task, for SQLite rows and Redis hashes alike."""

from __future__ import annotations

import json
from typing import Any

import pytest

from resile.backoff import Exponential
from resile.queue._names import FIELDS, HISTORY_LIMIT, Outcome, TaskStatus
from resile.queue.store import _codec
from resile.queue.store._codec import (
    CorruptField,
    created_task,
    decode,
    encode_error,
    encode_new,
    has_needs,
    history_with,
)
from resile.queue.task import AttemptRecord, TaskError, TaskSpec

NOW = 1_700_000_000.0


def stored(**changes: Any) -> dict[str, Any]:
    """The fields of a new task as SQLite holds them (numbers as numbers), with changes."""
    spec = TaskSpec("h", {"a": 1}, backoff=Exponential(1.0), resources={"gpu": 2})
    fields = encode_new(spec, "t1", NOW + 5, NOW)
    fields.update(seq=7, history="[]", progress=0.0)
    fields.update(changes)
    return fields


def as_redis(fields: dict[str, Any]) -> dict[str, str]:
    """The same fields as a Redis hash holds them: text, unset fields absent."""
    return {
        k: repr(v) if isinstance(v, float) else str(v) for k, v in fields.items() if v is not None
    }


class TestRoundTrip:
    """encode_new then decode gives the task created_task describes."""

    @pytest.mark.parametrize("shape", [dict, as_redis])
    def test_new_task(self, shape: Any) -> None:
        """SQLite-shaped and Redis-shaped fields decode to the created task."""
        spec = TaskSpec("h", {"a": 1}, backoff=Exponential(1.0), resources={"gpu": 2})
        task = decode(shape(stored()))
        assert task == created_task(spec, "t1", 7, NOW + 5, NOW)
        assert task.status is TaskStatus.PENDING and task.sequence == 7

    def test_encoded_fields(self) -> None:
        """A new task's JSON fields are compact text and every name is a TaskField."""
        fields = stored()
        assert set(fields) <= FIELDS
        assert fields["params"] == '{"a":1}' and json.loads(fields["backoff"])["type"] == (
            "exponential"
        )
        assert has_needs({"gpu": 2}) and not has_needs({"gpu": 0}) and not has_needs({})

    def test_structured_fields(self) -> None:
        """Error, history, checkpoint and result come back as values."""
        err = TaskError("E", "m", "tb")
        entry = AttemptRecord(1, NOW, NOW + 1, Outcome.ERROR, err)
        task = decode(
            stored(
                last_error=encode_error(err),
                history=history_with("[]", entry),
                checkpoint='{"step": 3}',
                result="[1, 2]",
                lease_owner="",
                last_delay="",
            )
        )
        assert task.last_error == err and task.history == (entry,)
        assert task.checkpoint == {"step": 3} and task.result == [1, 2]
        assert task.lease_owner is None and task.last_delay is None

    def test_literals_are_fresh_objects(self) -> None:
        """Two tasks decoded from "{}" never share a params dict."""
        a, b = decode(stored(params="{}")), decode(stored(params="{}"))
        a.params["x"] = 1
        assert b.params == {}


class TestCorrupt:
    """Strict decoding refuses a bad field; lenient decoding gives its default."""

    @pytest.mark.parametrize(
        ("field", "value", "default"),
        [
            ("params", "{not json", {}),
            ("params", "[1, 2]", {}),
            ("history", "{{", ()),
            ("history", '[{"attempt": 1}]', ()),
            ("resources", '"x"', {}),
            ("resources", '{"gpu": "lots"}', {}),
            ("checkpoint", "{oops", None),
        ],
    )
    def test_strict_and_lenient(self, field: str, value: str, default: Any) -> None:
        """strict raises CorruptField naming the field; lenient reads the default."""
        with pytest.raises(CorruptField, match=repr(field)) as info:
            decode(stored(**{field: value}), strict=True)
        assert info.value.field == field
        assert getattr(decode(stored(**{field: value}), strict=False), field) == default

    @pytest.mark.parametrize(
        ("changes", "field"),
        [({"status": "RUNNING"}, "status"), ({"priority": "high"}, "?")],
    )
    def test_always_refused(self, changes: dict[str, Any], field: str) -> None:
        """An unknown status or a malformed required field fails in both modes."""
        for strict in (True, False):
            with pytest.raises(CorruptField) as info:
                decode(stored(**changes), strict=strict)
            assert info.value.field == field

    def test_missing_required_field(self) -> None:
        """A missing required field is named."""
        fields = stored()
        del fields["handler"]
        with pytest.raises(CorruptField, match="'handler': missing"):
            decode(fields, strict=False)


class TestHistory:
    """Appending a history entry."""

    def test_cut_to_the_limit(self) -> None:
        """The stored history keeps the last HISTORY_LIMIT entries."""
        history = "[]"
        for n in range(1, HISTORY_LIMIT + 3):
            history = history_with(history, AttemptRecord(n, None, NOW, Outcome.OK)) or ""
        items = json.loads(history)
        assert len(items) == HISTORY_LIMIT and items[-1]["attempt"] == HISTORY_LIMIT + 2

    @pytest.mark.parametrize("bad", ["{{", '{"a": 1}'])
    def test_unreadable_history_is_left_alone(self, bad: str) -> None:
        """An unreadable stored history gives None: the caller keeps what is stored."""
        assert history_with(bad, AttemptRecord(1, None, NOW, Outcome.OK)) is None

    def test_unset_history(self) -> None:
        """No stored history starts a new one."""
        out = history_with(None, AttemptRecord(1, None, NOW, Outcome.OK))
        assert out is not None and len(json.loads(out)) == 1


def test_api_is_stable() -> None:
    """The codec's names, which every backend builds on, do not drift unnoticed."""
    assert sorted(_codec.__all__) == [
        "CorruptField",
        "created_task",
        "decode",
        "encode_error",
        "encode_new",
        "has_needs",
        "history_with",
        "load_json",
    ]
    assert all(hasattr(_codec, name) for name in _codec.__all__)
