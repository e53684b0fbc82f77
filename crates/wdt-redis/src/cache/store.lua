-- Stores a loaded value unless the key (or its whole cache) was written since its load began,
-- then ends the lease.
-- KEYS: entry, lease, the key's last write, cleared, failure
-- ARGV: lease token ('' without a lease), write token from when the load began
--       ('<cleared>/<last write>'), value, keep ms, channel, message announcing the key
local stored = 0
local now_token = (redis.call('GET', KEYS[4]) or '0') .. '/' .. (redis.call('GET', KEYS[3]) or '0')
if now_token == ARGV[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cleared = string.match(ARGV[2], '^(%d+)/')
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 't', string.format('%.0f', now), 'g', cleared, 'v', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('DEL', KEYS[5])
  stored = 1
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return stored
