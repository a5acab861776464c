-- release: hand a leased task back unrun: PENDING, due now, the attempt not counted.
-- ARGV: 2 id, 3 worker, 4 now_s, 5 op. Returns {"ok", HGETALL} or {"no"}.
local id, worker, now_s, op = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'op', 'queue', 'seq', 'attempts',
  'rank', 'gated')
if f[1] ~= 'DOING' or f[2] ~= worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
local q = f[4]
local attempts = math.max((tonumber(f[6]) or 1) - 1, 0)
redis.call('HSET', tk, 'status', 'PENDING', 'due_at', now_s, 'attempts', attempts,
  'lease_expires_at', '', 'updated_at', now_s, 'op', op)
zrem_later(qkey('leases', q), id)
set_status(id, q, f[5], 'DOING', 'PENDING')
add_pending(id, q, f[7] or '', f[8] == '1', now_s, tonumber(now_s))
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
