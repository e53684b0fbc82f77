-- An endpoint's latest messages for its log: the pending ones (soonest due first), then the
-- finished ones (last finished first), as many as asked for in all.
-- KEYS: the endpoint's messages, due index, finished log
-- ARGV: how many at most (> 0)
-- Returns their JSON texts.
local limit = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', KEYS[2], 0, limit - 1)
local left = limit - #ids
if left > 0 then
  for _, id in ipairs(redis.call('ZREVRANGE', KEYS[3], 0, left - 1)) do
    ids[#ids + 1] = id
  end
end
local texts = {}
for _, id in ipairs(ids) do
  local text = redis.call('HGET', KEYS[1], id)
  if text then
    texts[#texts + 1] = text
  end
end
return texts
