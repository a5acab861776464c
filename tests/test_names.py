"""resile.queue._names: one home for state and field names, and what checks their use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import resile.queue.store.redis
from _names_check import (
    REDIS_WORDS,
    lua_hash_fields,
    python_strings,
    spelled_states,
    sql_columns,
    unknown_fields,
)
from resile.queue._names import FIELDS, TaskField, TaskStatus
from resile.queue.store._codec import encode_new
from resile.queue.task import Task, TaskSpec

LUA = Path(resile.queue.store.redis.__file__).parent / "lua"


class TestTaskField:
    """The field names."""

    def test_values_are_the_fields(self) -> None:
        """FIELDS is every TaskField value, each once; members compare and hash as their text."""
        assert {f.value for f in TaskField} == FIELDS
        assert len(FIELDS) == len(TaskField)
        assert TaskField.STATUS == "status"
        assert {"status": 1}[TaskField.STATUS] == 1
        assert f"{TaskField.LEASE_OWNER}" == "lease_owner"

    def test_every_task_attribute_is_stored(self) -> None:
        """Each Task attribute has its field (``sequence`` is stored as ``seq``)."""
        stored = {"seq" if f.name == "sequence" else f.name for f in dataclasses.fields(Task)}
        assert stored - FIELDS == set()

    def test_the_codec_writes_defined_fields(self) -> None:
        """A new task's encoded fields are all TaskField values."""
        fields = encode_new(TaskSpec("h", {"a": 1}, resources={"gpu": 1}), "t1", 5.0, 5.0)
        assert set(fields) - FIELDS == set()
        assert fields["status"] == TaskStatus.PENDING.value


@pytest.mark.parametrize("script", sorted(p.name for p in LUA.glob("*.lua")))
def test_lua_names_only_defined_fields(script: str) -> None:
    """Every task-hash field a Lua script reads or writes is a TaskField."""
    assert unknown_fields(lua_hash_fields((LUA / script).read_text("utf-8"))) == set()


def test_lua_spells_no_state() -> None:
    """No Lua script spells a state (or a key shape holding one): they are injected."""
    spelled = {
        p.name: spelled_states(p.read_text("utf-8"), ignore=REDIS_WORDS) for p in LUA.glob("*.lua")
    }
    assert {name: hits for name, hits in spelled.items() if hits} == {}


class TestChecker:
    """The checks themselves catch what they are for."""

    def test_spelled_states(self) -> None:
        """A quoted state, a key shape holding one, or an unknown all-caps word is found."""
        text = "x = 'PENDING' and qkey('s:DONE', q) or 'RUNNING' or 'ok' or \"lost\""
        assert spelled_states(text) == ["'PENDING'", "'s:DONE'", "'RUNNING'"]
        assert spelled_states("redis.call('HSET', k)", ignore={"HSET"}) == []
        assert spelled_states("redis.call('HSET', k, 'FAILED')", ignore={"HSET"}) == ["'FAILED'"]

    def test_python_strings_leave_docstrings_out(self) -> None:
        """Docstrings may name states; code strings and f-string parts are checked."""
        source = '"""PENDING"""\ndef f():\n    """DONE"""\n    return f"a = \'FAILED\' {x}"\n'
        assert python_strings(source) == ["a = 'FAILED' "]

    def test_sql_columns(self) -> None:
        """Columns are the lowercase words, without literals, parameters and tables."""
        query = "SELECT id FROM resile_tasks WHERE statuz = 'x' AND due_at <= :now_at"
        assert sql_columns(query) == {"id", "statuz", "due_at"}
        assert unknown_fields(sql_columns(query)) == {"statuz"}

    def test_lua_hash_fields(self) -> None:
        """Quoted lowercase names inside H* calls are fields; other calls are not looked at."""
        text = "redis.call('HMGET', tkey(id), 'status', 'ownr')\nredis.call('ZADD', k, 'x')"
        assert lua_hash_fields(text) == {"status", "ownr"}
