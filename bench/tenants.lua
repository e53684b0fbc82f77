-- wrk: GET requests read from the file WDT_BENCH_REQUESTS, one "<token> <path>" per line, sent
-- in turn (each thread from its own starting line). bench.py writes the file: Zipf-distributed
-- tenants and SKUs.
local requests = {}
local i = 0

local function load()
  local f = assert(io.open(os.getenv("WDT_BENCH_REQUESTS"), "r"))
  for line in f:lines() do
    local token, path = line:match("^(%S+) (%S+)$")
    requests[#requests + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
  end
  f:close()
end

function init(args)
  load()
  i = math.random(#requests)
end

function request()
  i = i % #requests + 1
  return requests[i]
end
