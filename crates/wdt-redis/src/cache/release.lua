-- A lease holder gave up without a result (its caller went away): free the key for the
-- waiters at once instead of letting them wait for the lease to run out.
-- KEYS: lease   ARGV: token, channel, message
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
