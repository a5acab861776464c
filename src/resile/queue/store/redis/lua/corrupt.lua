-- corrupt: a leased task that cannot be decoded goes to FAILED with the reason.
-- ARGV: 2 id, 3 worker, 4 now_s, 5 error JSON, 6 TTL ms ("" = keep), 7 sweep cutoff.
-- Returns 1, or 0 when the worker does not hold it.
local id, worker, now_s = ARGV[2], ARGV[3], ARGV[4]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'queue', 'seq')
if f[1] ~= 'DOING' or f[2] ~= worker then return 0 end
local q = f[3]
redis.call('HSET', tk, 'status', 'FAILED', 'last_error', ARGV[5], 'lease_expires_at', '',
  'finished_at', now_s, 'updated_at', now_s)
zrem_later(qkey('leases', q), id)
finish(tk, id, q, f[4], 'DOING', 'FAILED', now_s, ARGV[6], ARGV[7])
flush_later()
return 1
