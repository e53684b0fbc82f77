-- A client's request allowance (GCRA, as the governor crate does it) on the server's clock.
-- KEYS: the subject's theoretical arrival time
-- ARGV: emission interval ms (1000 / rate), burst
-- Returns {1, remaining, ms}: allowed, with the requests still allowed at once after this one
-- and how long until the whole burst is available again; {0, ms, 0}: come back in that long.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - interval * burst
if allow_at > now then return {0, math.ceil(allow_at - now), 0} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1)
local remaining = math.floor((now + interval * burst - next_tat) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, math.ceil(next_tat - now)}
