-- The owner of an in-flight record is still working on it.
-- KEYS: record   ARGV: owner token, in-flight ms
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'inflight' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
