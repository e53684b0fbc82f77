-- A write: take the next write number, drop whole caches and single entries (loads that began
-- before it are then not stored), and tell every replica.
-- KEYS: the write counter, then ARGV[1] 'cleared' keys (whole caches), then pairs of
--       (entry, the entry's last write)
-- ARGV: number of cleared keys, channel, message, how long a key's last write is remembered (ms)
local g = redis.call('INCR', KEYS[1])
local n = tonumber(ARGV[1])
for i = 2, n + 1 do redis.call('SET', KEYS[i], g) end
for i = n + 2, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], g, 'PX', ARGV[4])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return g
