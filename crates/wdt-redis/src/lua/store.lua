-- Stores a loaded value unless a write happened since its load began, then ends the lease.
-- KEYS: entry, lease, generation, failure
-- ARGV: lease token ('' without a lease), generation at load start, value, keep ms, channel,
--       message announcing the key
local stored = 0
if (redis.call('GET', KEYS[3]) or '0') == ARGV[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 't', string.format('%.0f', now), 'g', ARGV[2], 'v', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('DEL', KEYS[4])
  stored = 1
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return stored
