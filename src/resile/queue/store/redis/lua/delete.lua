-- delete: one task that is not DOING (a running one is canceled first), with its index
-- entries. Returns 1 when deleted now, else 0.
local id = A.id
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.queue, F.rank)
if not f[1] or f[1] == S.DOING then return 0 end
local q = f[2]
if f[1] == S.PENDING then
  unpend(id, q, f[3] or '')
  redis.call('ZREM', status_key(S.PENDING, q), id)
  redis.call('DEL', tk)
  if redis.call('HINCRBY', QUEUES_KEY, q, -1) <= 0 then redis.call('HDEL', QUEUES_KEY, q) end
else
  drop(id, q, f[1])
end
return 1
