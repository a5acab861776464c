-- release: hand a leased task back unrun: PENDING, due now, the attempt not counted.
-- Returns {"ok", HGETALL} or {"no"}.
local id, now_s, op = A.id, A.now_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.op, F.queue, F.seq, F.attempts,
  F.rank, F.gated)
if f[1] ~= S.DOING or f[2] ~= A.worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
local q = f[4]
local attempts = math.max((tonumber(f[6]) or 1) - 1, 0)
redis.call('HSET', tk, F.status, S.PENDING, F.due_at, now_s, F.attempts, attempts,
  F.lease_expires_at, '', F.updated_at, now_s, F.op, op)
zrem_later(index_key(IX.leases, q), id)
set_status(id, q, f[5], S.DOING, S.PENDING)
add_pending(id, q, f[7] or '', f[8] == '1', now_s, tonumber(now_s))
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
