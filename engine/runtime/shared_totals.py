"""Totals shared by every router process (``state.redis_url``): ``/stats``, ``/v1/backends``
and ``/v1/routing`` show the sum of all processes from any of them.

Each process keeps counting on its own (``Stats``, the pool), as it does alone, and a
background task writes its *own running totals* - absolute values, not increments - to a hash
of its own, ``llmr:stats:{totals}:proc:<origin>``, listed in the set
``llmr:stats:{totals}:procs``: as soon as it counts something (``Stats.on_count``; a busy
process at most every :data:`MIN_GAP_SEC`), and every :data:`FLUSH_SEC` for what changes
without a count. A reader sums every other process's hash in one script call and adds its own
current totals, so its view is exact for itself and a few milliseconds behind for the others
(the write queues behind the Redis work of the request it counts).

Absolute values make a write idempotent: a write whose reply was lost (Redis timed out, then
applied it) counts nothing twice, and nothing counted while Redis was down is lost - the first
write after it returns carries it. So a write need only carry the values that changed since the
last one Redis acknowledged: a few fields a request, where the whole hash holds a few hundred in
a deployment with many client keys, models and labels (every write used to encode, send and set
them all). A partial write finds the hash gone when Redis restarted empty (or evicted it)
without the process noticing; it then writes nothing and says so, and the whole hash follows at
once, so each running process fills a Redis that restarted empty again with its next write.

A process that stops adds its final totals to ``llmr:stats:{totals}:retired`` and deletes its
hash, in one script (:data:`_RETIRE`): a reader sums the live processes' hashes and that one,
so the totals are still those of every process that ran, while the keys (and a read's work)
stay those of the processes alive, however many restarts and rolling deploys came before.

A process killed outright (SIGKILL, out of memory, a ``--workers`` worker that crashed) cannot
do that: every :data:`REAP_SEC` each process looks for listed processes it knows are dead (on
its own host, by their pid: origins are ``host:pid:token``, as run owners) whose gauges have
expired, and folds such a hash the same way (:data:`_REAP`), leaving the marker
``llmr:stats:{totals}:reaped:<origin>`` for a day. A process that finds itself marked (a live
one taken for dead: another PID namespace under the same host name, cut off from Redis) stops
writing its totals rather than count them twice. Processes on other hosts are never judged
dead: a killed one's hash stays, counted.

With Redis down a reader answers from this process's totals alone and says so
(``"scope": "process"``; ``"shared"`` otherwise).

Gauges (``GET /metrics``: chat requests in flight, workflow runs queued and running) are not
totals: a stopped process's would stay in the sum for ever. Each process writes its own to a
hash of its own that expires :data:`GAUGE_TTL_SEC` after its last write (rewritten every
second), so the sum covers the processes alive now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from engine.core.pool import BackendPool
from engine.core.stats import Stats
from engine.errors import StoreUnavailable
from engine.stores.redis import ReplyError, Script

from .shared import PREFIX, Shared

__all__ = ["FLUSH_SEC", "GAUGE_TTL_SEC", "MIN_GAP_SEC", "REAP_SEC", "SharedTotals",
           "flatten"]

log = logging.getLogger("llm_router")

FLUSH_SEC = 0.25
#: The shortest time between two writes: a busy process writes its totals at most this often.
MIN_GAP_SEC = 0.01
GAUGE_TTL_SEC = 3.0
_GAUGE_EVERY_SEC = 1.0
PROCS = PREFIX + "stats:{totals}:procs"
PROC_PREFIX = PREFIX + "stats:{totals}:proc:"
GAUGE_PREFIX = PREFIX + "stats:{totals}:gauges:"
RETIRED = PREFIX + "stats:{totals}:retired"
REAPED_PREFIX = PREFIX + "stats:{totals}:reaped:"
#: How often a process looks for dead processes' hashes.
REAP_SEC = 5.0
_REAPED_KEPT_SEC = 86400
#: Between the labels of one flattened name (names and workflow names hold no tab).
SEP = "\t"

Gauges = Callable[[], dict[str, float]]

# The sum of every listed process's hashes (totals, and gauges while they live) but ARGV[1]'s
# (the caller adds its own, current), and the stopped processes' (KEYS[4]). Lua 5.1 numbers
# are doubles: sums are exact for counts below 2**53, amounts to ~15 digits.
_SUM = Script("""
local sums, order = {}, {}
local function add(flat)
  for i = 1, #flat, 2 do
    local k = flat[i]
    if sums[k] == nil then sums[k] = 0; order[#order + 1] = k end
    sums[k] = sums[k] + tonumber(flat[i + 1])
  end
end
for _, proc in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if proc ~= ARGV[1] then
    for _, prefix in ipairs({KEYS[2], KEYS[3]}) do
      add(redis.call('HGETALL', prefix .. proc))
    end
  end
end
add(redis.call('HGETALL', KEYS[4]))
local out = {}
for _, k in ipairs(order) do
  out[#out + 1] = k
  out[#out + 1] = string.format('%.17g', sums[k])
end
return out
""")

# A process stops. KEYS: the set of processes, its totals hash, its gauges hash, the stopped
# processes' totals, its reaped marker. ARGV: its origin, then its final totals as name,
# value pairs (not added if it was reaped: its hash was).
_RETIRE = Script("""
if redis.call('EXISTS', KEYS[5]) == 0 then
  for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1]) end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
""")

# A process writes its totals. KEYS: the set of processes, its totals hash, its reaped
# marker. ARGV: its origin, "all" or "changed" (the values that changed since its last
# acknowledged write), then name, value pairs. 0: it was reaped, nothing written; 2: the
# changed values only, and the hash is gone (Redis restarted empty, or evicted it): nothing
# written, the caller writes them all.
_WRITE = Script("""
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[2] == 'changed' and redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
for i = 3, #ARGV, 1000 do  -- unpack has a bound: 500 fields at a time
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
""")

# A dead process's totals join the stopped processes'. KEYS: the set of processes, its totals
# hash, its gauges hash, the stopped processes' totals, its reaped marker. ARGV: its origin,
# how long the marker stays. 0 while its gauges live (it is not dead after all).
_REAP = Script("""
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do redis.call('HINCRBYFLOAT', KEYS[4], flat[i], flat[i + 1]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
return 1
""")


def flatten(stats: Stats, pool: BackendPool) -> dict[str, float]:
    """A process's totals as one flat hash (the names :func:`_inflate` reads back, and those
    ``GET /metrics`` renders)."""
    out: dict[str, float] = {
        "total_requests": stats.total_requests, "spent_usd": stats.spent_usd,
        "saved_usd": stats.saved_usd, "failovers": stats.failovers,
        "tokens:input": stats.input_tokens, "tokens:output": stats.output_tokens,
        "cache:hits": stats.cache_hits, "cache:misses": stats.cache_misses,
        "cache:saved_usd": stats.cache_saved_usd, "dedup:joined": stats.dedup_joined,
        "dedup:saved_usd": stats.dedup_saved_usd,
    }
    if stats.comparisons:
        out["compare_spent_usd"] = stats.compare_spent_usd
        for outcome, n in stats.comparisons.items():
            out[f"compare:{outcome}"] = n
    for name, n in stats.by_model.items():
        out[f"model:{name}"] = n
    for tier, n in stats.by_tier.items():
        out[f"tier:{tier}"] = n
    for code, n in stats.errors.items():
        out[f"error:{code}"] = n
    for key_id, (requests, spent, tokens) in stats.by_key.items():
        out[f"key:{key_id}:requests"] = requests
        out[f"key:{key_id}:spent_usd"] = spent
        out[f"key:{key_id}:tokens"] = tokens
    for backend in pool.backends.values():
        out[f"backend:{backend.name}:requests"] = backend.total_requests
        out[f"backend:{backend.name}:ejections"] = backend.ejections
        for outcome, n in backend.outcomes.items():
            out[f"attempt:{backend.name}{SEP}{outcome}"] = n
    for labels, n in stats.requests.items():
        out["req:" + SEP.join(labels)] = n
    for name, histogram in (("duration", stats.duration), ("ttfb", stats.first_byte)):
        for i, n in enumerate(histogram.counts):
            if n:
                out[f"hist:{name}:{i}"] = n
        out[f"hist:{name}:sum"] = histogram.total
    for model, usd in stats.spent_by_model.items():
        out[f"spent:{model}"] = usd
    for source, usd in stats.saved_by_source.items():
        out[f"saved:{source}"] = usd
    for (workflow, status), n in stats.workflow_runs.items():
        out[f"run:{workflow}{SEP}{status}"] = n
    return out


def _inflate(totals: dict[str, float], reference: Any) -> Stats:
    stats = Stats(reference=reference)
    plain = {"total_requests": "total_requests", "spent_usd": "spent_usd",
             "saved_usd": "saved_usd", "failovers": "failovers",
             "tokens:input": "input_tokens", "tokens:output": "output_tokens",
             "cache:hits": "cache_hits", "cache:misses": "cache_misses",
             "cache:saved_usd": "cache_saved_usd", "dedup:joined": "dedup_joined",
             "dedup:saved_usd": "dedup_saved_usd"}
    for name, value in totals.items():
        kind, _, rest = name.partition(":")
        if name in plain:
            amount = value if name.endswith("usd") else int(value)
            setattr(stats, plain[name], amount)
        elif kind == "model":
            stats.by_model[rest] = int(value)
        elif kind == "tier" and rest.isascii() and rest.isdigit():
            stats.by_tier[int(rest)] = int(value)
        elif kind == "error":
            stats.errors[rest] = int(value)
        elif kind == "key":
            key_id, _, part = rest.rpartition(":")
            row = stats.by_key.setdefault(key_id, [0, 0.0, 0])
            index = {"requests": 0, "spent_usd": 1, "tokens": 2}.get(part)
            if index is not None:
                row[index] = value if index == 1 else int(value)
    return stats


class SharedTotals:
    """``gauges()`` gives this process's gauges (names starting ``gauge:``)."""

    def __init__(self, shared: Shared, stats: Stats, pool: BackendPool, *, origin: str,
                 gauges: Gauges = dict, alive: Callable[[str], bool] | None = None) -> None:
        self.redis = shared.redis
        self.stats = stats
        self.pool = pool
        self.origin = origin
        self.gauges = gauges
        self._key = PROC_PREFIX + origin
        self._gauge_key = GAUGE_PREFIX + origin
        self._marker = REAPED_PREFIX + origin
        #: Whether another process may still be running (None: never reap).
        self.alive = alive
        self._written: dict[str, float] | None = None
        self._gauges_written: dict[str, float] | None = None
        self._gauges_at = 0.0
        self._retired = False
        self._reaped = False  # taken for dead by another process: writes nothing more
        self._counted = trio.Event()
        stats.on_count = self._wake
        shared.redis.on_up(self._rewrite)

    async def _rewrite(self) -> None:
        """Redis is back, perhaps restarted empty: write everything again."""
        self._written = self._gauges_written = None
        await self.flush()

    def _wake(self) -> None:
        self._counted.set()

    async def run(self) -> None:
        """Write this process's totals as soon as something is counted (at most every
        :data:`MIN_GAP_SEC`), and every :data:`FLUSH_SEC` whatever changed (gauges, health)."""
        reaped_at = -REAP_SEC
        try:
            while True:
                written_at = trio.current_time()
                await self.flush()
                if self.alive is not None and trio.current_time() - reaped_at >= REAP_SEC:
                    reaped_at = trio.current_time()
                    try:
                        await self.reap(self.alive)
                    except (StoreUnavailable, ReplyError):
                        pass  # the next round tries again
                # A request answered here, then /stats asked of another process: the count
                # is to be in Redis by then, not up to FLUSH_SEC later.
                with trio.move_on_after(FLUSH_SEC):
                    await self._counted.wait()
                self._counted = trio.Event()
                await trio.sleep_until(written_at + MIN_GAP_SEC)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.redis.timeout):
                await self.retire()

    async def retire(self) -> None:
        """This process stops: its totals (with what the last moments counted) join the
        stopped processes', and its hashes go. Tried once: a retry after a lost reply would
        count them twice. With Redis down its hash stays as last written."""
        self._retired = True
        totals = flatten(self.stats, self.pool)
        flat = [x for pair in totals.items() for x in (pair[0], repr(pair[1]))]
        try:
            await self.redis.run(_RETIRE, [PROCS, self._key, self._gauge_key, RETIRED,
                                           self._marker], [self.origin, *flat])
        except (StoreUnavailable, ReplyError):
            pass

    async def reap(self, alive: Callable[[str], bool]) -> int:
        """Fold the totals of the listed processes ``alive`` says are dead (and whose gauges
        expired) into the stopped processes'; how many went."""
        listed: Any = await self.redis.call("SMEMBERS", PROCS)
        gone = 0
        for name in (member.decode() for member in listed):
            if name == self.origin or alive(name):
                continue
            gone += int(await self.redis.run(
                _REAP, [PROCS, PROC_PREFIX + name, GAUGE_PREFIX + name, RETIRED,
                        REAPED_PREFIX + name], [name, _REAPED_KEPT_SEC]) == 1)
        return gone

    async def flush(self) -> None:
        """Write what changed: the totals (the write script) and the gauges, in one round trip."""
        if self._retired:
            return  # counted in the stopped processes' totals
        commands: list[list[Any]] = []
        totals = flatten(self.stats, self.pool)
        keys = [PROCS, self._key, self._marker]
        flat: list[Any] = []
        if totals != self._written and not self._reaped:
            flat = self._write_args(totals, self._written)
            commands.append(["EVALSHA", _WRITE.sha, len(keys), *keys, *flat])
        gauges = self.gauges()
        now = trio.current_time()
        fresh = now - self._gauges_at < _GAUGE_EVERY_SEC
        write_gauges = bool(gauges) and (gauges != self._gauges_written or not fresh)
        if write_gauges:
            pairs = [x for pair in gauges.items() for x in (pair[0], repr(pair[1]))]
            commands += [["DEL", self._gauge_key], ["HSET", self._gauge_key, *pairs],
                         ["PEXPIRE", self._gauge_key, int(GAUGE_TTL_SEC * 1000)],
                         ["SADD", PROCS, self.origin]]
        if not commands:
            return
        try:
            replies = await self.redis.pipeline(commands)
        except StoreUnavailable:
            return  # kept: the next write after Redis is back carries it
        if flat:
            written = replies[0]
            if isinstance(written, ReplyError):
                if written.kind != "NOSCRIPT":
                    raise written
                try:  # Redis does not know the script yet (or restarted): load it
                    written = await self.redis.run(_WRITE, keys, flat)
                except StoreUnavailable:
                    return
            if written == 2:  # the hash is gone: everything, not what changed
                try:
                    written = await self.redis.run(_WRITE, keys, self._write_args(totals, None))
                except StoreUnavailable:
                    self._written = None
                    return
            if written == 0:
                self._reaped = True
                log.warning("another router process took this one for dead and counted its "
                            "totals; this process's counts from now on are not shared")
            self._written = totals
        if write_gauges:
            self._gauges_written, self._gauges_at = gauges, now

    def _write_args(self, totals: dict[str, float], written: dict[str, float] | None
                    ) -> list[Any]:
        """The write script's arguments: every value of ``totals``, or (``written`` being what
        Redis last acknowledged) those that changed. A name never leaves ``totals``."""
        pairs: Iterable[tuple[str, float]] = totals.items()
        mode = "all"
        if written is not None:
            pairs = [(name, value) for name, value in pairs if written.get(name) != value]
            mode = "changed"
        return [self.origin, mode, *(x for pair in pairs for x in (pair[0], repr(pair[1])))]

    async def totals(self) -> tuple[dict[str, float], str]:
        """Every process's totals summed, and ``"shared"``; or this process's alone and
        ``"process"`` while Redis does not answer."""
        own = flatten(self.stats, self.pool) | self.gauges()
        try:
            reply: Any = await self.redis.run(
                _SUM, [PROCS, PROC_PREFIX, GAUGE_PREFIX, RETIRED], [self.origin])
        except StoreUnavailable:
            return own, "process"
        summed: dict[str, float] = {}
        for name, value in zip(reply[::2], reply[1::2], strict=True):
            summed[name.decode()] = float(value)
        for name, value in own.items():
            summed[name] = summed.get(name, 0) + value
        return summed, "shared"

    async def stats_snapshot(self) -> dict[str, object]:
        """``GET /stats`` for all processes, with ``scope``."""
        totals, scope = await self.totals()
        return {**_inflate(totals, self.stats.reference).snapshot(), "scope": scope}

    async def backends_snapshot(self, entries: list[dict[str, object]]
                                ) -> list[dict[str, object]]:
        """``GET /v1/backends`` entries (this process's) with the totals of all processes."""
        totals, scope = await self.totals()
        out = []
        for entry in entries:
            name = entry["name"]
            if f"backend:{name}:requests" in totals:
                entry = {**entry,
                         "total_requests": int(totals[f"backend:{name}:requests"]),
                         "ejections": int(totals[f"backend:{name}:ejections"]),
                         "scope": scope}
            out.append(entry)
        return out
