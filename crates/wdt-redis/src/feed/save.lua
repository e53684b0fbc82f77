-- Stores the change feed's state of a namespace, only while ARGV[1] holds its lease (a holder
-- that lost it must not write over its successor's state).
-- KEYS: the lease, the state
-- ARGV: the holder, the state
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
