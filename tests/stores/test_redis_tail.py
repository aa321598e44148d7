"""The stream tail against a real ``redis-server``: a stream followed from ``0`` delivers what
it already held, then what comes, in order; one unfollowed delivers nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from support_redis import RedisServer

from engine.core.redis_address import RedisAddress
from engine.stores.redis import open_redis
from engine.stores.redis.tail import StreamEntry, StreamTail


async def test_follow_from_the_start_then_live_and_unfollow(redis_server: RedisServer) -> None:
    async with open_redis(RedisAddress.from_url(redis_server.url)) as redis, \
            trio.open_nursery() as nursery:
        tail = StreamTail(redis)
        nursery.start_soon(tail.run)
        await redis.call("XADD", "s", "*", "n", "1")
        seen: dict[str, list[bytes]] = {"s": [], "other": []}
        changed = trio.Event()

        def handler(key: str) -> Callable[[list[StreamEntry]], Awaitable[None]]:
            async def deliver(entries: list[StreamEntry]) -> None:
                nonlocal changed
                seen[key].extend(e.fields[b"n"] for e in entries)
                changed.set()
                changed = trio.Event()
            return deliver

        async def until(key: str, count: int) -> None:
            with trio.fail_after(5):
                while len(seen[key]) < count:
                    await changed.wait()

        tail.follow("s", handler("s"), since="0")
        await until("s", 1)
        await redis.call("XADD", "s", "*", "n", "2")
        await until("s", 2)
        tail.unfollow("s")
        await redis.call("XADD", "s", "*", "n", "3")
        tail.follow("other", handler("other"), since="0")
        await redis.call("XADD", "other", "*", "n", "x")
        await until("other", 1)  # the tail has read again since "s" was unfollowed
        assert seen == {"s": [b"1", b"2"], "other": [b"x"]}
        nursery.cancel_scope.cancel()
        await tail.aclose()
