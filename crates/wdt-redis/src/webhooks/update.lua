-- Replaces a webhook message only if it is still stored with the version the writer read, and
-- places it: due again at a time, or finished (off the due index, into the finished log).
-- Then keeps only the newest finished messages of the endpoint (the older ones are deleted).
-- KEYS: the endpoint's messages, due index, finished log
-- ARGV: the message's id, its JSON, the expected `version`, due at (ms, '' : unchanged),
-- finished at (ms, '' : not finished), how many finished messages to keep
-- Returns 1 when replaced, 0 when the stored message is gone or has another version.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  return 0
end
local ok, stored = pcall(cjson.decode, current)
if not ok or type(stored) ~= 'table' or type(stored.version) ~= 'number'
    or stored.version ~= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
end
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, over - 1)
  for _, id in ipairs(oldest) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
end
return 1
