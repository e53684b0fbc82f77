-- Gives the change feed's lease up if ARGV[1] holds it.
-- KEYS: the lease
-- ARGV: the holder
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
