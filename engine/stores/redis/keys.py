"""The shared key store: client keys in Redis, so that every router process sharing it
(``state.redis_url``) knows every key, and a key's rate limits and budget hold for all of
them together.

Implements :class:`~engine.stores.keys.KeyStore` and adds what only a shared store can do:
:meth:`RedisKeyStore.admit` and :meth:`RedisKeyStore.settle`, one script each
(:mod:`.key_scripts`), so a call's admission (its rate limits and the hold on its budget) is
one round trip and one atomic step across all processes.

Keys: ``llmr:key:{<key id>}:record|gate|held|spend:<period>`` (one hash tag per key), the
digest index ``llmr:key:{index}:digests`` (the secret's digest to the key's id: the secret
itself is never sent to Redis), the list ``llmr:key:{index}:all`` by creation time, and the
news stream ``llmr:{bus}:keys`` (an entry naming the key's id at each create, update and
revocation, which every process follows). A ``spend:<period>`` hash of a day, week or month
expires ``SPEND_KEPT_SEC`` (``engine.core.keys``) after its period ends (a key with a daily
budget would otherwise leave one hash a day for good); ``spend:total`` stays. The record
scripts name keys of two hash tags, so, like the run store, this is for one Redis server (or
a replicated primary), not Redis Cluster; admission and settlement touch one key's tag only.

Errors: Redis down, slow or refusing a command is :class:`~engine.errors.StoreUnavailable`
at once; the runtime decides what a request does then (``engine.runtime.shared_keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.core.keys import SPEND_KEPT_SEC, KeyRecord, KeySettings, period_end
from engine.errors import StoreUnavailable

from . import key_scripts as scripts
from .client import Redis, Script
from .resp import Arg, Reply, ReplyError

__all__ = ["HOLD_SEC", "NEWS", "Admission", "RedisKeyStore", "Settlement"]

#: The stream every process follows for news of keys (created, updated, revoked).
NEWS = "llmr:{bus}:keys"
#: How long a budget hold lasts if the call's process never settles it (it died mid-call).
HOLD_SEC = 900.0
_DIGESTS = "llmr:key:{index}:digests"
_ALL = "llmr:key:{index}:all"


def _key(key_id: str, part: str) -> str:
    return f"llmr:key:{{{key_id}}}:{part}"


def _spend_expiry(period: str) -> str:
    """When a period's spend hash goes (``PEXPIREAT`` milliseconds), '' for never."""
    end = period_end(period)
    return "" if end is None else str(int((end + SPEND_KEPT_SEC) * 1000))


@dataclass(frozen=True, slots=True)
class Admission:
    """A shared admission's verdict: ``ok``, ``requests`` or ``tokens`` (a rate limit
    refused it), ``budget`` (spent), ``revoked`` or ``gone``; with what Redis knew."""

    verdict: str
    spent: float = 0.0
    reserved: float = 0.0
    retry_after: float = 0.0
    #: ``(remaining, reset after)`` of the request and token limits, for the headers.
    requests: tuple[int, float] | None = None
    tokens: tuple[int, float] | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """One admitted call's real cost, to charge against its key."""

    key_id: str
    period: str
    hold: str  # the admission's hold ('' for none)
    held_usd: float
    tpm: int  # 0: the token limit was not taken in Redis
    reserved_tokens: int
    tokens: int
    cost_usd: float


def _text(value: Reply) -> str:
    assert isinstance(value, bytes), value
    return value.decode()


def _parse(reply: Reply) -> KeyRecord | None:
    if not isinstance(reply, list) or not reply:
        return None
    fields = {_text(k): _text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}
    revoked = fields.get("revoked_at", "")
    return KeyRecord(id=fields["id"], digest=fields["digest"], prefix=fields["prefix"],
                     settings=KeySettings.model_validate(orjson.loads(fields["settings"])),
                     created_at=float(fields["created_at"]),
                     revoked_at=float(revoked) if revoked else None)


def _pair(left: bytes, reset: bytes) -> tuple[int, float] | None:
    return (int(left), float(reset)) if left else None


class RedisKeyStore:
    """Keys in the Redis of :class:`~engine.runtime.shared.Shared` (whose lifetime the client
    has: :meth:`close` leaves it open)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"key store: {exc.message}") from None
        except ReplyError as exc:
            raise StoreUnavailable(f"key store: Redis refused a command ({exc})") from None

    async def open(self) -> None:
        """Nothing to open: a Redis that is down now is not an error (the gate serves the
        keys it knows and catches up when Redis answers)."""

    async def close(self) -> None:
        pass

    async def create(self, record: KeyRecord) -> None:
        keys = [_key(record.id, "record"), NEWS, _DIGESTS, _ALL]
        args: list[Arg] = [record.id, record.digest, record.prefix, _settings(record.settings),
                           repr(record.created_at),
                           "" if record.revoked_at is None else repr(record.revoked_at)]
        await self._do(lambda: self.redis.run(scripts.CREATE, keys, args))

    async def get(self, key_id: str) -> KeyRecord | None:
        return _parse(await self._do(lambda: self.redis.call("HGETALL",
                                                             _key(key_id, "record"))))

    async def get_many(self, key_ids: Sequence[str]) -> dict[str, KeyRecord | None]:
        """The records of ``key_ids`` in one round trip (None: no such key)."""
        if not key_ids:
            return {}
        replies = await self._do(lambda: self.redis.pipeline(
            [["HGETALL", _key(key_id, "record")] for key_id in key_ids]))
        return {key_id: _parse(reply) for key_id, reply in zip(key_ids, replies, strict=True)}

    async def by_digest(self, digest: str) -> KeyRecord | None:
        key_id = await self._do(lambda: self.redis.call("HGET", _DIGESTS, digest))
        return None if key_id is None else await self.get(_text(key_id))

    async def list(self) -> Sequence[KeyRecord]:
        """Every key, revoked ones included, oldest first (ties by id)."""
        ids = await self._do(lambda: self.redis.call("ZRANGE", _ALL, 0, -1))
        found = await self.get_many([_text(key_id) for key_id in ids])
        return [record for record in found.values() if record is not None]

    async def update(self, key_id: str, settings: KeySettings) -> KeyRecord | None:
        return _parse(await self._do(lambda: self.redis.run(
            scripts.UPDATE, [_key(key_id, "record"), NEWS], [key_id, _settings(settings)])))

    async def revoke(self, key_id: str, *, at: float) -> KeyRecord | None:
        return _parse(await self._do(lambda: self.redis.run(
            scripts.REVOKE, [_key(key_id, "record"), NEWS], [key_id, repr(at)])))

    async def add_spend(self, spends: Mapping[tuple[str, str], tuple[float, int, int]]
                        ) -> None:
        commands: list[list[Arg]] = []
        for (key_id, period), (cost, requests, tokens) in spends.items():
            spend = _key(key_id, f"spend:{period}")
            commands += [["HINCRBYFLOAT", spend, "cost", repr(cost)],
                         ["HINCRBY", spend, "requests", requests],
                         ["HINCRBY", spend, "tokens", tokens]]
            if expiry := _spend_expiry(period):
                commands.append(["PEXPIREAT", spend, expiry])
        if commands:
            await self._do(lambda: self._all(commands))

    async def spend(self, key_id: str, period: str) -> tuple[float, int, int]:
        cost, requests, tokens = await self._do(lambda: self.redis.call(
            "HMGET", _key(key_id, f"spend:{period}"), "cost", "requests", "tokens"))
        return (float(cost or 0), int(requests or 0), int(tokens or 0))

    # ---- shared admission ------------------------------------------------------------------

    async def admit(self, key_id: str, *, period: str, now: float, rpm: int | None,
                    tpm: int | None, tokens: int, count_request: bool, budget: float | None,
                    max_cost_usd: float, hold: str) -> Admission:
        """Take one call's share of the key's limits for every process at once, or say
        which limit refuses it. ``hold`` names the budget hold (``<ticket>:<usd>``)."""
        keys = [_key(key_id, "record"), _key(key_id, "gate"), _key(key_id, "held"),
                _key(key_id, f"spend:{period}")]
        args: list[Arg] = [repr(now), rpm or 0, tpm or 0, tokens, int(count_request),
                           -1 if budget is None else repr(budget), repr(max_cost_usd), hold,
                           repr(now + HOLD_SEC)]
        reply = await self._do(lambda: self.redis.run(scripts.ADMIT, keys, args))
        assert isinstance(reply, list)
        verdict, *rest = [_text(item) for item in reply]
        if verdict in ("requests", "tokens"):
            return Admission(verdict, retry_after=float(rest[0]))
        if verdict == "budget":
            return Admission(verdict, spent=float(rest[0]), reserved=float(rest[1]))
        if verdict != "ok":
            return Admission(verdict)
        raw = [item.encode() for item in rest]
        return Admission("ok", spent=float(rest[0]), reserved=float(rest[1]),
                         requests=_pair(raw[2], raw[3]), tokens=_pair(raw[4], raw[5]))

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Charge each call's real cost and give its hold back, in one round trip. A batch
        whose reply is lost (a timeout after Redis ran it) may be charged again when retried:
        spend can be overcounted then, never lost."""
        commands: list[list[Arg]] = []
        for s in settlements:
            keys = [_key(s.key_id, "gate"), _key(s.key_id, "held"),
                    _key(s.key_id, f"spend:{s.period}")]
            commands.append(["EVALSHA", scripts.SETTLE.sha, len(keys), *keys, s.hold,
                             repr(s.held_usd), s.tpm, s.reserved_tokens, s.tokens,
                             repr(s.cost_usd), 1, _spend_expiry(s.period)])
        if not commands:
            return
        await self._do(lambda: self._all(commands, script=scripts.SETTLE))

    async def _all(self, commands: Sequence[Sequence[Arg]], *,
                   script: Script | None = None) -> None:
        replies = await self.redis.pipeline(commands)
        if script is not None and any(isinstance(r, ReplyError) and r.kind == "NOSCRIPT"
                                      for r in replies):
            # Redis restarted and forgot the script: none of the batch ran. Load it, go again.
            await self.redis.call("SCRIPT", "LOAD", script.source)
            replies = await self.redis.pipeline(commands)
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply


def _settings(settings: KeySettings) -> bytes:
    return orjson.dumps(settings.model_dump(mode="json"))
