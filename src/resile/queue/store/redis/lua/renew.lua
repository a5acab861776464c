-- renew / renew_many: extend the leases a worker holds.
-- ARGV: 2 now_s, 3 expires_s, 4 worker, then task ids. Returns the ids still held.
local now_s, exp_s, worker = ARGV[2], ARGV[3], ARGV[4]
local held = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local tk = tkey(id)
  local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'queue')
  if f[1] == 'DOING' and f[2] == worker then
    redis.call('HSET', tk, 'lease_expires_at', exp_s, 'updated_at', now_s)
    redis.call('ZADD', qkey('leases', f[3]), exp_s, id)
    held[#held + 1] = id
  end
end
return held
