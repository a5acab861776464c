-- requeue: FAILED or CANCELED -> PENDING due at due_s; attempts and last_delay
-- reset; history, last_error, checkpoint and progress kept; the retention TTL removed.
-- ARGV: 2 id, 3 now_s, 4 due_s, 5 op. Returns {"ok", HGETALL} or {"no"}.
local id, now_s, due_s, op = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'op', 'queue', 'seq', 'rank', 'gated')
if f[1] ~= 'FAILED' and f[1] ~= 'CANCELED' then
  if isset(op) and f[2] == op and f[1] == 'PENDING' then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
local q = f[3]
redis.call('PERSIST', tk)
redis.call('HSET', tk, 'status', 'PENDING', 'attempts', '0', 'due_at', due_s, 'last_delay', '',
  'finished_at', '', 'lease_expires_at', '', 'updated_at', now_s, 'op', op)
zrem_later(qkey('f:' .. f[1], q), id)
set_status(id, q, f[4], f[1], 'PENDING')
add_pending(id, q, f[5] or '', f[6] == '1', due_s, tonumber(now_s))
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
