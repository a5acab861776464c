-- cancel: PENDING or DOING -> CANCELED. A DOING task keeps its lease owner (its
-- worker finds out on renew) and gets a "canceled" history entry.
-- ARGV: 2 id, 3 now_s, 4 op, 5 error JSON for that entry, 6 TTL ms ("" = keep),
-- 7 sweep cutoff ("" = none). Returns 1 when canceled now, else 0.
local id, now_s, op = ARGV[2], ARGV[3], ARGV[4]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'op', 'queue', 'seq', 'attempts', 'started_at',
  'rank', 'history', 'hn')
if f[1] ~= 'PENDING' and f[1] ~= 'DOING' then
  if isset(op) and f[2] == op and f[1] == 'CANCELED' then return 1 end
  return 0
end
local q = f[3]
if f[1] == 'DOING' then
  local h, hn = history_with(f[8], f[9], entry(f[5], f[6], now_s, 'canceled', ARGV[5]))
  redis.call('HSET', tk, 'history', h, 'hn', hn)
  zrem_later(qkey('leases', q), id)
else
  unpend(id, q, f[7] or '')
end
redis.call('HSET', tk, 'status', 'CANCELED', 'lease_expires_at', '', 'finished_at', now_s,
  'updated_at', now_s, 'op', op)
finish(tk, id, q, f[4], f[1], 'CANCELED', now_s, ARGV[6], ARGV[7])
flush_later()
return 1
