-- fail: record a failed attempt of the lease holder; dead-letter it (A.dead = "1") or
-- schedule the retry the caller decided (due A.due_s after a wait A.delay_s), both
-- decided for attempt A.attempts of the lease started at A.started_s ("" = any). A.ttl_ms / A.cutoff_s: a dead letter's retention
-- TTL and sweep cutoff ("" = keep / none).
-- Returns {"ok", HGETALL}, {"no"} (not held), or {"stale"} (attempts changed:
-- decide again).
local id, now_s, op = A.id, A.now_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.op, F.queue, F.seq, F.attempts,
  F.started_at, F.rank, F.gated, F.history, F.hn)
if f[1] ~= S.DOING or f[2] ~= A.worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
if f[6] ~= A.attempts or (isset(A.started_s) and f[7] ~= A.started_s) then
  return {'stale'}
end
local q, err = f[4], A.error
local h, hn = history_with(f[10], f[11], entry(f[6], f[7], now_s, A.outcome, err))
zrem_later(index_key(IX.leases, q), id)
if A.dead == '1' then
  redis.call('HSET', tk, F.status, S.FAILED, F.last_error, err, F.history, h, F.hn, hn,
    F.lease_expires_at, '', F.finished_at, now_s, F.updated_at, now_s, F.op, op)
  finish(tk, id, q, f[5], S.DOING, S.FAILED, now_s, A.ttl_ms, A.cutoff_s)
else
  redis.call('HSET', tk, F.status, S.PENDING, F.last_error, err, F.history, h, F.hn, hn,
    F.lease_expires_at, '', F.last_delay, A.delay_s, F.due_at, A.due_s, F.updated_at, now_s,
    F.op, op)
  set_status(id, q, f[5], S.DOING, S.PENDING)
  add_pending(id, q, f[8] or '', f[9] == '1', A.due_s, tonumber(now_s))
end
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
