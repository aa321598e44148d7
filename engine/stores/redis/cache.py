"""The response cache's shared part in Redis: the entries, their byte budget and expiry, and
the stream that tells every process what was stored and evicted.

Keys:

* ``llmr:cache:{<id>}`` — one entry (``engine.core.cache.record``), with a ``PX`` expiry:
  Redis drops it when it expires, whoever stored it;
* ``llmr:{bus}:cache-index`` (sorted set: entry id by expiry time, which is store order),
  ``llmr:{bus}:cache-sizes`` (hash: entry id to its size) and ``llmr:{bus}:cache-bytes``
  (the sum): the budget, kept by one Lua script so that processes storing at once cannot
  overrun it;
* ``llmr:{bus}:cache`` — the stream: ``op=put`` (``id``, ``from``: the process) and
  ``op=evict`` (``id``) records, trimmed to about ``stream_len`` records.

The budget's keys and the stream share the ``{bus}`` tag (one cluster slot, one script); the
entries spread over the cluster by their own tags. When the budget is exceeded the entries
stored first go (the budget cannot follow each process's reads without a write per hit), and
the script's caller deletes them and every process drops them on the ``evict`` record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .client import Redis, Script
from .resp import Arg, ReplyError

__all__ = ["STREAM", "Put", "RedisCacheStore", "entry_key"]

STREAM = "llmr:{bus}:cache"
_INDEX = "llmr:{bus}:cache-index"
_SIZES = "llmr:{bus}:cache-sizes"
_BYTES = "llmr:{bus}:cache-bytes"

_ACCOUNT = Script("""
local index, sizes, total, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, size, expires, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local max_entries, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local origin, maxlen = ARGV[7], ARGV[8]
local function forget(victim)
  local old = redis.call('HGET', sizes, victim)
  if old then
    redis.call('HDEL', sizes, victim)
    redis.call('DECRBY', total, old)
  end
end
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now)) do
  forget(victim)
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
forget(id)
redis.call('ZADD', index, expires, id)
redis.call('HSET', sizes, id, size)
redis.call('INCRBY', total, size)
redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'put', 'id', id, 'from', origin)
local evicted = {}
while redis.call('ZCARD', index) > max_entries
    or tonumber(redis.call('GET', total) or '0') > max_bytes do
  local popped = redis.call('ZPOPMIN', index)
  if #popped == 0 then break end
  forget(popped[1])
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'evict', 'id', popped[1])
  evicted[#evicted + 1] = popped[1]
end
return evicted
""")


def entry_key(entry_id: str) -> str:
    return f"llmr:cache:{{{entry_id}}}"


@dataclass(frozen=True, slots=True)
class Put:
    """One entry to publish: ``payload`` is its encoded record; ``expires_ms`` wall-clock."""

    entry_id: str
    payload: bytes
    size: int
    expires_ms: int


class RedisCacheStore:
    def __init__(self, redis: Redis, *, origin: str, max_entries: int, max_bytes: int,
                 stream_len: int) -> None:
        self.redis = redis
        self.origin = origin
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stream_len = stream_len

    async def publish(self, puts: Sequence[Put], now_ms: int) -> None:
        """Store ``puts``, account them in the budget (evicting what no longer fits) and
        announce them, in one round trip (two when the script must first be loaded, and one
        more to delete what was evicted).

        Raises:
            StoreUnavailable: Redis is down or slow; nothing is known to be published.
        """
        commands: list[list[Arg]] = []
        for put in puts:
            ttl_ms = max(put.expires_ms - now_ms, 1)
            commands.append(["SET", entry_key(put.entry_id), put.payload, "PX", ttl_ms])
            commands.append(["EVALSHA", _ACCOUNT.sha, 4, *self._account_args(put, now_ms)])
        replies = await self.redis.pipeline(commands)
        evicted: list[bytes] = []
        for put, reply in zip(puts, replies[1::2], strict=True):
            if isinstance(reply, ReplyError):
                if reply.kind != "NOSCRIPT":
                    raise reply
                reply = await self.redis.run(_ACCOUNT, self._account_args(put, now_ms)[:4],
                                             self._account_args(put, now_ms)[4:])
            if isinstance(reply, list):
                evicted.extend(v for v in reply if isinstance(v, bytes))
        if evicted:
            await self.redis.call("DEL", *(entry_key(v.decode()) for v in evicted))

    def _account_args(self, put: Put, now_ms: int) -> list[Arg]:
        return [_INDEX, _SIZES, _BYTES, STREAM, put.entry_id, put.size, put.expires_ms,
                now_ms, self.max_entries, self.max_bytes, self.origin, self.stream_len]

    async def fetch(self, entry_ids: Sequence[str]) -> list[bytes | None]:
        """The entries' records (``None``: expired or evicted since), in one round trip."""
        if not entry_ids:
            return []
        replies = await self.redis.pipeline([["GET", entry_key(i)] for i in entry_ids])
        return [r if isinstance(r, bytes) else None for r in replies]
