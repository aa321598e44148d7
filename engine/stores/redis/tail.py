"""Following Redis streams: one connection per process reads every stream its shared stores
follow (``XREAD BLOCK``), and hands each new entry to the store that asked for it.

This is how what one process does reaches the others within a fraction of a second (a cache
entry stored, a backend found down). A store says where to start (``"0"``: the stream's
beginning, to catch up at start; ``"$"``: only what comes next). While Redis is down the
tail waits; when it is back it goes on from the last entry each stream had delivered, so
nothing written meanwhile is missed (as far as the stream still holds it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from engine.errors import StoreUnavailable

from .client import Redis
from .resp import ReplyError

__all__ = ["StreamEntry", "StreamTail"]

log = logging.getLogger("llm_router.redis")

BLOCK_MS = 100  # how long one XREAD waits for news: also how soon a new stream is followed


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: bytes
    fields: Mapping[bytes, bytes]


Handler = Callable[[list[StreamEntry]], Awaitable[None]]


class StreamTail:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis.dedicated(timeout=BLOCK_MS / 1000 + max(redis.timeout, 0.5))
        self._main = redis
        self._streams: dict[str, tuple[bytes, Handler]] = {}

    def follow(self, key: str, handler: Handler, *, since: str = "$") -> None:
        """Deliver the entries of stream ``key`` after ``since`` to ``handler``, in order,
        in batches. A handler that raises loses its batch (logged), not the tail."""
        self._streams[key] = (since.encode(), handler)

    def unfollow(self, key: str) -> None:
        """Stop delivering ``key`` (a batch already read may still reach its handler)."""
        self._streams.pop(key, None)

    async def run(self) -> None:
        """Read until cancelled."""
        while True:
            if not self._streams:
                await trio.sleep(BLOCK_MS / 1000)
                continue
            try:
                await self._resolve_dollars(list(self._streams))
                keys = list(self._streams)  # as they are now: the resolving awaited
                if not keys:
                    continue
                reply = await self._redis.call(
                    "XREAD", "COUNT", 1000, "BLOCK", BLOCK_MS, "STREAMS", *keys,
                    *(self._streams[k][0] for k in keys), probe=True)
            except StoreUnavailable:
                await trio.sleep(0.2)
                continue
            except ReplyError as exc:
                log.error("following Redis streams: %s", exc)
                await trio.sleep(1)
                continue
            for key, entries in _by_stream(reply):
                if key not in self._streams:
                    continue  # unfollowed while this read was under way
                _since, handler = self._streams[key]
                if entries:
                    self._streams[key] = (entries[-1].id, handler)
                    try:
                        await handler(entries)
                    except StoreUnavailable:
                        pass  # the handler's own reads failed: Redis is going away
                    except Exception:
                        log.exception("handling entries of Redis stream %s", key)

    async def _resolve_dollars(self, keys: list[str]) -> None:
        """Replace ``$`` by the stream's current last id, so that a reconnect after an
        outage goes on from there rather than skipping what was added meanwhile."""
        for key in keys:
            since, handler = self._streams.get(key, (b"", None))
            if since != b"$" or handler is None:
                continue
            info: Any = await self._main.call("XREVRANGE", key, "+", "-", "COUNT", 1,
                                              probe=True)
            last = info[0][0] if isinstance(info, list) and info else b"0"
            self._streams[key] = (last if isinstance(last, bytes) else b"0", handler)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _by_stream(reply: Any) -> list[tuple[str, list[StreamEntry]]]:
    """An ``XREAD`` reply: ``[[key, [[id, [field, value, ...]], ...]], ...]`` or None."""
    out: list[tuple[str, list[StreamEntry]]] = []
    if not isinstance(reply, list):
        return out  # None: nothing new within the block
    for item in reply:
        assert isinstance(item, list) and isinstance(item[0], bytes)
        key, raw = item[0].decode(), item[1]
        entries = []
        for entry in raw if isinstance(raw, list) else []:
            ident, flat = entry[0], entry[1] or []
            entries.append(StreamEntry(ident, dict(zip(flat[::2], flat[1::2], strict=True))))
        out.append((key, entries))
    return out
