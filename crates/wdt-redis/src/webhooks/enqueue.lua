-- Queues webhook messages, each due at once, unless its id is already stored for its endpoint
-- (then nothing changes, not even the listing index). A new message of a listing becomes the
-- listing's latest; the one it replaces there is returned, for the caller to supersede.
-- KEYS: per message, its endpoint's messages, due index and listings (3 keys a message)
-- ARGV: now (ms), then per message: its id, its JSON, its listing ('' : none)
-- Returns a flat array: for each message that replaced another in its listing index, the
-- message's position (from 1) and the id of the one it replaced.
local replaced = {}
for i = 1, #KEYS / 3 do
  local messages, due, listings = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local id, text, listing = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  if redis.call('HSETNX', messages, id, text) == 1 then
    redis.call('ZADD', due, ARGV[1], id)
    if listing ~= '' then
      local before = redis.call('HGET', listings, listing)
      redis.call('HSET', listings, listing, id)
      if before and before ~= id then
        replaced[#replaced + 1] = i
        replaced[#replaced + 1] = before
      end
    end
  end
end
return replaced
