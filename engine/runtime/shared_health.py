"""Backend health shared by every router process (``state.redis_url``): a backend one process
finds down, degraded or rate-limited is skipped by all.

A process publishes each change of a backend's verdict (``BackendState.verdict``: its health
with the time its probe is due, or a ``Retry-After`` wait) in the background, never on the
request that caused it: ``HSET llmr:health:{<backend>}`` (the current verdict, read by a
process that starts or reconnects) and ``XADD llmr:{bus}:health`` (the news, which every
process follows through the shared tail). Another process *adopts* the verdict
(``BackendState.adopt``): it skips the backend, and counts neither a failure nor an ejection
of its own. Times cross processes as wall-clock times and are turned back into each process's
own clock on arrival.

What stays per process: requests in flight, the latency average, and which process probes a
backend whose ejection is over (each process sends its own probe, one at a time).

While Redis is down, verdicts are kept as pending; when it is back they are published (the
newest per backend) before the others' current verdicts are read again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from engine.core.pool import BackendPool, BackendState
from engine.errors import StoreUnavailable
from engine.stores.redis.tail import StreamEntry

from .shared import PREFIX, Shared

__all__ = ["SharedHealth"]

log = logging.getLogger("llm_router")

STREAM = PREFIX + "{bus}:health"
_STREAM_LENGTH = 1000  # approximate: news older than this is only in the hashes
_STATUSES = ("healthy", "degraded", "down")


def health_key(backend: str) -> str:
    return f"{PREFIX}health:{{{backend}}}"


def _wall(local: float) -> float:
    """A time on this process's trio clock as a wall-clock (Unix) time."""
    return time.time() + (local - trio.current_time())


def _local(wall: float) -> float:
    return trio.current_time() + (wall - time.time())


class SharedHealth:
    def __init__(self, shared: Shared, pool: BackendPool, *, origin: str) -> None:
        self.shared = shared
        self.redis = shared.redis
        self.pool = pool
        self.origin = origin
        # backend name -> parts of its verdict not yet published ("status", "rate_limit")
        self._pending: dict[str, set[str]] = {}
        self._wake = trio.Event()
        self._following = False
        shared.redis.on_up(self._resync)

    def changed(self, backend: BackendState, before: tuple[Any, ...]) -> None:
        """A local call changed ``backend``'s verdict: publish it soon (``BackendCaller``'s
        ``on_verdict``). Costs the request nothing but this bookkeeping."""
        parts = self._pending.setdefault(backend.name, set())
        now = backend.verdict()
        if now[:3] != before[:3]:
            parts.add("status")
        if now[3] != before[3]:
            parts.add("rate_limit")
        self._wake.set()

    async def run(self) -> None:
        """Publish pending verdicts as they come, and read the others' at start."""
        await self._resync()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._publish()

    async def _publish(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        commands: list[list[Any]] = []
        for name, parts in pending.items():
            fields = self._fields(self.pool[name], parts)
            flat = [x for pair in fields.items() for x in pair]
            commands.append(["HSET", health_key(name), *flat])
            commands.append(["XADD", STREAM, "MAXLEN", "~", _STREAM_LENGTH, "*",
                             "backend", name, "origin", self.origin, *flat])
        try:
            await self.redis.pipeline(commands)
        except StoreUnavailable:
            for name, parts in pending.items():  # newer changes meanwhile merge in
                self._pending.setdefault(name, set()).update(parts)

    @staticmethod
    def _fields(backend: BackendState, parts: set[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if "status" in parts:
            fields.update(status=backend.status, probe_at=repr(_wall(backend.probe_at)),
                          backoff=backend.backoff, error=backend.last_error or "")
        if "rate_limit" in parts:
            fields["rate_limited_until"] = repr(_wall(backend.rate_limited_until))
        return fields

    async def _resync(self) -> None:
        """Publish what this process found meanwhile, then take up everyone's current
        verdicts (at start, and each time Redis comes back)."""
        await self._publish()
        names = list(self.pool.backends)
        try:
            since = await self.shared.last_id(STREAM)
            replies = await self.redis.pipeline([["HGETALL", health_key(n)] for n in names])
        except StoreUnavailable:
            return
        if not self._following:
            self.shared.tail.follow(STREAM, self._on_news, since=since)
            self._following = True
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, list) and reply:
                self._adopt(name, dict(zip(reply[::2], reply[1::2], strict=True)))

    async def _on_news(self, entries: list[StreamEntry]) -> None:
        for entry in entries:
            fields = entry.fields
            if fields.get(b"origin", b"").decode() == self.origin:
                continue
            self._adopt(fields.get(b"backend", b"").decode(), fields)

    def _adopt(self, name: str, fields: Any) -> None:
        backend = self.pool.backends.get(name)
        if backend is None:
            return  # a backend this process's config does not have
        try:
            status = fields.get(b"status", b"").decode()
            if status in _STATUSES and name not in self._pending:
                error = fields.get(b"error", b"").decode() or None
                backend.adopt(status, probe_at=_local(float(fields[b"probe_at"])),
                              backoff=int(fields.get(b"backoff", 0)), error=error)
            if b"rate_limited_until" in fields:
                backend.adopt_rate_limit(_local(float(fields[b"rate_limited_until"])))
        except (KeyError, ValueError) as exc:
            log.warning("ignoring a malformed shared health entry for %s: %r", name, exc)
