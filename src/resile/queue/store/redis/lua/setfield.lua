-- progress / save_checkpoint: set the field A.field of a PENDING or DOING task; with a
-- worker id (A.worker, "" = anyone), only while that worker holds it DOING.
-- Returns 1 or 0.
local tk = task_key(A.id)
local worker = A.worker
local f = redis.call('HMGET', tk, F.status, F.lease_owner)
if isset(worker) then
  if f[1] ~= S.DOING or f[2] ~= worker then return 0 end
elseif f[1] ~= S.PENDING and f[1] ~= S.DOING then
  return 0
end
redis.call('HSET', tk, A.field, A.value, F.updated_at, A.now_s)
return 1
