"""Quality feedback and calibrated thresholds shared by every router process
(``state.redis_url``): calibration sees every process's reports, each step is taken once, and
every process routes with the thresholds it produced.

* A report is appended to the stream ``llmr:feedback:{calibration}:reports`` (its id orders
  it) and counted in the hash ``llmr:feedback:{calibration}:summary``.
* Calibration runs under the lock ``llmr:feedback:{calibration}:lock`` (``SET NX PX``, freed
  by a compare-and-delete script), so two processes never step on the same evidence. The
  holder first counts the reports appended since the last calibration into the hash
  ``llmr:feedback:{calibration}:tally:{base}`` (per tier and score point, the unspent reports
  and their summed quality in millionths, as ``engine.core.routing.calibration.Tally``; a
  script adds them and moves its ``counted`` mark only if no other process counted them
  first), each tier's only if they come after the ids spent on its threshold (kept in
  ``llmr:feedback:{calibration}:state``). It then calibrates on the tally: normally one new
  report to count, however many are stored. When a threshold moves it writes, in one
  ``MULTI``, the new values and the spent ids, clears that tier from the tally, pushes the
  change to the list ``llmr:feedback:{calibration}:changes`` and the news to
  ``llmr:{bus}:thresholds``, which every process follows to take the new values up.
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

from engine.core.routing.calibration import (
    THRESHOLD_TIERS,
    Adjustment,
    Report,
    Tally,
    millionths,
    point,
)
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
TALLY = _BASE + "tally:"  # and the config's thresholds
_LOCK_MS = 5000  # a holder that dies frees the lock after this
_LOCK_WAIT = 2.0  # seconds a report waits for another process's calibration
_KEPT_REPORTS = 100_000  # the stream keeps at least this many reports
_COUNT_READ = 10_000  # reports read per XRANGE when counting a backlog
_KEPT_CHANGES = 200

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS[1] a tally; ARGV[1] the last report counted in it so far, ARGV[2] the last one now, then
# field and increment pairs: added only if nobody counted since (a holder whose lock expired).
_COUNT = Script("""
if (redis.call('HGET', KEYS[1], 'counted') or '0-0') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'counted', ARGV[2])
return 1
""")

Calibrate = Callable[[Tally, dict[str, int]], list[Adjustment]]
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
            ["XADD", REPORTS, "MAXLEN", "~", _KEPT_REPORTS, "*", "score", repr(report.score),
             "tier", tier, "quality", repr(report.quality), "at", repr(time.time()),
             "request_id", request_id or "", "model", model or ""],
            ["HINCRBY", SUMMARY, f"{tier}:reports", 1],
            ["HINCRBYFLOAT", SUMMARY, f"{tier}:quality", repr(report.quality)],
        ])

    async def calibrate(self, step: Calibrate) -> list[Adjustment] | None:
        """Run ``step(the tally of unspent reports, thresholds now)`` under the shared lock and
        keep what it moved; None when the lock could not be had in time (another process is
        slow), or was lost while counting.

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

    async def _calibrate(self, step: Calibrate) -> list[Adjustment] | None:
        values = _pairs(await self.redis.call("HGETALL", STATE))
        thresholds = self._thresholds(values)
        spent = {THRESHOLD_TIERS[name]: values.get(f"{self.base}:spent:{name}", "0-0")
                 for name in THRESHOLD_TIERS}
        tally_key = TALLY + self.base
        counted = await self._count_new(tally_key, spent)
        if counted is None:
            return None
        cells = _pairs(await self.redis.call("HGETALL", tally_key))
        tally = _tally(cells)
        changes = step(tally, thresholds)
        if not changes:
            return changes
        for c in changes:
            thresholds[c.name] = c.new
        news = {"base": self.base, **thresholds}
        moved = {THRESHOLD_TIERS[c.name] for c in changes}
        cleared = [field for field in cells if field.split(":")[0] in {str(t) for t in moved}]
        commands: list[list[Any]] = [
            ["MULTI"],
            ["HSET", STATE, *[x for c in changes for x in (
                f"{self.base}:{c.name}", c.new, f"{self.base}:spent:{c.name}", counted)]],
            ["XADD", NEWS, "MAXLEN", "~", 1000, "*", "thresholds", orjson.dumps(news)],
        ]
        if cleared:
            commands.append(["HDEL", tally_key, *cleared])
        for c in changes:
            commands.append(["LPUSH", CHANGES, orjson.dumps({
                "at": time.time(), "name": c.name, "old": c.old, "new": c.new,
                "samples": c.samples, "quality": None if c.quality is None
                else round(c.quality, 4), "reason": c.reason, "base": self.base})])
        commands += [["LTRIM", CHANGES, 0, _KEPT_CHANGES - 1], ["EXEC"]]
        await self.redis.pipeline(commands)
        return changes

    async def _count_new(self, key: str, spent: dict[int, str]) -> str | None:
        """Count into the tally ``key`` the reports appended since it was last counted (each
        tier's after the id spent on its threshold); the id of the last report counted, or
        None if another process counted them first."""
        raw_mark: Any = await self.redis.call("HGET", key, "counted")
        counted = "0-0" if raw_mark is None else raw_mark.decode()
        while True:
            raw: Any = await self.redis.call("XRANGE", REPORTS, f"({counted}", "+",
                                             "COUNT", _COUNT_READ,
                                             timeout=max(self.redis.timeout, 2.0))
            if not raw:
                return counted
            cells: dict[str, int] = {}
            for ident, flat in raw:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                tier = int(fields[b"tier"])
                if tier in spent and _id(ident) > _id(spent[tier]):
                    at = f"{tier}:{point(float(fields[b'score']))}"
                    cells[at + ":n"] = cells.get(at + ":n", 0) + 1
                    cells[at + ":q"] = (cells.get(at + ":q", 0)
                                        + millionths(float(fields[b"quality"])))
            last = raw[-1][0].decode()
            if not await self.redis.run(_COUNT, [key], [counted, last, *[
                    x for field, value in cells.items() for x in (field, value)]]):
                return None
            counted = last
            if len(raw) < _COUNT_READ:
                return counted

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


def _tally(cells: dict[str, str]) -> Tally:
    """The tally a hash of ``{tier}:{point}:n`` / ``:q`` fields holds."""
    tally = Tally()
    for field, value in cells.items():
        tier, _, rest = field.partition(":")
        at, _, kind = rest.partition(":")
        if kind == "n":
            tally.count(int(tier), int(at), int(value), int(cells.get(f"{tier}:{at}:q", "0")))
    return tally


def _pairs(reply: Any) -> dict[str, str]:
    if not isinstance(reply, list):
        return {}
    return {k.decode(): v.decode() for k, v in zip(reply[::2], reply[1::2], strict=True)}

