"""The Lua scripts of the Redis store: each one's text, assembled from ``lua/``.

A script is a header of constants, the parts of ``lua/lib.lua`` it uses, then
its body (``lua/<name>.lua``). Redis runs a script's whole text on every call:
each ``local function`` of the library is a closure made again each time, so a
script carries only the library parts it uses.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from resile.queue._names import HISTORY_LIMIT
from resile.queue.store.redis import _keys as K

__all__ = ["SCRIPTS", "needed", "sha", "text"]

SCRIPTS = (
    "create", "create1", "lease", "renew", "complete", "fail", "release", "cancel", "setfield",
    "requeue", "purge", "sweep", "next_due", "corrupt", "complete_flags",
)  # fmt: skip
# Scripts made from another's body with different settings: name -> (body, settings).
_VARIANTS = {
    "complete": ("complete", "local REPLY = 'task'\n"),
    "complete_flags": ("complete", "local REPLY = 'flag'\n"),
}
_HEADER = (
    f"local HISTORY_LIMIT = {HISTORY_LIMIT}\n"
    f"local MIGRATE_LIMIT = {K.MIGRATE_LIMIT}\n"
    f"local RECLAIM_BATCH = {K.RECLAIM_BATCH}\n"
    f"local GATED_SCAN_LIMIT = {K.GATED_SCAN_LIMIT}\n"
    f"local SWEEP_ON_FINISH = {K.SWEEP_ON_FINISH}\n"
    f"local RANK_LEN = {2 * K.RANK_WIDTH}\n"
)

_cache: dict[str, str] = {}

_DEFINES = re.compile(r"^local (?:function )?([\w, ]+?)\s*(?:=|\()", re.MULTILINE)


def needed(lib: str, body: str) -> str:
    """The blocks of ``lib`` (separated by blank lines) that ``body`` uses, directly or not."""
    blocks = [b for b in lib.split("\n\n") if b.strip()]
    names = [
        {n.strip() for m in _DEFINES.findall(b) for n in m.split(",") if n.strip()} for b in blocks
    ]
    keep = [not n for n in names]  # comments and settings without a definition stay
    text_ = body
    changed = True
    while changed:
        changed = False
        for i, defined in enumerate(names):
            if not keep[i] and any(re.search(rf"\b{n}\b", text_) for n in defined):
                keep[i] = changed = True
                text_ += "\n" + blocks[i]
    return "\n\n".join(b for b, k in zip(blocks, keep, strict=True) if k)


def text(name: str) -> str:
    """The full text of a script: the constants, the library parts it uses, the body."""
    found = _cache.get(name)
    if found is None:
        lua = resources.files("resile.queue.store.redis").joinpath("lua")
        source, settings = _VARIANTS.get(name, (name, ""))
        body = lua.joinpath(f"{source}.lua").read_text("utf-8")
        lib = needed(lua.joinpath("lib.lua").read_text("utf-8"), body)
        found = _HEADER + settings + lib + "\n" + body
        _cache[name] = found
    return found


def sha(name: str) -> str:
    """The SHA1 that Redis knows the script by (``EVALSHA``)."""
    return hashlib.sha1(text(name).encode()).hexdigest()
