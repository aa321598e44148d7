"""Quality feedback and calibrated thresholds shared by every router process
(``state.redis_url``): calibration sees every process's reports, each step is taken once, and
every process routes with the thresholds it produced.

* A report is appended to the stream ``llmr:feedback:{calibration}:reports`` (its id orders
  it) and counted in the hash ``llmr:feedback:{calibration}:summary``.
* Calibration runs under the lock ``llmr:feedback:{calibration}:lock`` (``SET NX PX``, freed
  by a compare-and-delete script), so two processes never step on the same evidence: the
  holder reads the reports not yet spent on each threshold (ids after those kept in
  ``llmr:feedback:{calibration}:state``), and when a threshold moves it writes the new values
  and the spent ids there, the change to the list ``llmr:feedback:{calibration}:changes``, and
  the news to ``llmr:{bus}:thresholds``, which every process follows to take the new values up.
* As in the embedded store, thresholds, spent ids and changes belong to the config's own
  thresholds (``base``): calibration made from other values does not apply.
* Online learning's state (``engine.core.routing.online``) is one JSON value,
  ``llmr:feedback:{calibration}:online``, stepped under the same lock (so no step is lost to
  a concurrent one) and announced on ``llmr:{bus}:online``, whose entries carry the whole
  state (about 19 KB): every process routes with it from then on.
"""


from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from engine.core.routing.calibration import Adjustment, Report
from engine.errors import StoreUnavailable
from engine.stores.redis import Script
from engine.stores.redis.tail import StreamEntry

from .shared import PREFIX, Shared

__all__ = ["SharedFeedback"]

_BASE = PREFIX + "feedback:{calibration}:"
REPORTS = _BASE + "reports"
SUMMARY = _BASE + "summary"
STATE = _BASE + "state"
CHANGES = _BASE + "changes"
LOCK = _BASE + "lock"
NEWS = PREFIX + "{bus}:thresholds"
ONLINE = _BASE + "online"
ONLINE_NEWS = PREFIX + "{bus}:online"
_LOCK_MS = 5000  # a holder that dies frees the lock after this
_LOCK_WAIT = 2.0  # seconds a report waits for another process's calibration
_KEPT_REPORTS = 50_000  # calibration reads at most this many recent reports (as SQLite does)
_KEPT_CHANGES = 200

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

Calibrate = Callable[[list[Report], dict[str, int]], list[Adjustment]]
OnThresholds = Callable[[dict[str, int]], None]
Learn = Callable[[dict[str, Any] | None], Awaitable[dict[str, Any] | None]]
OnOnline = Callable[[dict[str, Any] | None], None]


def _id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class SharedFeedback:
    def __init__(self, shared: Shared, *, base: tuple[int, int],
                 on_thresholds: OnThresholds, on_online: OnOnline | None = None) -> None:
        self.shared = shared
        self.redis = shared.redis
        self.base = f"{base[0]},{base[1]}"
        self._on_thresholds = on_thresholds
        self._on_online = on_online
        self._following = False
        self._following_online = False

    @property
    def up(self) -> bool:
        return self.redis.up

    async def add(self, report: Report, *, request_id: str | None, model: str | None) -> None:
        """Raises: StoreUnavailable."""
        tier = report.tier
        await self.redis.pipeline([
            ["XADD", REPORTS, "MAXLEN", "~", _KEPT_REPORTS * 2, "*", "score", repr(report.score),
             "tier", tier, "quality", repr(report.quality), "at", repr(time.time()),
             "request_id", request_id or "", "model", model or ""],
            ["HINCRBY", SUMMARY, f"{tier}:reports", 1],
            ["HINCRBYFLOAT", SUMMARY, f"{tier}:quality", repr(report.quality)],
        ])

    async def calibrate(self, step: Calibrate) -> list[Adjustment] | None:
        """Run ``step(unspent reports, thresholds now)`` under the shared lock and keep what
        it moved; None when the lock could not be had in time (another process is slow).

        Raises: StoreUnavailable.
        """
        token = await self._lock()
        if token is None:
            return None
        try:
            return await self._calibrate(step)
        finally:
            await self._unlock(token)

    async def _lock(self) -> str | None:
        token = secrets.token_hex(8)
        with trio.move_on_after(_LOCK_WAIT):
            while await self.redis.call("SET", LOCK, token, "NX", "PX", _LOCK_MS) is None:
                await trio.sleep(0.01)
            return token
        return None

    async def _unlock(self, token: str) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.redis.run(_RELEASE, [LOCK], [token])
            except StoreUnavailable:
                pass  # it expires

    async def learn(self, step: Learn) -> tuple[bool, dict[str, Any] | None]:
        """Run ``step(the shared online state)`` under the shared lock and keep (and announce)
        what it returns (None: forget it). False when the lock could not be had in time.

        Raises: StoreUnavailable.
        """
        token = await self._lock()
        if token is None:
            return False, None
        try:
            raw: Any = await self.redis.call("GET", ONLINE)
            state = await step(None if raw is None else orjson.loads(raw))
            if state is None:
                await self.redis.pipeline([
                    ["DEL", ONLINE],
                    ["XADD", ONLINE_NEWS, "MAXLEN", "~", 100, "*", "state", b"null"]])
            else:
                blob = orjson.dumps(state)
                await self.redis.pipeline([
                    ["SET", ONLINE, blob],
                    ["XADD", ONLINE_NEWS, "MAXLEN", "~", 100, "*", "state", blob]])
            return True, state
        finally:
            await self._unlock(token)

    async def online_state(self) -> dict[str, Any] | None:
        """The shared online state (None: nothing learned); from then on, new ones are handed
        to ``on_online`` as they are made.

        Raises: StoreUnavailable."""
        since = await self.shared.last_id(ONLINE_NEWS)
        raw: Any = await self.redis.call("GET", ONLINE)
        if not self._following_online and self._on_online is not None:
            self.shared.tail.follow(ONLINE_NEWS, self._on_online_news, since=since)
            self._following_online = True
        return None if raw is None else dict(orjson.loads(raw))

    async def _on_online_news(self, entries: list[StreamEntry]) -> None:
        if entries and self._on_online is not None:
            state = orjson.loads(entries[-1].fields.get(b"state", b"null"))
            self._on_online(state if isinstance(state, dict) else None)

    async def _calibrate(self, step: Calibrate) -> list[Adjustment]:
        values = _pairs(await self.redis.call("HGETALL", STATE))
        thresholds = self._thresholds(values)
        spent = {tier: values.get(f"{self.base}:spent:tier{tier}_max", "0-0") for tier in (1, 2)}
        oldest = min(spent.values(), key=_id)
        # Only the reports after the least spent (newest first, as many as the embedded
        # store reads), with a longer wait than a plain command: there may be many.
        raw: Any = await self.redis.call("XREVRANGE", REPORTS, "+", f"({oldest}",
                                         "COUNT", _KEPT_REPORTS,
                                         timeout=max(self.redis.timeout, 2.0))
        reports: list[Report] = []
        newest = raw[0][0].decode() if raw else oldest
        for ident, flat in raw or []:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            tier = int(fields[b"tier"])
            if _id(ident) > _id(spent.get(tier, "0-0")):
                reports.append(Report(float(fields[b"score"]), tier, float(fields[b"quality"])))
        changes = step(reports, thresholds)
        if not changes:
            return changes
        for c in changes:
            thresholds[c.name] = c.new
        news = {"base": self.base, **thresholds}
        commands: list[list[Any]] = [
            ["HSET", STATE, *[x for c in changes for x in (
                f"{self.base}:{c.name}", c.new, f"{self.base}:spent:{c.name}", newest)]],
            ["XADD", NEWS, "MAXLEN", "~", 1000, "*", "thresholds", orjson.dumps(news)],
        ]
        for c in changes:
            commands.append(["LPUSH", CHANGES, orjson.dumps({
                "at": time.time(), "name": c.name, "old": c.old, "new": c.new,
                "samples": c.samples, "quality": None if c.quality is None
                else round(c.quality, 4), "reason": c.reason, "base": self.base})])
        commands.append(["LTRIM", CHANGES, 0, _KEPT_CHANGES - 1])
        await self.redis.pipeline(commands)
        return changes

    def _thresholds(self, state: dict[str, str]) -> dict[str, int]:
        out = {}
        for name in ("tier1_max", "tier2_max"):
            value = state.get(f"{self.base}:{name}")
            if value is not None:
                out[name] = int(value)
        return out

    async def thresholds(self) -> dict[str, int]:
        """The shared calibrated thresholds for this config (may be empty); from then on,
        new ones are handed to ``on_thresholds`` as they are made.

        Raises: StoreUnavailable."""
        since = await self.shared.last_id(NEWS)
        saved = self._thresholds(_pairs(await self.redis.call("HGETALL", STATE)))
        if not self._following:
            self.shared.tail.follow(NEWS, self._on_news, since=since)
            self._following = True
        return saved

    async def summary(self) -> dict[str, Any]:
        """Raises: StoreUnavailable."""
        values = _pairs(await self.redis.call("HGETALL", SUMMARY))
        tiers = sorted({int(k.split(":")[0]) for k in values})
        by_tier = {}
        for tier in tiers:
            n = int(values.get(f"{tier}:reports", "0"))
            if n:
                by_tier[str(tier)] = {"reports": n, "mean_quality":
                                      round(float(values[f"{tier}:quality"]) / n, 4)}
        return {"total": sum(t["reports"] for t in by_tier.values()), "by_tier": by_tier}

    async def recent_changes(self, limit: int = 20) -> list[dict[str, Any]]:
        """Raises: StoreUnavailable."""
        raw: Any = await self.redis.call("LRANGE", CHANGES, 0, _KEPT_CHANGES - 1)
        out = []
        for item in raw if isinstance(raw, list) else []:
            change = orjson.loads(item)
            if change.pop("base", None) == self.base:
                out.append(change)
        return out[:limit]

    async def _on_news(self, entries: list[StreamEntry]) -> None:
        for entry in entries:
            news: dict[str, Any] = orjson.loads(entry.fields.get(b"thresholds", b"{}"))
            if news.pop("base", None) == self.base:
                self._on_thresholds(news)


def _pairs(reply: Any) -> dict[str, str]:
    if not isinstance(reply, list):
        return {}
    return {k.decode(): v.decode() for k, v in zip(reply[::2], reply[1::2], strict=True)}

