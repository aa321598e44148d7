"""The Lua scripts behind the Redis run store: each is one step that must happen whole, with
nothing of another process's in between (Redis runs a script alone).

A run is a hash (``record``: its columns, ``spec``, ``f:<field>`` for the rest of its record,
``ops`` for their order and ``op:<name>`` for each op's state) and a list of its events
(``events``: event ``seq`` N is the list's item N). Beside them are indexes: the runs by
creation time (every run, and per tenant), the unfinished ones (``open``, the claim
candidates), the finished ones by end time (``ended``, for expiry), and a set per owner of the
runs it holds. The hash is the truth; an index entry is a hint each script checks against it.

Numbers in the hash are JSON (``12.5``, ``null``), which ``tonumber`` reads (``null`` as nil).
"""

from __future__ import annotations

from .client import Script

__all__ = ["CLAIM", "COMMIT", "CREATE", "EXPIRE", "RELEASE", "RENEW", "REQUEST_CANCEL"]

_OPEN = "local function open(s) return s == 'queued' or s == 'running' end\n"

#: KEYS: record, tenant list, all list, open index, owner's held set, idempotency key (the
#: record's key again where there is no owner or no key).
#: ARGV: run_id, created_at, is open, owned, keyed, then the hash's field/value pairs.
#: Returns 1 (created), or the id of the run the tenant's key already names.
CREATE = Script(_OPEN + """
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return existing end
  redis.call('SET', KEYS[6], ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6, #ARGV))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1]) end
if ARGV[4] == '1' then redis.call('SADD', KEYS[5], ARGV[1]) end
return 1
""")

#: KEYS: record, events, open index, ended index.
#: ARGV: run_id, new status or '', '1' if finished_at is set here, the event's JSON or '',
#: then field/value pairs. Returns the event's seq, 0 without one, -1 for an unknown run.
COMMIT = Script(_OPEN + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, #ARGV)) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if ARGV[2] ~= '' or ARGV[3] == '1' then
  local s = redis.call('HMGET', KEYS[1], 'status', 'finished_at')
  if not open(s[1]) then redis.call('ZREM', KEYS[3], ARGV[1]) end
  local finished = tonumber(s[2])
  if finished then redis.call('ZADD', KEYS[4], finished, ARGV[1]) end
end
if ARGV[4] == '' then return 0 end
return redis.call('RPUSH', KEYS[2], ARGV[4])
""")

#: KEYS: record, the claimant's held set, the old owner's held set (the record's key again
#: if unowned). ARGV: run_id, the owner seen, '1' if the claimant found that owner dead,
#: claimant, now, lease end. Takes the run only if nothing changed since it was seen and it
#: is still up for taking; returns the record's hash, or nil.
CLAIM = Script(_OPEN + """
local s = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
if not open(s[1]) or s[2] ~= ARGV[2] then return false end
if s[2] ~= '' and ARGV[3] ~= '1' and tonumber(s[3]) >= tonumber(ARGV[5]) then
  return false
end
redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'lease_until', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
if s[2] ~= '' then redis.call('SREM', KEYS[3], ARGV[1]) end
return redis.call('HGETALL', KEYS[1])
""")

#: KEYS: the owner's held set, then the records it names. ARGV: owner, lease end, then the
#: run ids in the records' order. Runs finished or taken over leave the set.
RENEW = Script(_OPEN + """
for i = 2, #KEYS do
  local s = redis.call('HMGET', KEYS[i], 'status', 'owner')
  if open(s[1]) and s[2] == ARGV[1] then
    redis.call('HSET', KEYS[i], 'lease_until', ARGV[2])
  else
    redis.call('SREM', KEYS[1], ARGV[i + 1])
  end
end
return #KEYS - 1
""")

#: KEYS: the owner's held set, then the records it names. ARGV: owner.
RELEASE = Script(_OPEN + """
for i = 2, #KEYS do
  local s = redis.call('HMGET', KEYS[i], 'status', 'owner')
  if open(s[1]) and s[2] == ARGV[1] then
    redis.call('HSET', KEYS[i], 'owner', '', 'lease_until', '0')
  end
end
redis.call('DEL', KEYS[1])
return #KEYS - 1
""")

#: KEYS: record. ARGV: '1' to check the tenant, the tenant, the request's JSON. Records the
#: first request of an unfinished run; returns the hash as it was before, or nil.
REQUEST_CANCEL = Script(_OPEN + """
local before = redis.call('HGETALL', KEYS[1])
if #before == 0 then return false end
local s = redis.call('HMGET', KEYS[1], 'tenant', 'status', 'cancel_by')
if ARGV[1] == '1' and s[1] ~= ARGV[2] then return false end
if open(s[2]) and s[3] == 'null' then redis.call('HSET', KEYS[1], 'cancel_by', ARGV[3]) end
return before
""")

#: KEYS: record, events, tenant list, all list, ended index, open index, idempotency key,
#: its last owner's held set (each the record's key again where there is none). ARGV: run_id,
#: cutoff. Deletes a run that finished before the cutoff; returns 1 if it went.
EXPIRE = Script(_OPEN + """
local s = redis.call('HMGET', KEYS[1], 'status', 'finished_at')
if not s[1] then
  redis.call('ZREM', KEYS[5], ARGV[1])
  return 0
end
local finished = tonumber(s[2])
if open(s[1]) or not finished or finished >= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, 6 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if KEYS[7] ~= KEYS[1] and redis.call('GET', KEYS[7]) == ARGV[1] then
  redis.call('DEL', KEYS[7])
end
if KEYS[8] ~= KEYS[1] then redis.call('SREM', KEYS[8], ARGV[1]) end
return 1
""")
