-- The L2 entry of one key, or the right to load it (a lease), or a wait for whoever holds it.
-- KEYS: entry (hash t, g, v), lease, failure, the key's last write, cleared (the write at which
--       the whole cache was last dropped)
-- ARGV: lease token, lease ms, TTL ms
-- Returns {kind, age ms (-1: no entry), value or '', extra}:
--   hit: the entry is fresh; failed: the last load failed a moment ago (extra: the error);
--   lead: this caller loads (extra: the write token to store with); wait: someone else loads
--   (extra: the lease's remaining ms). A past-TTL entry is returned for stale-if-error.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cleared = redis.call('GET', KEYS[5]) or '0'
local e = redis.call('HMGET', KEYS[1], 't', 'g', 'v')
local age, value = -1, ''
if e[1] and e[3] and tonumber(e[2] or '0') >= tonumber(cleared) then
  age = math.max(0, now - tonumber(e[1]))
  value = e[3]
  if age < tonumber(ARGV[3]) then return {'hit', age, value, ''} end
end
local failed = redis.call('GET', KEYS[3])
if failed then return {'failed', age, value, failed} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lead', age, value, cleared .. '/' .. (redis.call('GET', KEYS[4]) or '0')}
end
return {'wait', age, value, tostring(redis.call('PTTL', KEYS[2]))}
