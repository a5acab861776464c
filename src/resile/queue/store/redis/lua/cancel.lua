-- cancel: PENDING or DOING -> CANCELED. A DOING task keeps its lease owner (its
-- worker finds out on renew) and gets a "canceled" history entry with A.error.
-- A.ttl_ms: the retention TTL ("" = keep); A.cutoff_s: the sweep cutoff ("" = none).
-- Returns 1 when canceled now, else 0.
local id, now_s, op = A.id, A.now_s, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.op, F.queue, F.seq, F.attempts, F.started_at,
  F.rank, F.history, F.hn, F.lease_owner)
if f[1] ~= S.PENDING and f[1] ~= S.DOING then
  if isset(op) and f[2] == op and f[1] == S.CANCELED then return 1 end
  return 0
end
local q = f[3]
if f[1] == S.DOING then
  local h, hn = history_with(f[8], f[9], entry(f[5], f[6], now_s, O.CANCELED, A.error, f[10]))
  redis.call('HSET', tk, F.history, h, F.hn, hn)
  zrem_later(index_key(IX.leases, q), id)
else
  unpend(id, q, f[7] or '')
end
redis.call('HSET', tk, F.status, S.CANCELED, F.lease_expires_at, '', F.finished_at, now_s,
  F.updated_at, now_s, F.op, op)
finish(tk, id, q, f[4], f[1], S.CANCELED, now_s, A.ttl_ms, A.cutoff_s)
flush_later()
return 1
