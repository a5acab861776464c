-- delete: one task that is not DOING (a running one is canceled first), with its index
-- entries. Returns 1 when deleted now, else 0. A call retried after its reply was lost
-- (the same A.op) finds the tombstone the first one left and answers 1 again.
local id, op = A.id, A.op
local tk = task_key(id)
local f = redis.call('HMGET', tk, F.status, F.queue, F.rank)
if not f[1] then
  if isset(op) and redis.call('GET', deleted_key(op)) == id then return 1 end
  return 0
end
if f[1] == S.DOING then return 0 end
local q = f[2]
if f[1] == S.PENDING then
  unpend(id, q, f[3] or '')
  redis.call('ZREM', status_key(S.PENDING, q), id)
  redis.call('DEL', tk)
  if redis.call('HINCRBY', QUEUES_KEY, q, -1) <= 0 then redis.call('HDEL', QUEUES_KEY, q) end
else
  drop(id, q, f[1])
end
if isset(op) then redis.call('SET', deleted_key(op), id, 'PX', 60000) end
return 1
