"""What a router process shares with the others when ``state.redis_url`` is set: the Redis
client and the tail that follows the shared streams. Each shared store (cache, flights,
backend health, totals, feedback, runs) is built on these and keeps a local copy of what it
needs on the hot path, so a Redis that is down or slow costs sharing, never a request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from engine.core.redis_address import RedisAddress
from engine.errors import StoreUnavailable
from engine.stores.redis import Redis, open_redis
from engine.stores.redis.tail import StreamTail

__all__ = ["Shared", "open_shared"]

log = logging.getLogger("llm_router")

#: Every key the router writes starts with this.
PREFIX = "llmr:"
HEARTBEAT_SEC = 1.0


class Shared:
    def __init__(self, redis: Redis, tail: StreamTail) -> None:
        self.redis = redis
        self.tail = tail

    async def last_id(self, stream: str) -> str:
        """The id of ``stream``'s newest entry (``"0"``: none yet). A store that reads the
        current state and then follows the news reads this first and follows from it, so no
        news written in between is missed.

        Raises:
            StoreUnavailable: Redis is down.
        """
        newest: Any = await self.redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
        return newest[0][0].decode() if newest else "0"

    def health(self) -> dict[str, Any]:
        return self.redis.health()


@asynccontextmanager
async def open_shared(address: RedisAddress, *, timeout: float) -> AsyncIterator[Shared]:
    """Connect (a Redis that is down at start is logged, not fatal: the router serves from
    local state and joins in when it comes back) and follow the shared streams."""
    async with open_redis(address, timeout=timeout) as redis, trio.open_nursery() as nursery:
        tail = StreamTail(redis)
        try:
            await redis.call("PING", probe=True)
            log.info("sharing state through Redis at %s", address.describe())
        except StoreUnavailable as exc:
            log.error("%s; serving from local state until it answers", exc.message)
        nursery.start_soon(tail.run)
        nursery.start_soon(_heartbeat, redis)
        try:
            yield Shared(redis, tail)
        finally:
            nursery.cancel_scope.cancel()
            await tail.aclose()


async def _heartbeat(redis: Redis) -> None:
    """A ``PING`` every second: Redis going away shows in ``/health`` even when no request
    needed it, and while it is away this is what finds it back (after the client's backoff)."""
    while True:
        try:
            await redis.call("PING", probe=True)
        except StoreUnavailable:
            pass
        await trio.sleep(HEARTBEAT_SEC if redis.up else HEARTBEAT_SEC / 4)
