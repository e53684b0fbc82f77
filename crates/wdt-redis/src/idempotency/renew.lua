-- The owner of an in-flight record is still working on it: its lease is extended.
-- KEYS: record   ARGV: owner token, in-flight ms
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'inflight' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
  return 1
end
return 0
