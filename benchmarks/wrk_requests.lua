-- wrk script of benchmarks/bench_api_wrk.py: replays a file of requests, one per line, as
--   METHOD <tab> PATH <tab> API KEY (or -) <tab> JSON BODY (or -)
-- Usage: wrk ... -s wrk_requests.lua URL -- REQUESTS_FILE
-- Thread t of n sends lines t, t+n, t+2n, ... and starts over at the end (so a run longer than
-- the file repeats requests: a theft report repeated answers 409). Each response's status is
-- counted; done() prints one line "STATUS <json object status -> count>".

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local function split_tabs(line)
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(out, field)
  end
  return out
end

function load_requests(path)
  local reqs = {}
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if line ~= "" then
      local p = split_tabs(line)
      local headers = {}
      if p[3] ~= nil and p[3] ~= "-" then
        headers["Authorization"] = "Bearer " .. p[3]
      end
      local body = nil
      if p[4] ~= nil and p[4] ~= "-" then
        body = p[4]
        headers["Content-Type"] = "application/json"
      end
      table.insert(reqs, wrk.format(p[1], p[2], headers, body))
    end
  end
  f:close()
  return reqs
end

function init(args)
  reqs = load_requests(args[1])
  nthreads = tonumber(args[2] or "1")
  statuses = {}
  i = (tid or 1) - 1
end

function request()
  local r = reqs[(i % #reqs) + 1]
  i = i + nthreads
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s or {}) do
      total[k] = (total[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(total) do
    table.insert(parts, string.format('"%d": %d', k, v))
  end
  io.write("STATUS {" .. table.concat(parts, ", ") .. "}\n")
  io.write(string.format(
    'LATENCY_US {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}\n',
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
