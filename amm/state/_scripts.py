"""The Lua scripts the Redis backend runs: each is one atomic round trip.

Time is the server's (``TIME``), so workers on hosts whose clocks disagree still
share one window. Windows are a sorted set of tickets scored by admission time (ms)
plus a hash of each ticket's tokens and a running token total; budget holds are a
hash of ticket -> USD with a sorted set of their expiries (a crashed worker's holds
lapse) and their running total, and the day's spend is a hash of worker -> that
worker's ledger total. The backend calls them by SHA (``EVALSHA``), loading a script
only when the server answers that it does not know it.
"""

from __future__ import annotations

__all__ = ["ADMIT", "CACHE_SET", "COOL", "LEASE", "SCRIPTS", "SETTLE"]

# KEYS: 1 window zset, 2 window tokens hash, 3 window token total, 4 cool-down,
#       5 spend hash (worker -> USD), 6 holds hash (ticket -> USD), 7 hold expiries zset,
#       8 holds total (USD)
# ARGV: 1 ticket, 2 tokens, 3 request cap, 4 token cap, 5 window ms, 6 cost, 7 budget,
#       8 worker, 9 worker spend, 10 hold ttl ms
# Returns {admitted 0/1, reason, retry ms, fleet spend (string), requests in window}
# Every step is O(log n) in the window's size but the expiry of old entries, done a
# bounded slice at a time (unpack() has a stack limit; a window idle for a minute may
# hold thousands). The holds are summed in KEYS[8], not by reading the hash.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, tokens = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], id) then  -- asked again after a lost reply: admitted once
  return {1, '', 0, '0', redis.call('ZCARD', KEYS[1])}
end
local cool = redis.call('PTTL', KEYS[4])
if cool > 0 then return {0, 'cooldown', cool, '0', 0} end
local rcap, tcap, win = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
while true do
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - win, 'LIMIT', 0, 500)
  if #old == 0 then break end
  local gone = 0
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(old))) do
    if v then gone = gone + tonumber(v) end
  end
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
  redis.call('DECRBY', KEYS[3], gone)
end
local n = redis.call('ZCARD', KEYS[1])
if rcap > 0 and n + 1 > rcap then
  local e = redis.call('ZRANGE', KEYS[1], n - rcap, n - rcap, 'WITHSCORES')
  return {0, 'rate', tonumber(e[2]) + win - now, '0', n}
end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if tcap > 0 and n > 0 and used + tokens > tcap then
  local es = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local u, wait = used, win
  for i = 1, #es, 2 do
    u = u - tonumber(redis.call('HGET', KEYS[2], es[i]) or '0')
    if u + tokens <= tcap then wait = tonumber(es[i + 1]) + win - now; break end
  end
  return {0, 'rate', wait, '0', n}
end
local spend = 0
local budget = tonumber(ARGV[7])
if budget > 0 then
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[9])
  while true do  -- a crashed worker's holds lapse
    local lapsed = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, 500)
    if #lapsed == 0 then break end
    local gone = 0
    for _, v in ipairs(redis.call('HMGET', KEYS[6], unpack(lapsed))) do
      if v then gone = gone + tonumber(v) end
    end
    redis.call('HDEL', KEYS[6], unpack(lapsed))
    redis.call('ZREM', KEYS[7], unpack(lapsed))
    redis.call('INCRBYFLOAT', KEYS[8], -gone)
  end
  for _, v in ipairs(redis.call('HVALS', KEYS[5])) do spend = spend + tonumber(v) end
  local none = redis.call('HLEN', KEYS[6]) == 0
  local held = none and 0 or tonumber(redis.call('GET', KEYS[8]) or '0')
  local cost = tonumber(ARGV[6])
  if spend + held + cost > budget then return {0, 'budget', 0, tostring(spend), n} end
  redis.call('HSET', KEYS[6], id, ARGV[6])
  redis.call('ZADD', KEYS[7], now + tonumber(ARGV[10]), id)
  if none then  -- no hold left: the total starts afresh (no float drift carried over)
    redis.call('SET', KEYS[8], ARGV[6])
  else
    redis.call('INCRBYFLOAT', KEYS[8], ARGV[6])
  end
  for i = 5, 8 do redis.call('PEXPIRE', KEYS[i], 172800000) end
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('HSET', KEYS[2], id, tokens)
redis.call('INCRBY', KEYS[3], tokens)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], win * 2 + 1000) end
return {1, '', 0, tostring(spend), n + 1}
"""

# KEYS: as ADMIT's (4, the cool-down, unused)
# ARGV: 1 ticket, 2 tokens ('' = give the slot back), 3 worker, 4 worker spend, 5 budget?
SETTLE = """
local id = ARGV[1]
local old = redis.call('HGET', KEYS[2], id)
if old then
  if ARGV[2] == '' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('DECRBY', KEYS[3], tonumber(old))
  else
    redis.call('HSET', KEYS[2], id, ARGV[2])
    redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(old))
  end
end
if ARGV[5] == '1' then
  local held = redis.call('HGET', KEYS[6], id)
  if held then
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[7], id)
    if redis.call('HLEN', KEYS[6]) == 0 then
      redis.call('DEL', KEYS[8])
    else
      redis.call('INCRBYFLOAT', KEYS[8], -tonumber(held))
    end
  end
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
end
return 1
"""

# KEYS: 1 cool-down key. ARGV: 1 ms. Never shortens a longer hold.
COOL = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# KEYS: 1 lease key. ARGV: 1 owner, 2 ttl ms. Take it when free, renew it when ours.
LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: 1 entry key, 2 index zset (key -> stored at). ARGV: 1 payload, 2 ttl ms,
# 3 max entries, 4 key name. Bounded: past max entries the oldest go.
CACHE_SET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[4])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local gone = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  redis.call('DEL', unpack(gone))
end
return 1
"""

SCRIPTS = {"ADMIT": ADMIT, "SETTLE": SETTLE, "COOL": COOL, "LEASE": LEASE, "CACHE_SET": CACHE_SET}
"""Every script by name (the backend computes their SHA1s once)."""
