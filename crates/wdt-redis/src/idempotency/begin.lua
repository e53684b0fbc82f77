-- The first request with an idempotency key runs; later ones replay it, wait for it, or are
-- refused when the key came with another request.
-- KEYS: record (hash state, fp, owner, status, head, body)
-- ARGV: owner token, request fingerprint, in-flight ms
local cur = redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'head', 'body')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'state', 'inflight', 'fp', ARGV[2], 'owner', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new'}
end
if cur[2] ~= ARGV[2] then return {'mismatch'} end
if cur[1] == 'done' then return {'done', cur[3], cur[4], cur[5]} end
return {'inflight', tostring(redis.call('PTTL', KEYS[1]))}
