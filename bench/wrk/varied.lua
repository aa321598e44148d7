-- wrk script: POST chat completions for `model: auto` whose prompt differs on every request
-- (three words drawn from a list, so no two are the same question): each one is a cache miss
-- that is embedded, looked up, routed and stored. WRK_SAME=1 sends one prompt throughout
-- (every request after the first is a cache hit); WRK_PROMPTS sends a file's prompts in turn.
-- Prints the same WRKJSON summary line as the peer harness's post.lua.
local words = {"proxy", "latency", "database", "index", "compiler", "garden", "violin",
  "glacier", "tax", "protein", "orbit", "poetry", "mortgage", "vaccine", "bridge", "neuron",
  "tariff", "volcano", "sonnet", "kernel", "enzyme", "harbor", "ledger", "prism", "canyon",
  "cipher", "meadow", "turbine", "lantern", "quartz", "saddle", "thunder"}
local same = os.getenv("WRK_SAME") == "1"
local n = 0
math.randomseed(os.time())
-- WRK_PROMPTS names a file of prompts, one per line, already escaped for a JSON string: they
-- are sent in turn (real questions: most come near no cached one, unlike the template below).
-- Where a run stopped is kept in the file "<WRK_PROMPTS>.at", so the next run (the measured
-- one, after a warm-up) goes on with prompts the router has not seen. One thread (-t1).
local prompts = {}
local path = os.getenv("WRK_PROMPTS")
if path and path ~= "" then
  for line in io.lines(path) do table.insert(prompts, line) end
end
at = 0

local function prompt()
  if same then return "In two sentences, explain how to benchmark an HTTP reverse proxy fairly." end
  if #prompts > 0 then
    at = at + 1
    return prompts[(at - 1) % #prompts + 1]
  end
  n = n + 1
  local a, b, c = words[math.random(#words)], words[math.random(#words)], words[math.random(#words)]
  return string.format("Question %d: how does a %s relate to a %s and a %s? Answer briefly.", n, a, b, c)
end

request = function()
  local body = '{"model":"auto","max_tokens":128,"messages":[{"role":"user","content":"' .. prompt() .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  if #prompts > 0 then
    local kept = io.open(path .. ".at")
    if kept then thread:set("at", tonumber(kept:read("*l")) or 0); kept:close() end
  end
end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  if #prompts > 0 then
    local kept = io.open(path .. ".at", "w")
    kept:write(tostring(threads[1]:get("at")) .. "\n")
    kept:close()
  end
  local b = 0
  for _, t in ipairs(threads) do b = b + (t:get("bad") or 0) end
  io.write(string.format('WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.2f,"bad_status":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"lat_max_us":%d}\n', summary.requests,
    summary.duration / 1e6, summary.requests / (summary.duration / 1e6), b,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
