-- make_due: a PENDING task not due yet -> due at A.now_s (an operator's "retry now");
-- only due_at, updated_at and the last op change. Returns {"ok", HGETALL} or {"no"}.
-- A call retried after its reply was lost (the same A.op) answers {"ok", ...} again.
local id, now_s, op = A.id, A.now_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.queue, F.rank, F.gated, F.due_at, F.op)
if f[1] == S.PENDING and isset(op) and f[6] == op then
  return {'ok', redis.call('HGETALL', tk)}
end
if f[1] ~= S.PENDING or not (tonumber(f[5]) and tonumber(f[5]) > tonumber(now_s)) then
  return {'no'}
end
local q = f[2]
unpend(id, q, f[3] or '')
redis.call('HSET', tk, F.due_at, now_s, F.updated_at, now_s, F.op, op)
add_pending(id, q, f[3] or '', f[4] == '1', now_s, tonumber(now_s))
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
