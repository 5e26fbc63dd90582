-- wrk script of bench/api.py: rotate over a list of request paths, report as JSON.
--
--   wrk -t2 -c64 -d10s --latency -s bench/api.lua -H 'Authorization: Bearer ...' \
--       http://127.0.0.1:8080 -- PATHS_FILE
--
-- PATHS_FILE holds one path (with its query string) per line. Each thread starts at its
-- own offset and walks the list in order, so consecutive requests hit different devices
-- and no two threads move in step. done() prints one line "WRKJSON {...}" with the counts
-- and latency percentiles (microseconds) for bench/api.py to read.

local paths = {}
local counter = 0
local threads = 0

function setup(thread)
    thread:set("offset", threads)
    threads = threads + 1
end

function init(args)
    local file = assert(io.open(args[1], "r"))
    for line in file:lines() do
        if #line > 0 then
            paths[#paths + 1] = line
        end
    end
    file:close()
    assert(#paths > 0, "no paths in " .. args[1])
    -- Threads start far apart in the list (a prime stride), not on the same device.
    counter = ((tonumber(offset) or 0) * 7919) % #paths
end

function request()
    counter = counter % #paths + 1
    return wrk.format("GET", paths[counter])
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, '
            .. '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "connect": %d, '
            .. '"read": %d, "write": %d, "status": %d, "timeout": %d}\n',
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
