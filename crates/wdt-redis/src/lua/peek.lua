-- The fresh entries of several keys of one cache, without taking leases (a batch load looks
-- here first).
-- KEYS: cleared, then entries   ARGV: TTL ms
-- Returns, per entry, {age ms, value}, or {-1, ''} when there is no fresh entry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cleared = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for i = 2, #KEYS do
  local e = redis.call('HMGET', KEYS[i], 't', 'g', 'v')
  local age = e[1] and (now - tonumber(e[1])) or -1
  if e[1] and e[3] and tonumber(e[2] or '0') >= cleared and age < tonumber(ARGV[1]) then
    out[#out + 1] = {math.max(0, age), e[3]}
  else
    out[#out + 1] = {-1, ''}
  end
end
return out
