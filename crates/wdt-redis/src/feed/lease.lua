-- Takes or keeps the change feed's lease of a namespace.
-- KEYS: the lease
-- ARGV: the holder, the lease's time (ms)
-- Returns 1 when ARGV[1] holds the lease now (taken or renewed), 0 when another does.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
