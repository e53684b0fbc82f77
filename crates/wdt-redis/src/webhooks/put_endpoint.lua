-- Stores a webhook endpoint only if the stored one has the version the writer read.
-- KEYS: the endpoints (hash: id -> JSON)
-- ARGV: the endpoint's id, its JSON, the expected `version` of the stored one ('' : none may
-- be stored yet)
-- Returns 1 when stored, 0 when the stored endpoint is not the one expected.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if current then
    return 0
  end
else
  if not current then
    return 0
  end
  local ok, stored = pcall(cjson.decode, current)
  if not ok or type(stored) ~= 'table' or type(stored.version) ~= 'number'
      or stored.version ~= tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
