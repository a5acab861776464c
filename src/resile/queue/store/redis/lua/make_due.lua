-- make_due: a PENDING task not due yet -> due at A.now_s (an operator's "retry now");
-- only due_at and updated_at change. Returns {"ok", HGETALL} or {"no"}.
local id, now_s = A.id, A.now_s
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.queue, F.rank, F.gated, F.due_at)
if f[1] ~= S.PENDING or not (tonumber(f[5]) and tonumber(f[5]) > tonumber(now_s)) then
  return {'no'}
end
local q = f[2]
unpend(id, q, f[3] or '')
redis.call('HSET', tk, F.due_at, now_s, F.updated_at, now_s)
add_pending(id, q, f[3] or '', f[4] == '1', now_s, tonumber(now_s))
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
