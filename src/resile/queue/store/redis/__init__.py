"""The Redis task store: many workers on many machines, one Redis.

``resile.connect("redis://host:6379/0")`` opens it; every contract method is
one Lua script (``lua/*.lua``), run by SHA with ``EVALSHA`` and loaded again
when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). The
data model, the wake-up protocol and the guarantees per persistence setting
are in ``docs/redis.md``.

* **Atomic**: a script runs alone in Redis; no state change spans two calls.
  Where a transition needs the task's backoff policy (a failed attempt, a
  reclaimed lease) ``resile.queue._transitions`` decides from a snapshot of
  the task and the script applies the decision only if the snapshot still holds.
* **No polling**: a worker subscribes to its queues' wake-up channel
  (``Store.watch``) and otherwise sleeps exactly until the next due time.
* **Faults**: a call that meets a connection error (Redis restarting,
  unreachable, loading its data) is tried again with resile's backoff for up
  to ``retry_for`` seconds, logged once per outage. Writes carry an operation
  id, so a write whose reply was lost is not applied twice when retried.
* **Bounded work**: no ``KEYS``, no ``SCAN``, and no script does work that
  grows with the number of stored tasks (see the limits in ``_keys``).

The package, by concern:

* ``_keys``: every key, channel, limit and default;
* ``_scripts``: the Lua scripts (one argument spec each), assembled from ``lua/``;
* ``_connection``: sockets, asyncio clients, reconnects and outage logging;
* ``_watcher``: the pub/sub thread behind ``Store.watch``;
* ``_decode``: a stored task hash back to a ``Task`` (the shared ``store._codec``);
* ``_create``: the create scripts' arguments and what their replies mean;
* ``_store``: ``RedisStore``, the contract methods.
"""

from __future__ import annotations

from resile.queue.store.redis._store import RedisStore

__all__ = ["RedisStore"]
