-- The owner of an in-flight record stores its result (status > 0) or gives the key up, even
-- after its lease lapsed (it knows the outcome; later retries then replay it).
-- KEYS: record   ARGV: owner token, status (0: give up), head, body, keep ms
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'inflight' then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'head', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
