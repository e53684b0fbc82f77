-- Removes a webhook endpoint and everything of it: its messages, due index, finished log and
-- listing index.
-- KEYS: the endpoints, the endpoint's messages, due index, finished log, listings
-- ARGV: the endpoint's id
-- Returns 1 when the endpoint was there, else 0.
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return existed
