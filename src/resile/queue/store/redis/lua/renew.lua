-- renew / renew_many: extend the leases A.worker holds to A.expires_s.
-- The tail: task ids. Returns the ids still held.
local now_s, exp_s, worker = A.now_s, A.expires_s, A.worker
local held = {}
for i = REST, #ARGV do
  local id = ARGV[i]
  local tk = task_key(id)
  local f = redis.call('HMGET', tk, F.status, F.lease_owner, F.queue)
  if f[1] == S.DOING and f[2] == worker then
    redis.call('HSET', tk, F.lease_expires_at, exp_s, F.updated_at, now_s)
    redis.call('ZADD', index_key(IX.leases, f[3]), exp_s, id)
    held[#held + 1] = id
  end
end
return held
