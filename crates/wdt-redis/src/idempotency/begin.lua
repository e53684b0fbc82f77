-- The first request with an idempotency key runs; later ones replay it, wait for it, or are
-- refused when the key came with another request. A record whose owner stopped renewing its
-- lease (its replica died mid-write) is abandoned: it is kept, never run again, because the
-- write may have reached the ERP.
-- KEYS: record (hash state, fp, owner, lease (Redis clock, ms), status, head, body)
-- ARGV: owner token, request fingerprint, in-flight ms, keep ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'head', 'body', 'lease')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'state', 'inflight', 'fp', ARGV[2], 'owner', ARGV[1],
    'lease', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'new'}
end
if cur[2] ~= ARGV[2] then return {'mismatch'} end
if cur[1] == 'done' then return {'done', cur[3], cur[4], cur[5]} end
if not cur[6] then
  -- A record of an earlier version: it expires with its lease.
  return {'inflight', tostring(redis.call('PTTL', KEYS[1]))}
end
local left = tonumber(cur[6]) - now
if left <= 0 then return {'abandoned'} end
return {'inflight', tostring(left)}
