-- corrupt: a leased task that cannot be decoded goes to FAILED with the reason A.error.
-- A.ttl_ms: the retention TTL ("" = keep); A.cutoff_s: the sweep cutoff ("" = none).
-- Returns 1, or 0 when the worker does not hold it.
local id, now_s = A.id, A.now_s
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.queue, F.seq)
if f[1] ~= S.DOING or f[2] ~= A.worker then return 0 end
local q = f[3]
redis.call('HSET', tk, F.status, S.FAILED, F.last_error, A.error, F.lease_expires_at, '',
  F.finished_at, now_s, F.updated_at, now_s)
zrem_later(index_key(IX.leases, q), id)
finish(tk, id, q, f[4], S.DOING, S.FAILED, now_s, A.ttl_ms, A.cutoff_s)
flush_later()
return 1
