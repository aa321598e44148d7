"""Per-tenant cache similarity thresholds, moved by feedback on cached answers
(``engine.core.cache.threshold``), read on every lookup.

The hot path reads a local dict and never waits: :meth:`TenantThresholds.get`. A change (a
bad report on a cache hit, an admin reset) is written through the store:

* without ``state.redis_url``, this process's memory (:class:`MemoryThresholds`): a restart
  starts from the configured threshold again;
* with it, the hash ``llmr:threshold:{cache}:tenants`` (one field per tenant), stepped by a
  script so that two processes' reports both count, and announced on
  ``llmr:{bus}:cache-thresholds``, which every process follows to take the value up. While
  Redis is down a report moves this process's copy only; when Redis is back each process
  takes the stricter of its own value and the shared one, and writes its own back if it is
  the stricter (so a Redis restarted empty gets the values again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from engine.core.cache.threshold import ThresholdRule
from engine.errors import StoreUnavailable
from engine.stores.redis import Script
from engine.stores.redis.tail import StreamEntry

from .shared import PREFIX, Shared

__all__ = ["MemoryThresholds", "SharedThresholds", "TenantThresholds", "ThresholdStore"]

log = logging.getLogger("llm_router")

TENANTS = PREFIX + "threshold:{cache}:tenants"
NEWS = PREFIX + "{bus}:cache-thresholds"
_NEWS_KEPT = 1000

# KEYS: the hash, the news stream; ARGV: tenant, floor, step, ceiling, stream length.
_TIGHTEN = Script("""
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2])
local floor, step, ceiling = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ceiling < floor then ceiling = floor end
if current < floor then current = floor end
local new = math.min(ceiling, current + step)
new = math.floor(new * 1000000 + 0.5) / 1000000
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.6f', new))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 't', ARGV[1],
           'v', string.format('%.6f', new))
return string.format('%.6f', new)
""")


# KEYS: the hash, the news stream; ARGV: tenant, value, stream length. Raises, never lowers.
_RAISE_TO = Script("""
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[1], 'v', ARGV[2])
return 1
""")


class ThresholdStore(Protocol):
    """Where tenant thresholds live; every method may raise ``StoreUnavailable``."""

    async def load(self) -> dict[str, float]: ...
    async def tighten(self, tenant: str, rule: ThresholdRule, current: float) -> float: ...
    async def raise_to(self, tenant: str, value: float) -> None: ...
    async def reset(self, tenants: Iterable[str] | None) -> None: ...


class MemoryThresholds:
    """This process only (no ``state.redis_url``)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    async def load(self) -> dict[str, float]:
        return dict(self.values)

    async def tighten(self, tenant: str, rule: ThresholdRule, current: float) -> float:
        self.values[tenant] = rule.tightened(self.values.get(tenant, current))
        return self.values[tenant]

    async def raise_to(self, tenant: str, value: float) -> None:
        self.values[tenant] = max(value, self.values.get(tenant, value))

    async def reset(self, tenants: Iterable[str] | None) -> None:
        if tenants is None:
            self.values.clear()
        for tenant in tenants or ():
            self.values.pop(tenant, None)


class SharedThresholds:
    """Every process's (``state.redis_url``): the hash, the script, the news stream."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def load(self) -> dict[str, float]:
        raw: Any = await self.shared.redis.call("HGETALL", TENANTS)
        pairs = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else {}
        return {k.decode(): float(v) for k, v in pairs.items()}

    async def tighten(self, tenant: str, rule: ThresholdRule, current: float) -> float:
        new: Any = await self.shared.redis.run(
            _TIGHTEN, [TENANTS, NEWS],
            [tenant, repr(rule.floor), repr(rule.step), repr(rule.ceiling), _NEWS_KEPT])
        return float(new)

    async def raise_to(self, tenant: str, value: float) -> None:
        await self.shared.redis.run(_RAISE_TO, [TENANTS, NEWS], [tenant, f"{value:.6f}",
                                                                 _NEWS_KEPT])

    async def reset(self, tenants: Iterable[str] | None) -> None:
        redis = self.shared.redis
        names = None if tenants is None else list(tenants)
        if names is None:
            await redis.pipeline([["DEL", TENANTS],
                                  ["XADD", NEWS, "MAXLEN", "~", _NEWS_KEPT, "*", "reset", "*"]])
        elif names:
            await redis.pipeline(
                [["HDEL", TENANTS, *names]]
                + [["XADD", NEWS, "MAXLEN", "~", _NEWS_KEPT, "*", "reset", name]
                   for name in names])


class TenantThresholds:
    """The thresholds every lookup uses: the configured one, or the tenant's own."""

    def __init__(self, rule: ThresholdRule, store: ThresholdStore, *, enabled: bool = True,
                 bad_below: float = 0.5) -> None:
        self.rule = rule
        self.store = store
        self.enabled = enabled
        self.bad_below = bad_below
        self._values: dict[str, float] = {}

    def get(self, tenant: str) -> float:
        """The threshold for ``tenant``'s lookups (no I/O)."""
        return self._values.get(tenant, self.rule.floor)

    async def open(self, shared: Shared | None) -> None:
        """Load the stored values; with ``shared``, follow the other processes' changes and
        reload whenever Redis comes back."""
        if shared is not None:
            try:
                since = await shared.last_id(NEWS)
            except StoreUnavailable:
                since = "$"
            shared.tail.follow(NEWS, self._on_news, since=since)
            shared.redis.on_up(self.resync)
        await self.resync()

    async def resync(self) -> None:
        """Agree with the store (at start, and when Redis comes back): each tenant gets the
        stricter of its stored and its local threshold, and a local one the store lacks (a
        report made while Redis was down, or a Redis restarted empty) is written back."""
        try:
            stored = await self.store.load()
            for tenant, mine in list(self._values.items()):
                if mine > stored.get(tenant, self.rule.floor):
                    await self.store.raise_to(tenant, mine)
                    stored[tenant] = mine
        except StoreUnavailable as exc:
            log.warning("cache thresholds: %s; using this process's values", exc.message)
            return
        self._values = {t: self.rule.bounded(v) for t, v in stored.items()
                        if self.rule.bounded(v) > self.rule.floor}

    async def report(self, tenant: str, quality: float) -> dict[str, Any]:
        """One quality report on a cached answer served to ``tenant``: below ``bad_below``
        it tightens the tenant's threshold by one step. What changed, for the response."""
        old = self.get(tenant)
        new = old
        if self.enabled and quality < self.bad_below:
            try:
                new = await self.store.tighten(tenant, self.rule, old)
            except StoreUnavailable:
                new = self.rule.tightened(old)  # this process only, until Redis is back
            self._values[tenant] = new
        return {"tenant": _shown(tenant), "old": old, "new": new, "floor": self.rule.floor,
                "ceiling": max(self.rule.ceiling, self.rule.floor)}

    async def reset(self, tenants: Iterable[str] | None = None) -> int:
        """Back to the configured threshold: ``tenants`` (digests as shown), or every tenant.
        How many were reset."""
        names = None if tenants is None else [_stored(t) for t in tenants]
        await self.store.reset(names)
        targets = list(self._values) if names is None else [n for n in names if n in self._values]
        for name in targets:
            del self._values[name]
        return len(targets)

    async def _on_news(self, entries: list[StreamEntry]) -> None:
        """Another process's change (``llmr:{bus}:cache-thresholds``)."""
        for entry in entries:
            reset = entry.fields.get(b"reset")
            if reset == b"*":
                self._values.clear()
            elif reset is not None:
                self._values.pop(reset.decode(), None)
            elif b"t" in entry.fields:
                self._values[entry.fields[b"t"].decode()] = self.rule.bounded(
                    float(entry.fields[b"v"]))

    def describe(self, tenant: str | None) -> dict[str, Any]:
        """``GET /v1/routing``'s ``cache`` part: the configured threshold and its bounds,
        ``tenant``'s own (the caller's), and with ``tenant=None`` (the admin key) every
        tenant's that feedback moved."""
        out: dict[str, Any] = {
            "similarity_thresh": self.rule.floor,
            "tenant_threshold": {"enabled": self.enabled, "step": self.rule.step,
                                 "ceiling": max(self.rule.ceiling, self.rule.floor),
                                 "bad_below": self.bad_below},
            "tightened_tenants": len(self._values),
        }
        if tenant is None:
            out["tenants"] = {_shown(t): v for t, v in sorted(self._values.items())}
        else:
            out["yours"] = {"tenant": _shown(tenant), "threshold": self.get(tenant)}
        return out


def _shown(tenant: str) -> str:
    """A tenant as users see it: its digest, or ``anonymous`` for callers without a
    credential (the empty tenant)."""
    return tenant or "anonymous"


def _stored(shown: str) -> str:
    return "" if shown == "anonymous" else shown
