"""Checks that queries and scripts take their names from ``resile.queue._names``.

Three helpers, each on source text, for any backend's SQL or Lua:

* ``spelled_states(text)``: quoted literals that spell a task state (or what
  looks like one: an all-caps word) instead of getting it injected.
* ``sql_columns(sql)``: the column names a (rendered) SQL statement uses.
* ``lua_hash_fields(text)``: the task-hash fields a Lua script names in its
  ``redis.call('H...', ...)`` calls.

``unknown_fields(names)`` is what of those ``TaskField`` does not define.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from resile.queue._names import (
    COUNTS_TABLE,
    FIELDS,
    META_TABLE,
    TALLIES_TABLE,
    TASKS_TABLE,
    TaskStatus,
)

__all__ = [
    "lua_hash_fields",
    "python_strings",
    "spelled_states",
    "sql_columns",
    "unknown_fields",
]

_STATES = {s.value for s in TaskStatus}
# A single- or double-quoted literal on one line (SQL and Lua quote alike).
_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# All-caps words a Lua script quotes that are not states: Redis commands and their options
# (pass as ``spelled_states(text, ignore=REDIS_WORDS)``).
REDIS_WORDS = frozenset(
    [
        "DEL",
        "EXISTS",
        "EXPIRE",
        "GET",
        "HDEL",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HINCRBY",
        "HMGET",
        "HSET",
        "INCR",
        "INCRBY",
        "LIMIT",
        "PERSIST",
        "PEXPIRE",
        "PUBLISH",
        "PX",
        "SET",
        "WITHSCORES",
        "ZADD",
        "ZCARD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREM",
        "ZSCORE",
    ]
)
# Lowercase words a SQL statement may hold besides columns: the meta table's columns.
_META_COLUMNS = {"key", "value"}
# The per-minute counters' table: a queue, a minute, an outcome (a Tally) and a count.
_TALLY_COLUMNS = {"minute", "outcome", "n"}
# The counts table: (queue, status, shard) -> n.
_COUNT_COLUMNS = {"shard", "n"}


def spelled_states(text: str, ignore: Iterable[str] = ()) -> list[str]:
    """Every quoted literal in ``text`` holding a state name, or an all-caps word
    (a state that ``TaskStatus`` may not even define), e.g. ``'PENDING'``, ``'s:DONE'``.

    ``ignore``: all-caps words that are not states (Redis commands in Lua: ``'HSET'`` ...).
    """
    skip = set(ignore) - _STATES
    found: list[str] = []
    for m in _QUOTED.finditer(text):
        literal = m.group(1) if m.group(1) is not None else m.group(2)
        words = set(_WORD.findall(literal)) - skip
        if words & _STATES or any(len(w) >= 4 and w.isupper() and w.isalpha() for w in words):
            found.append(m.group(0))
    return found


def python_strings(source: str) -> list[str]:
    """The string constants of a Python module's code, docstrings left out.

    An f-string gives its literal parts (what it injects is not in the source).
    """
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def sql_columns(sql: str) -> set[str]:
    """The lowercase identifiers of a rendered SQL statement: its columns.

    Literals, ``:named`` parameters, the tables and their indexes are left out;
    keywords and functions are upper case by the store's convention.
    """
    text = _QUOTED.sub(" ", sql)
    text = re.sub(r":\w+", " ", text)
    names = set()
    for word in _WORD.findall(text):
        if not word.islower():
            continue
        if word.startswith((TASKS_TABLE, META_TABLE, TALLIES_TABLE, COUNTS_TABLE)):
            continue
        names.add(word)
    return names - _META_COLUMNS - _TALLY_COLUMNS - _COUNT_COLUMNS


def lua_hash_fields(text: str) -> set[str]:
    """The lowercase quoted names in a Lua script's ``redis.call('H...', ...)`` calls:
    the task-hash fields it reads and writes (values are numbers, states or variables)."""
    names: set[str] = set()
    for m in re.finditer(r"redis\.call\(\s*'H[A-Z]+'", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end() : i - 1]
        for q in _QUOTED.finditer(args):
            literal = q.group(1) if q.group(1) is not None else q.group(2)
            if re.fullmatch(r"[a-z_]+", literal):
                names.add(literal)
    return names


def unknown_fields(names: Iterable[str]) -> set[str]:
    """The ``names`` that ``TaskField`` does not define."""
    return set(names) - FIELDS
