-- fail: record a failed attempt of the lease holder; dead-letter it or schedule
-- the retry the caller computed from the task's stored policy.
-- ARGV: 2 id, 3 worker, 4 now_s, 5 op, 6 attempts the caller computed for,
-- 7 outcome, 8 error JSON, 9 dead ("1"|"0"), 10 due_s, 11 delay_s,
-- 12 TTL ms of a dead letter ("" = keep), 13 its sweep cutoff ("" = none).
-- Returns {"ok", HGETALL}, {"no"} (not held), or {"stale"} (attempts changed:
-- compute again).
local id, worker, now_s, op = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tk = tkey(id)
local f = redis.call('HMGET', tk, 'status', 'lease_owner', 'op', 'queue', 'seq', 'attempts',
  'started_at', 'rank', 'gated', 'history', 'hn')
if f[1] ~= 'DOING' or f[2] ~= worker then
  if isset(op) and f[3] == op then return {'ok', redis.call('HGETALL', tk)} end
  return {'no'}
end
if f[6] ~= ARGV[6] then return {'stale'} end
local q, err = f[4], ARGV[8]
local h, hn = history_with(f[10], f[11], entry(f[6], f[7], now_s, ARGV[7], err))
zrem_later(qkey('leases', q), id)
if ARGV[9] == '1' then
  redis.call('HSET', tk, 'status', 'FAILED', 'last_error', err, 'history', h, 'hn', hn,
    'lease_expires_at', '', 'finished_at', now_s, 'updated_at', now_s, 'op', op)
  finish(tk, id, q, f[5], 'DOING', 'FAILED', now_s, ARGV[12], ARGV[13])
else
  redis.call('HSET', tk, 'status', 'PENDING', 'last_error', err, 'history', h, 'hn', hn,
    'lease_expires_at', '', 'last_delay', ARGV[11], 'due_at', ARGV[10], 'updated_at', now_s,
    'op', op)
  set_status(id, q, f[5], 'DOING', 'PENDING')
  add_pending(id, q, f[8] or '', f[9] == '1', ARGV[10], tonumber(now_s))
end
flush_later()
flush_pending()
return {'ok', redis.call('HGETALL', tk)}
