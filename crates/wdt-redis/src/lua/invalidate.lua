-- A write: bump the generation (loads that began before it are not stored), drop whole caches
-- and single entries, and tell every replica.
-- KEYS: generation, then ARGV[1] 'cleared' keys (whole caches), then entries
-- ARGV: number of cleared keys, channel, message
local g = redis.call('INCR', KEYS[1])
local n = tonumber(ARGV[1])
for i = 2, n + 1 do redis.call('SET', KEYS[i], g) end
for i = n + 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return g
