-- requeue: FAILED or CANCELED -> PENDING due at A.due_s; attempts and last_delay
-- reset; history, last_error, checkpoint and progress kept; the retention TTL removed.
-- Returns {"ok", HGETALL} or {"no"}.
local id, now_s, due_s, op = A.id, A.now_s, A.due_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.op, F.queue, F.seq, F.rank, F.gated)
if f[1] ~= S.FAILED and f[1] ~= S.CANCELED then
  if isset(op) and f[2] == op and f[1] == S.PENDING then
    return {'ok', redis.call('HGETALL', tk)}
  end
  return {'no'}
end
local q = f[3]
redis.call('PERSIST', tk)
redis.call('HSET', tk, F.status, S.PENDING, F.attempts, '0', F.due_at, due_s, F.last_delay, '',
  F.finished_at, '', F.lease_expires_at, '', F.updated_at, now_s, F.op, op)
zrem_later(finished_key(f[1], q), id)
set_status(id, q, f[4], f[1], S.PENDING)
add_pending(id, q, f[5] or '', f[6] == '1', due_s, tonumber(now_s))
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
