-- Printed by wrk at the end of a run, one line each, for bench/e2e/wrk.py to parse:
--   LBFAST_SUMMARY key=value ...   (duration in us, request and error counts)
--   LBFAST_PCT p:us p:us ...       (latency percentiles on a fixed grid; merged across
--                                   the two wrk processes of the direct baseline)
local grid = {}
for i = 1, 199 do grid[#grid + 1] = i * 0.5 end
for _, p in ipairs({99.6, 99.7, 99.8, 99.9, 99.95, 99.99}) do grid[#grid + 1] = p end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LBFAST_SUMMARY duration_us=%d requests=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d min_us=%d max_us=%d\n",
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.min, latency.max))
  local out = {}
  for _, p in ipairs(grid) do
    out[#out + 1] = string.format("%g:%d", p, latency:percentile(p))
  end
  io.write("LBFAST_PCT ", table.concat(out, " "), "\n")
end
