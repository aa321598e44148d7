"""The Lua scripts behind the Redis key store: a key's record written together with the news
of it, and a call's admission and settlement, each one step that no other process's step
can split (Redis runs a script alone).

Per key, under its id's hash tag: ``record`` (a hash: ``id``, ``digest``, ``prefix``,
``settings`` JSON, ``created_at``, ``revoked_at``, empty while live), ``gate`` (a hash:
``rpm_tat`` and ``tpm_tat``, the rate limits' theoretical arrival times, and ``reserved``, the
USD held by calls in flight), ``held`` (a sorted set of those holds, ``<ticket>:<usd>`` by
when the hold lapses, so a process that dies mid-call gives its holds back after
:data:`~engine.stores.redis.keys.HOLD_SEC`) and ``spend:<period>`` (a hash: ``cost``,
``requests``, ``tokens``). The GCRA arithmetic is :func:`engine.core.keys.take`'s, line for
line. Numbers go back as strings (``%.17g``): a Lua number in a reply would be truncated to an
integer.
"""

from __future__ import annotations

from .client import Script

__all__ = ["ADMIT", "CREATE", "REVOKE", "SETTLE", "UPDATE"]

_NEWS = "redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'id', ARGV[1])\n"

#: KEYS: record, news stream, digest index, every key by creation. ARGV: id, digest, prefix,
#: settings, created_at, revoked_at ('' while live).
CREATE = Script("""
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'digest', ARGV[2], 'prefix', ARGV[3],
           'settings', ARGV[4], 'created_at', ARGV[5], 'revoked_at', ARGV[6])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
""" + _NEWS + "return 1")

#: KEYS: record, news stream. ARGV: id, settings. Returns the record's hash, or nil.
UPDATE = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'settings', ARGV[2])
""" + _NEWS + "return redis.call('HGETALL', KEYS[1])")

#: KEYS: record, news stream. ARGV: id, revocation time. Revokes once (a second revocation
#: keeps the first time); returns the record's hash, or nil.
REVOKE = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HGET', KEYS[1], 'revoked_at') == '' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[2])
""" + _NEWS + """end
return redis.call('HGETALL', KEYS[1])""")

_TAKE = """
local function num(x) return string.format('%.17g', x) end
local function remaining(tat, now, interval, limit)
  local left = math.floor((now + 60 - tat) / interval + 1e-9)
  return math.max(0, math.min(limit, left))
end
-- engine.core.keys.take: allowed, new tat, remaining, retry after, reset after
local function take(tat, now, cost, limit, admit_over)
  local interval = 60 / limit
  local base = math.max(tat, now)
  local new_tat = base + cost * interval
  local limit_at = now + 60
  if new_tat <= limit_at + 1e-9 or (admit_over and base < limit_at - 1e-9) then
    return true, new_tat, remaining(new_tat, now, interval, limit), 0,
      math.max(0, new_tat - now)
  end
  local wait = new_tat - limit_at
  if admit_over then wait = base - limit_at + interval end
  return false, tat, remaining(base, now, interval, limit), math.max(wait, 0),
    math.max(0, base - now)
end
"""

#: KEYS: record, gate, held, spend of the period. ARGV: now, rpm (0: none), tpm (0: none),
#: tokens, '1' to count a request, budget (-1: none), the call's most expensive outcome, the
#: hold ('<ticket>:<usd>'), when it lapses.
#: Returns ``{verdict, ...}``: ``gone`` or ``revoked``; ``requests`` or ``tokens`` (refused:
#: retry after); ``budget`` (refused: spent, reserved); ``ok`` (spent, reserved, requests
#: remaining and reset, tokens remaining and reset).
ADMIT = Script(_TAKE + """
local rec = redis.call('HMGET', KEYS[1], 'id', 'revoked_at')
if not rec[1] then return {'gone'} end
if rec[2] ~= '' then return {'revoked'} end
local now = tonumber(ARGV[1])
local g = redis.call('HMGET', KEYS[2], 'rpm_tat', 'tpm_tat', 'reserved')
local reserved = tonumber(g[3]) or 0
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 100)
if #lapsed > 0 then
  for _, hold in ipairs(lapsed) do
    reserved = reserved - tonumber(string.match(hold, ':([^:]+)$'))
    redis.call('ZREM', KEYS[3], hold)
  end
  if reserved < 1e-9 then reserved = 0 end
  redis.call('HSET', KEYS[2], 'reserved', num(reserved))
end
local out = {'ok', '', '', '', '', '', ''}
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm_tat, tpm_tat
if rpm > 0 and ARGV[5] == '1' then
  local ok, tat, left, retry, reset = take(tonumber(g[1]) or 0, now, 1, rpm, false)
  if not ok then return {'requests', num(retry)} end
  rpm_tat, out[4], out[5] = tat, tostring(left), num(reset)
end
if tpm > 0 then
  local ok, tat, left, retry, reset = take(tonumber(g[2]) or 0, now, tonumber(ARGV[4]), tpm,
                                           true)
  if not ok then return {'tokens', num(retry)} end
  tpm_tat, out[6], out[7] = tat, tostring(left), num(reset)
end
local spent = tonumber(redis.call('HGET', KEYS[4], 'cost')) or 0
local budget = tonumber(ARGV[6])
if budget >= 0 then
  if spent + reserved >= budget then return {'budget', num(spent), num(reserved)} end
  reserved = reserved + tonumber(ARGV[7])
  redis.call('ZADD', KEYS[3], ARGV[9], ARGV[8])
  redis.call('HSET', KEYS[2], 'reserved', num(reserved))
end
if rpm_tat then redis.call('HSET', KEYS[2], 'rpm_tat', num(rpm_tat)) end
if tpm_tat then redis.call('HSET', KEYS[2], 'tpm_tat', num(tpm_tat)) end
out[2], out[3] = num(spent), num(reserved)
return out
""")

#: KEYS: gate, held, spend of the admission's period. ARGV: the hold ('' for none), its USD,
#: tpm (0: leave the token limit alone), tokens reserved, tokens used, cost, requests, when
#: the period's spend expires ('' for never: PEXPIREAT milliseconds).
#: Gives the hold back (if it has not lapsed), charges the real tokens and cost.
SETTLE = Script("""
local function num(x) return string.format('%.17g', x) end
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
  reserved = reserved - tonumber(ARGV[2])
  if reserved < 1e-9 then reserved = 0 end
  redis.call('HSET', KEYS[1], 'reserved', num(reserved))
end
local tpm = tonumber(ARGV[3])
if tpm > 0 and ARGV[4] ~= ARGV[5] then
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tpm_tat'))
  if tat then
    local owed = (tonumber(ARGV[5]) - tonumber(ARGV[4])) * 60 / tpm
    redis.call('HSET', KEYS[1], 'tpm_tat', num(tat + owed))
  end
end
redis.call('HINCRBYFLOAT', KEYS[3], 'cost', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'requests', ARGV[7])
redis.call('HINCRBY', KEYS[3], 'tokens', ARGV[5])
if ARGV[8] ~= nil and ARGV[8] ~= '' then redis.call('PEXPIREAT', KEYS[3], ARGV[8]) end
return 1
""")
