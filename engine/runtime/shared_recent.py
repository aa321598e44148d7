"""The dashboard's recent requests, rate and latency of every router process sharing one
Redis (``GET /stats/recent``, ``GET /stats/events``), whichever process answers.

Each process keeps its own :class:`~engine.core.recent.RecentRequests`, as it does alone; a
chat request touches nothing else. A background task writes the process's export (its last
100 requests and its window's per-second counts and latency histograms, a few kB) to a key
of its own, ``llmr:stats:{recent}:proc:<origin>``, at most once every :data:`PUBLISH_SEC`
and only when it changed, listed in the set ``llmr:stats:{recent}:procs``. The key expires
:data:`TTL_SEC` after its last write (refreshed every second while unchanged), so a process
that stopped drops out of every view within seconds. A reader takes every other live
process's export in one script call and merges it with its own current state: exact for
itself, at most :data:`PUBLISH_SEC` behind for the others.

With Redis down a reader answers from this process alone and says so (``"scope":
"process"``; ``"shared"`` otherwise), as ``/stats`` does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import trio

from engine.core.recent import RecentRequests
from engine.errors import StoreUnavailable
from engine.stores.redis import Script

from .shared import PREFIX, Shared

__all__ = ["PUBLISH_SEC", "TTL_SEC", "SharedRecent"]

log = logging.getLogger("llm_router")

PUBLISH_SEC = 1.0
TTL_SEC = 5.0
PROCS = PREFIX + "stats:{recent}:procs"
PROC_PREFIX = PREFIX + "stats:{recent}:proc:"

# Every live process's export but ARGV[1]'s; a process whose key expired leaves the set.
_READ = Script("""
local out = {}
for _, proc in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if proc ~= ARGV[1] then
    local export = redis.call('GET', KEYS[2] .. proc)
    if export then out[#out + 1] = export else redis.call('SREM', KEYS[1], proc) end
  end
end
return out
""")


class SharedRecent:
    def __init__(self, shared: Shared, recent: RecentRequests, *, origin: str) -> None:
        self.redis = shared.redis
        self.recent = recent
        self.origin = origin
        self._key = PROC_PREFIX + origin
        self._written = -1  # the version of ``recent`` Redis holds (-1: none known)
        shared.redis.on_up(self._rewrite)

    async def _rewrite(self) -> None:
        """Redis is back, perhaps restarted empty: write again."""
        self._written = -1
        await self.publish()

    async def run(self) -> None:
        """Publish this process's state every :data:`PUBLISH_SEC`; at the end, withdraw it
        (the process's requests stay in the others' lists only while it runs)."""
        try:
            while True:
                await self.publish()
                await trio.sleep(PUBLISH_SEC)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.redis.timeout):
                try:
                    await self.redis.pipeline([["DEL", self._key],
                                               ["SREM", PROCS, self.origin]])
                except StoreUnavailable:
                    pass  # the key expires by itself

    async def publish(self) -> None:
        version = self.recent.version
        ttl = int(TTL_SEC * 1000)
        try:
            if version != self._written:
                export = orjson.dumps(self.recent.export())
                await self.redis.pipeline([["PSETEX", self._key, ttl, export],
                                           ["SADD", PROCS, self.origin]])
                self._written = version
            else:
                kept: Any = await self.redis.call("PEXPIRE", self._key, ttl)
                if kept == 0:  # gone (Redis restarted empty, or was down past the TTL)
                    self._written = -1
        except StoreUnavailable:
            self._written = -1  # it may have expired meanwhile

    async def snapshot(self) -> dict[str, object]:
        """Every live process's recent requests and window merged, with ``scope``."""
        try:
            reply: Any = await self.redis.run(_READ, [PROCS, PROC_PREFIX], [self.origin])
        except StoreUnavailable:
            return {**self.recent.snapshot(time.time()), "scope": "process", "processes": 1}
        others = []
        for raw in reply:
            try:
                export = orjson.loads(raw)
            except orjson.JSONDecodeError:
                export = None
            if _readable(export):
                others.append(export)
            else:
                log.warning("skipped an unreadable entry in Redis at %s*", PROC_PREFIX)
        return {**self.recent.snapshot(time.time(), others=others),
                "scope": "shared", "processes": len(others) + 1}


def _readable(export: Any) -> bool:
    """What :meth:`RecentRequests.export` writes, in its outline (only routers write it)."""
    return (isinstance(export, dict) and isinstance(export.get("requests"), list)
            and isinstance(export.get("seconds"), list)
            and all(isinstance(r, dict) and isinstance(r.get("at"), int | float)
                    for r in export["requests"])
            and all(isinstance(s, list) and len(s) == 4 for s in export["seconds"]))
