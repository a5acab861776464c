-- complete: DOING -> DONE for the lease holder.
-- ARGV: 2 id, 3 worker, 4 result JSON, 5 now_s, 6 op, 7 TTL ms ("" = keep),
-- 8 sweep cutoff of DONE tasks ("" = none).
-- Returns {"ok", HGETALL} or {"no"}; a retry of the same op gets {"ok", ...} again.
local id, worker, result, now_s, op = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'op', 'queue', 'seq', 'attempts',
  'started_at', 'history', 'hn')
if f[1] ~= 'DOING' or f[2] ~= worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
local q = f[4]
local h, hn = history_with(f[8], f[9], entry(f[6], f[7], now_s, 'ok', nil))
redis.call('HSET', tk, 'status', 'DONE', 'result', result, 'progress', '100', 'history', h,
  'hn', hn, 'lease_expires_at', '', 'finished_at', now_s, 'updated_at', now_s, 'op', op)
zrem_later(qkey('leases', q), id)
finish(tk, id, q, f[5], 'DOING', 'DONE', now_s, ARGV[7], ARGV[8])
flush_later()
return {'ok', redis.call('HGETALL', tk)}
