-- progress / save_checkpoint: set one field of a PENDING or DOING task; with a
-- worker id, only while that worker holds it DOING.
-- ARGV: 2 id, 3 field, 4 value, 5 worker ("" = anyone), 6 now_s. Returns 1 or 0.
local id, field, value, worker, now_s = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'lease_owner')
if isset(worker) then
  if f[1] ~= 'DOING' or f[2] ~= worker then return 0 end
elseif f[1] ~= 'PENDING' and f[1] ~= 'DOING' then
  return 0
end
redis.call('HSET', tk, field, value, 'updated_at', now_s)
return 1
