-- fail: record a failed attempt of the lease holder; dead-letter it (A.dead = "1") or
-- schedule the retry the caller decided (due A.due_s after a wait A.delay_s), both
-- decided from A.attempts, A.started_s, A.max_retries, A.backoff and A.last_delay (the
-- task's fields as the caller read them). A.ttl_ms / A.cutoff_s: a dead letter's retention
-- TTL and sweep cutoff ("" = keep / none).
-- Returns {"ok", HGETALL}, {"no"} (not held), or {"stale"} (an input changed:
-- decide again).
local id, now_s, op = A.id, A.now_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.op, F.queue, F.seq, F.attempts,
  F.started_at, F.rank, F.gated, F.history, F.hn, F.max_retries, F.backoff, F.last_delay,
  F.due_at)
if f[1] ~= S.DOING or f[2] ~= A.worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
-- The decision's inputs must still be what the caller decided from.
if (f[6] or '') ~= A.attempts or (f[7] or '') ~= A.started_s or (f[12] or '') ~= A.max_retries
    or (f[13] or '') ~= A.backoff or (f[14] or '') ~= A.last_delay then
  return {'stale'}
end
local q, err = f[4], A.error
local h, hn = history_with(f[10], f[11], entry(f[6], f[7], now_s, A.outcome, err, A.worker))
zrem_later(index_key(IX.leases, q), id)
local outcome = A.dead == '1' and TL.DEAD or TL.RETRIED
tally(q, outcome, now_s, timed(outcome, f[7], f[15], f[6], now_s))
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
