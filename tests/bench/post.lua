-- post.lua - wrk script for the Turnout benchmark (tests/bench/bench.py).
--
-- Every request is a POST of the body in the file named by $BENCH_BODY (a
-- 0.4 KB KServe V2 infer request) on keep-alive connections. At the end one
-- line "BENCH_RESULT {json}" carries what bench.py needs: request count,
-- duration, error counts and latency percentiles in microseconds.

local path = os.getenv("BENCH_BODY")
if path == nil then
	io.stderr:write("post.lua: BENCH_BODY is not set\n")
	os.exit(2)
end
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- $BENCH_THINK_MS > 0: each connection waits that long before its next
-- request, so the load is paced below saturation (latency, not queueing).
local think = tonumber(os.getenv("BENCH_THINK_MS") or "0")
if think > 0 then
	delay = function()
		return think
	end
end

done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
		'"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
		'"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
		summary.requests, summary.duration, summary.bytes,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency:percentile(99.9)))
end
