-- complete / complete_many: DOING -> DONE for the lease holder, a batch in one call
-- (one op per batch). A.ttl_ms: the retention TTL of DONE tasks ("" = keep);
-- A.cutoff_s: their sweep cutoff ("" = none). The tail: records (id, result JSON).
-- Returns per task: its HGETALL (done; a retry of the same op gets it again), or 1
-- instead in the "complete_flags" variant (REPLY = 'flag'), or 0 (not held by the worker).
local worker, now_s, op, ttl_ms, cutoff_s = A.worker, A.now_s, A.op, A.ttl_ms, A.cutoff_s
local flag = REPLY == 'flag'
local out, tks, swept = {}, {}, {}
for i = REST, #ARGV, G.SIZE do
  local id = ARGV[i + G.id - 1]
  local tk = task_key(id)
  local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.op, F.queue, F.seq, F.attempts,
    F.started_at, F.history, F.hn, F.due_at)
  if f[1] == S.DOING and f[2] == worker then
    local q = f[4]
    tally(q, TL.DONE, now_s, timed(TL.DONE, f[7], f[10], f[6], now_s))
    local h, hn = history_with(f[8], f[9], entry(f[6], f[7], now_s, O.OK, nil, worker))
    redis.call('HSET', tk, F.status, S.DONE, F.result, ARGV[i + G.result - 1], F.progress, '100',
      F.history, h, F.hn, hn, F.lease_expires_at, '', F.finished_at, now_s, F.updated_at, now_s,
      F.op, op)
    if isset(ttl_ms) then redis.call('PEXPIRE', tk, ttl_ms) end
    zrem_later(index_key(IX.leases, q), id)
    zadd_later(status_key(S.DONE, q), f[5], id)
    zadd_later(finished_key(S.DONE, q), now_s, id)
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
  for q in pairs(swept) do sweep(q, S.DONE, cutoff_s, SWEEP_ON_FINISH) end
end
for i, tk in ipairs(tks) do
  if not tk then out[i] = 0
  elseif flag then out[i] = 1
  else out[i] = redis.call('HGETALL', tk) end
end
return out
