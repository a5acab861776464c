"""The Lua scripts of the Redis store: one spec per script, the text assembled from ``lua/``.

A script's text is a header (the key root and the limits), the blocks of
``lua/lib.lua`` and the key functions it uses, then its body
(``lua/<name>.lua``). Redis runs a script's whole text on every call (each
``local function`` is a closure made again each time), so a script carries
only what it uses.

**Names are injected, never spelled.** A script writes ``A.worker`` for its
argument ``worker``, ``S.DOING`` for a state, ``F.lease_owner`` for a task
field, ``O.LOST`` for an outcome, ``IX.ready`` for an index and
``G.<field>`` for a field of a repeated record in its variable tail; the
assembler replaces each by its value (``ARGV[4]``, ``'DOING'``, ...) from the
script's ``Script`` spec, ``TaskStatus``, ``_keys.TASK_FIELDS``, ``Outcome``
and ``_keys.INDEXES``. A name none of them defines is an error when the
script is assembled, not a nil at run time. Key shapes come from
``_keys.SHAPES`` as Lua functions (``task_key(id)``, ``index_key(index,
queue)`` ...).

**The library is linked by explicit blocks.** ``lib.lua`` is a list of
blocks, each opened by a line ``-- lib: <names>`` naming what it defines at
its top level; the linker refuses a block whose definitions differ from its
marker, and one that uses a name only a later block defines. A script gets
every block whose names its code (comments and strings aside) uses, directly or not.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from resile.queue._names import (
    HISTORY_LIMIT,
    TALLY_WINDOW,
    TIMING_EDGES,
    TIMING_SEP,
    Outcome,
    Tally,
    TaskStatus,
)
from resile.queue.store.redis import _keys as K

__all__ = [
    "SCRIPTS",
    "SPECS",
    "LinkError",
    "Script",
    "key_functions",
    "link",
    "lua_names",
    "num",
    "op_id",
    "sha",
    "substitute",
    "text",
]


class LinkError(ValueError):
    """A Lua library or script that cannot be assembled (the message says where and why)."""


@dataclass(frozen=True)
class Script:
    """One script's calling convention: its named arguments, then a variable tail.

    ``ARGV[1]`` is always the key root; ``args`` follow from ``ARGV[2]`` on,
    and the Lua body reads them as ``A.<name>``. ``rest`` describes what follows
    them (``REST`` in Lua is its first index); ``group`` names the fields of each
    record when the tail repeats one (``G.<field>`` is a field's offset in its
    record, from 1; ``G.SIZE`` the record's length).

    Attributes:
        name: the script's name (``SHAS``, ``EVALSHA``).
        args: the named arguments, in ``ARGV`` order.
        rest: what follows them, for a reader ("" = nothing).
        group: the fields of each repeated record of the tail.
        body: the ``lua/<body>.lua`` file (default: ``name``).
        settings: Lua lines put before the body (a variant of another script).
    """

    name: str
    args: tuple[str, ...]
    rest: str = ""
    group: tuple[str, ...] = ()
    body: str = ""
    settings: str = ""
    _pick: Callable[[Mapping[str, str]], Any] = field(init=False, repr=False, compare=False)
    _pick_record: Callable[[Mapping[str, str]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pick", operator.itemgetter(*self.args))
        if len(self.group) > 1:
            object.__setattr__(self, "_pick_record", operator.itemgetter(*self.group))

    def argv(self, **values: str) -> list[str]:
        """The named arguments in ``ARGV`` order (the tail is appended by the caller).

        Raises:
            TypeError: a name missing or not one of ``args``.
        """
        if len(values) != len(self.args) or len(self.args) == 1:
            return self._checked(values)
        try:
            return list(self._pick(values))
        except KeyError:
            return self._checked(values)

    def _checked(self, values: Mapping[str, str]) -> list[str]:
        missing = [a for a in self.args if a not in values]
        extra = [v for v in values if v not in self.args]
        if missing or extra:
            raise TypeError(
                f"script {self.name!r}: missing arguments {missing}, unknown {extra}; "
                f"it takes {list(self.args)}"
            )
        return [values[a] for a in self.args]

    def record(self, **values: str) -> list[str]:
        """One record of the tail, its fields in ``group`` order.

        Raises:
            TypeError: a field missing or not one of ``group``.
        """
        if len(values) == len(self.group) > 1:
            try:
                return list(self._pick_record(values))
            except KeyError:
                pass
        if values.keys() != set(self.group):
            raise TypeError(
                f"script {self.name!r}: a record has the fields {list(self.group)}, "
                f"got {list(values)}"
            )
        return [values[g] for g in self.group]


_TTL = ("ttl_ms", "cutoff_s")  # the retention of a task a script finishes: TTL, sweep cutoff
_TASK = (
    "id", "queue", "handler", "params", "priority", "rank_prefix", "max_retries", "backoff",
    "due_s", "timeout_s", "resources", "gated", "traceparent",
)  # fmt: skip
_CREATE = ("now_s", "if_exists", "op", "n")
_COMPLETE = Script(
    "complete",
    ("worker", "now_s", "op", *_TTL),
    rest="records",
    group=("id", "result"),
    settings="local REPLY = 'task'\n",
)
SPECS: dict[str, Script] = {
    s.name: s
    for s in (
        Script("create", _CREATE, rest="n task records", group=_TASK),
        Script("create1", _CREATE[:-1], rest="one task record", group=_TASK),
        Script(
            "lease",
            (
                "now_s",
                "expires_s",
                "worker",
                "limit",
                "capacity",
                "op",
                "op_ttl_ms",
                "failed_ttl_ms",
                "failed_cutoff_s",
                "nq",
            ),
            rest="nq queues, then reclaim records",
            group=("id", "seen", "dead", "due_s", "delay_s", "error"),
        ),
        Script("renew", ("now_s", "expires_s", "worker"), rest="the task ids"),
        _COMPLETE,
        replace(
            _COMPLETE, name="complete_flags", body="complete", settings="local REPLY = 'flag'\n"
        ),
        Script(
            "fail",
            (
                "id",
                "worker",
                "now_s",
                "op",
                "attempts",
                "started_s",
                "max_retries",
                "backoff",
                "last_delay",
                "outcome",
                "error",
                "dead",
                "due_s",
                "delay_s",
                *_TTL,
            ),
        ),
        Script("release", ("id", "worker", "now_s", "op")),
        Script("cancel", ("id", "now_s", "op", "error", *_TTL)),
        Script("setfield", ("id", "field", "value", "worker", "now_s")),
        Script("requeue", ("id", "now_s", "due_s", "op")),
        Script("make_due", ("id", "now_s", "op")),
        Script("delete", ("id", "op")),
        Script("purge", ("cutoff_s", "max", "nq"), rest="nq queues, then the statuses"),
        Script(
            "sweep",
            ("max", "done_cutoff_s", "failed_cutoff_s", "canceled_cutoff_s"),
            rest="the queues",
        ),
        Script("next_due", ("capacity",), rest="the queues"),
        Script("oldest_due", ("queue",)),
        Script("corrupt", ("id", "worker", "now_s", "error", *_TTL)),
        Script(
            "schedule_swap",
            ("name", "has_old", "old", "has_new", "new", "now_s", "op"),
            rest="one task record, or nothing",
            group=_TASK,
        ),
    )
}
SCRIPTS = tuple(SPECS)

_LIMITS = {
    "HISTORY_LIMIT": HISTORY_LIMIT,
    "MIGRATE_LIMIT": K.MIGRATE_LIMIT,
    "RECLAIM_BATCH": K.RECLAIM_BATCH,
    "GATED_SCAN_LIMIT": K.GATED_SCAN_LIMIT,
    "SWEEP_ON_FINISH": K.SWEEP_ON_FINISH,
    "RANK_LEN": 2 * K.RANK_WIDTH,
    "TALLY_KEEP_S": int(TALLY_WINDOW) + 3600,
}
_HEADER = (
    "local R = ARGV[1]\n"
    + "".join(f"local {k} = {v}\n" for k, v in _LIMITS.items())
    + f"local TIMING_SEP = '{TIMING_SEP}'\n"
    + f"local TIMING_EDGES = {{{', '.join(repr(e) for e in TIMING_EDGES)}}}\n"
)


def lua_names() -> dict[str, dict[str, str]]:
    """The injected vocabularies: prefix -> name -> Lua literal (``S``, ``F``, ``O``, ``IX``)."""
    return {
        "S": {s.name: f"'{s.value}'" for s in TaskStatus},
        "F": {f: f"'{f}'" for f in K.TASK_FIELDS},
        "O": {o.name: f"'{o.value}'" for o in Outcome},
        "IX": {i: f"'{i}'" for i in K.INDEXES},
        "TL": {t.name: f"'{t.value}'" for t in Tally},
    }


def _script_names(spec: Script) -> dict[str, dict[str, str]]:
    names = lua_names()
    names["A"] = {a: f"ARGV[{i + 2}]" for i, a in enumerate(spec.args)}
    names["G"] = {g: str(i + 1) for i, g in enumerate(spec.group)}
    if spec.group:
        names["G"]["SIZE"] = str(len(spec.group))
    return names


_NAME = re.compile(r"\b(A|G|S|F|O|IX|TL)\.([A-Za-z_]\w*)")
_REST = re.compile(r"\bREST\b")


def substitute(lua: str, names: Mapping[str, Mapping[str, str]], where: str, rest: int) -> str:
    """``lua`` with each injected name (``S.DOING`` ...) replaced by its value.

    Raises:
        LinkError: a name its vocabulary does not define.
    """

    def value(m: re.Match[str]) -> str:
        vocabulary, name = m.group(1), m.group(2)
        found = names.get(vocabulary, {}).get(name)
        if found is None:
            known = sorted(names.get(vocabulary, {}))
            raise LinkError(f"{where}: {vocabulary}.{name} is not defined (known: {known})")
        return found

    return _REST.sub(str(rest), _NAME.sub(value, lua))


def key_functions() -> str:
    """The key shapes of ``_keys.SHAPES`` as Lua: a local per fixed key, a function per other.

    ``task`` becomes ``local function task_key(id) return R .. ':t:' .. id end``,
    ``queues`` becomes ``local QUEUES_KEY = R .. ':queues'``; each in a block of its own.
    """
    blocks = []
    for name, template in K.SHAPES.items():
        parts: list[str] = []
        params: list[str] = []
        for literal, fname, _, _ in string.Formatter().parse(template):
            if literal:
                parts.append(repr(literal))
            if fname == "root":
                parts.append("R")
            elif fname:
                parts.append(fname)
                params.append(fname)
        expr = " .. ".join(parts)
        if params:
            blocks.append(
                f"-- lib: {name}_key\n"
                f"local function {name}_key({', '.join(params)}) return {expr} end\n"
            )
        else:
            blocks.append(f"-- lib: {name.upper()}_KEY\nlocal {name.upper()}_KEY = {expr}\n")
    return "".join(blocks)


_MARKER = re.compile(r"^-- lib: *(.*)$", re.MULTILINE)
_DEFINES = re.compile(r"^local (?:function )?([\w, ]+?)\s*(?:=|\()", re.MULTILINE)
# Comments and string literals: a name mentioned there is not a use of it.
_COMMENT = re.compile(r"--[^\n]*|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def _uses(text_: str, names: Sequence[str]) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", text_) for n in names)


def link(lib: str, body: str, where: str = "lib.lua") -> str:
    """The blocks of ``lib`` that ``body`` uses, directly or through other blocks, in order.

    ``lib`` is a series of blocks, each opened by ``-- lib: name1, name2``
    naming what it defines at its top level (text before the first marker is
    a comment for readers and is dropped).

    Raises:
        LinkError: a block whose top-level definitions differ from its marker, a
            block that uses a name only a later block defines, or a name marked twice.
    """
    marks = list(_MARKER.finditer(lib))
    blocks: list[tuple[list[str], str, str]] = []  # (names, text, text without comments)
    owner: dict[str, int] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(lib)
        block = lib[m.start() : end].rstrip() + "\n"
        named = [n.strip() for n in m.group(1).split(",") if n.strip()]
        defined = {n.strip() for d in _DEFINES.findall(block) for n in d.split(",") if n.strip()}
        if not named or set(named) != defined:
            raise LinkError(
                f"{where}: the block marked {named} defines {sorted(defined)} at its top level"
            )
        for n in named:
            if n in owner:
                raise LinkError(f"{where}: {n} is marked by two blocks")
            owner[n] = len(blocks)
        blocks.append((named, block, _COMMENT.sub("", block)))
    for i, (named, _, code) in enumerate(blocks):
        later = [n for n, j in owner.items() if j > i and n not in named]
        used = [n for n in later if _uses(code, [n])]
        if used:
            raise LinkError(f"{where}: the block of {named} uses {used}, defined after it")
    keep = [False] * len(blocks)
    todo = [_COMMENT.sub("", body)]
    while todo:
        code = todo.pop()
        for i, (named, _, block_code) in enumerate(blocks):
            if not keep[i] and _uses(code, named):
                keep[i] = True
                todo.append(block_code)
    return "".join(b for (_, b, _), k in zip(blocks, keep, strict=True) if k)


def num(value: float) -> str:
    """A time or number as the exact text Redis and Python both read back bit for bit."""
    return repr(float(value))


_op_prefix = ("", -1)  # (random prefix, the pid it was drawn in)
_op_count = itertools.count()


def op_id() -> str:
    """A unique op id: a random prefix per process (drawn again after a fork) and a counter.

    Cheaper than a random draw (a system call) per op, and as unique.
    """
    global _op_prefix
    prefix, pid = _op_prefix
    if pid != os.getpid():
        prefix, pid = os.urandom(8).hex(), os.getpid()
        _op_prefix = (prefix, pid)
    return f"{prefix}{next(_op_count):x}"


_cache: dict[str, str] = {}


def text(name: str) -> str:
    """The full text of a script as Redis runs it.

    Raises:
        LinkError: the script or the library uses a name that is not defined.
    """
    found = _cache.get(name)
    if found is None:
        spec = SPECS[name]
        lua = resources.files("resile.queue.store.redis").joinpath("lua")
        body = lua.joinpath(f"{spec.body or name}.lua").read_text("utf-8")
        lib = key_functions() + lua.joinpath("lib.lua").read_text("utf-8")
        names = _script_names(spec)
        rest = len(spec.args) + 2
        code = spec.settings + substitute(body, names, f"lua/{spec.body or name}.lua", rest)
        linked = substitute(link(lib, code), names, "lua/lib.lua", rest)
        found = _HEADER + linked + code
        _cache[name] = found
    return found


def sha(name: str) -> str:
    """The SHA1 that Redis knows the script by (``EVALSHA``)."""
    return hashlib.sha1(text(name).encode()).hexdigest()
