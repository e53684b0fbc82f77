-- The fresh entries of several keys of one cache, without taking leases (a batch load looks
-- here first), and for each key the write token to store a batch-loaded value with.
-- KEYS: cleared, then pairs of (entry, the entry's last write)   ARGV: TTL ms
-- Returns, per key, {age ms, value, write token}; age -1 and value '' when there is no fresh
-- entry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cleared = redis.call('GET', KEYS[1]) or '0'
local out = {}
for i = 2, #KEYS, 2 do
  local token = cleared .. '/' .. (redis.call('GET', KEYS[i + 1]) or '0')
  local e = redis.call('HMGET', KEYS[i], 't', 'g', 'v')
  local age = e[1] and (now - tonumber(e[1])) or -1
  if e[1] and e[3] and tonumber(e[2] or '0') >= tonumber(cleared) and age < tonumber(ARGV[1]) then
    out[#out + 1] = {math.max(0, age), e[3], token}
  else
    out[#out + 1] = {-1, '', token}
  end
end
return out
