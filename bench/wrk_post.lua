-- wrk script: POST pre-signed Stripe events, each body exactly once.
--
--   wrk -s bench/wrk_post.lua URL -- BODIES_PREFIX PATH MODE
--
-- Thread n reads BODIES_PREFIX-n.dat, a sequence of records
--   "<Stripe-Signature header> <body length>\n<body>"
-- written by bench/run.py, and sends them in order, one per request.
-- MODE "duration": run for wrk's -d; if a thread runs out of bodies it starts
--   over (counted in "wrapped": those requests are duplicates, and the run is
--   reported as invalid).
-- MODE "once": every body is sent once; each thread stops when all of its
--   bodies were answered (the few connections still open meanwhile resend the
--   thread's first body, a harmless duplicate, counted in "extra").
-- done() prints one line "BENCH_JSON {...}" for the orchestrator.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  local prefix, path = args[1], args[2]
  mode = args[3] or "duration"
  local f = assert(io.open(prefix .. "-" .. tid .. ".dat", "rb"))
  local data = f:read("*a")
  f:close()
  local base = {}
  for k, v in pairs(wrk.headers) do base[k] = v end
  base["Content-Type"] = "application/json; charset=utf-8"
  base["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
  reqs = {}
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local sig, len = data:sub(pos, nl - 1):match("^(%S+) (%d+)$")
    len = tonumber(len)
    local body = data:sub(nl + 1, nl + len)
    pos = nl + len + 1
    base["Stripe-Signature"] = sig
    reqs[#reqs + 1] = wrk.format("POST", path, base, body)
  end
  total = #reqs
  sent, answered, ok, wrapped, extra = 0, 0, 0, 0, 0
end

function request()
  sent = sent + 1
  if sent > total then
    if mode == "once" then
      extra = extra + 1
      return reqs[1]
    end
    wrapped = wrapped + 1
    return reqs[(sent - 1) % total + 1]
  end
  return reqs[sent]
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  end
  if mode == "once" and answered >= total then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n_ok, n_wrapped, n_extra, n_total = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    n_ok = n_ok + (t:get("ok") or 0)
    n_wrapped = n_wrapped + (t:get("wrapped") or 0)
    n_extra = n_extra + (t:get("extra") or 0)
    n_total = n_total + (t:get("total") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "ok": %d, "bodies": %d, ' ..
    '"wrapped": %d, "extra": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, ' ..
    '"max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, n_ok, n_total, n_wrapped, n_extra,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
