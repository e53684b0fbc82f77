-- A lease holder's load failed: remember the error briefly (so waiters do not stampede the
-- vendor one after another), end the lease and tell the waiters.
-- KEYS: lease, failure
-- ARGV: lease token, error, failure ms, channel, message
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 1
end
return 0
