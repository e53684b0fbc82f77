-- Extends a lease (single-flight or idempotency) while its holder still works.
-- KEYS: lease   ARGV: token, ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
