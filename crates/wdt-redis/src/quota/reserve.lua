-- One vendor method's quota for the whole cluster: at most `limit` calls in any window
-- (sliding-window log on the server's clock). A call that must wait reserves its future slot,
-- so waiters are served in order; one whose slot lies beyond max_wait is refused.
-- KEYS: log (sorted set of slots), vendor back-off
-- ARGV: limit, window ms, unique member, max wait ms
-- Returns {1, wait ms}: slot reserved; {0, wait ms}: refused; {2, ms}: the vendor throttled
-- the method, leave it alone that long.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 then return {2, backoff} end
local limit, window, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local at = now
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local anchor = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  at = math.max(now, tonumber(anchor[2]) + window)
end
if at - now > max_wait then return {0, at - now} end
redis.call('ZADD', KEYS[1], at, ARGV[3])
redis.call('PEXPIRE', KEYS[1], at - now + window)
return {1, at - now}
