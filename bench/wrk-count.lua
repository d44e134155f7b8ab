-- Counts responses per X-Worker header (the worker's pid) across wrk threads; prints
-- "WORKERS {json}" at the end for bench/http.js.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local w = headers["X-Worker"] or headers["x-worker"] or "none"
  counts[w] = (counts[w] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for w, n in pairs(t:get("counts")) do
      total[w] = (total[w] or 0) + n
    end
  end
  local parts = {}
  for w, n in pairs(total) do
    table.insert(parts, string.format('"%s":%d', w, n))
  end
  io.write("WORKERS {" .. table.concat(parts, ",") .. "}\n")
end
