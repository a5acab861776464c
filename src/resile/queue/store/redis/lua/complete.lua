-- complete / complete_many: DOING -> DONE for the lease holder, a batch in one call.
-- ARGV: 2 worker, 3 now_s, 4 op (one per batch), 5 TTL ms ("" = keep), 6 sweep cutoff
-- of DONE tasks ("" = none), then pairs: id, result JSON.
-- Returns per task: its HGETALL (done; a retry of the same op gets it again), or 1
-- instead in the "complete_flags" variant (REPLY = 'flag'), or 0 (not held by the worker).
local worker, now_s, op, ttl_ms, cutoff_s = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local flag = REPLY == 'flag'
local out, tks, swept = {}, {}, {}
for i = 7, #ARGV, 2 do
  local id = ARGV[i]
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'op', 'queue', 'seq', 'attempts',
    'started_at', 'history', 'hn')
  if f[1] == 'DOING' and f[2] == worker then
    local q = f[4]
    local h, hn = history_with(f[8], f[9], entry(f[6], f[7], now_s, 'ok', nil))
    redis.call('HSET', tk, 'status', 'DONE', 'result', ARGV[i + 1], 'progress', '100',
      'history', h, 'hn', hn, 'lease_expires_at', '', 'finished_at', now_s, 'updated_at', now_s,
      'op', op)
    if isset(ttl_ms) then redis.call('PEXPIRE', tk, ttl_ms) end
    zrem_later(qkey('leases', q), id)
    zadd_later(qkey('s:DONE', q), f[5], id)
    zadd_later(qkey('f:DONE', q), now_s, id)
    swept[q] = true
    tks[#tks + 1] = tk
  elseif isset(op) and f[3] == op then
    tks[#tks + 1] = tk
  else
    tks[#tks + 1] = false
  end
end
flush_later()
if isset(cutoff_s) then
  for q in pairs(swept) do sweep(q, 'DONE', cutoff_s, SWEEP_ON_FINISH) end
end
for i, tk in ipairs(tks) do
  if not tk then out[i] = 0
  elseif flag then out[i] = 1
  else out[i] = redis.call('HGETALL', tk) end
end
return out
