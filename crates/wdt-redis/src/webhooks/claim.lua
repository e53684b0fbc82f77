-- Claims an endpoint's due messages: up to a number of those due by now, soonest first, each
-- pushed to the lease's end in the due index so no other claim takes it meanwhile (a claimer
-- that dies leaves it due again when the lease ends).
-- KEYS: the endpoint's messages, due index
-- ARGV: now (ms), the lease's end (ms), how many at most (> 0)
-- Returns the claimed messages' JSON texts, in due order.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local texts = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  local text = redis.call('HGET', KEYS[1], id)
  if text then
    texts[#texts + 1] = text
  end
end
return texts
