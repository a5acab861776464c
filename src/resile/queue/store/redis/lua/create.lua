-- create_many (and create1.lua for one task): store new PENDING tasks, all of them or none.
-- ARGV: 2 now_s, 3 if_exists ("error" | "return"), 4 op, 5 n, then 12 fields per
-- task: id, queue, handler, params, priority, ph (priority as 16 sortable hex
-- digits), max_retries, backoff, due_s, timeout_s ("" = none), resources ("" =
-- none), gated ("1" | "0").
-- Returns {"replay"} when this op already ran (its reply was lost: the caller
-- reads the tasks), {"dup", id, queue} under "error", else {"ok", item, ...} with
-- per task the new sequence number, the existing task's HGETALL (under
-- "return"), or "again" (a repeated id in this batch: the earlier one's).
-- Fields at their default are not written: "attempts" (0), "gated" ("0"), "timeout" and
-- "resources" (none).
local now_s, policy, op, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = tonumber(now_s)
local F, B = 12, 5

-- First pass: duplicates (and a replay of this op), before anything is written.
local out, seen, fresh = {'ok'}, {}, 0
for i = 0, n - 1 do
  local id = ARGV[B + i * F + 1]
  if seen[id] then
    if policy == 'error' then return {'dup', id, seen[id]} end
    out[i + 2] = 'again'
  elseif redis.call('EXISTS', tkey(id)) == 1 then
    local tk = tkey(id)
    local f = redis.call('HMGET', tk, 'cop', 'queue')
    if isset(op) and f[1] == op then return {'replay'} end
    if policy == 'error' then return {'dup', id, f[2]} end
    out[i + 2] = redis.call('HGETALL', tk)
    seen[id] = f[2]
  else
    seen[id] = ARGV[B + i * F + 2]
    out[i + 2] = 0
    fresh = fresh + 1
  end
end

local seq = 0
if fresh > 0 then seq = redis.call('INCRBY', KEYS[1], fresh) - fresh end
local counts, skeys = {}, {}
for i = 0, n - 1 do
  if out[i + 2] == 0 then
    local a = B + i * F
    local id, q, due_s = ARGV[a + 1], ARGV[a + 2], ARGV[a + 9]
    seq = seq + 1
    local rank = ARGV[a + 6] .. string.format('%016x', seq)
    local tk = tkey(id)
    redis.call('HSET', tk, 'id', id, 'queue', q, 'handler', ARGV[a + 3], 'params', ARGV[a + 4],
      'priority', ARGV[a + 5], 'rank', rank, 'seq', seq, 'status', 'PENDING',
      'max_retries', ARGV[a + 7], 'backoff', ARGV[a + 8], 'due_at', due_s,
      'created_at', now_s, 'updated_at', now_s, 'cop', op)
    local gated = set_extras(tk, ARGV[a + 10], ARGV[a + 11], ARGV[a + 12])
    local skey = skeys[q]
    if not skey then skey = qkey('s:PENDING', q); skeys[q] = skey end
    zadd_later(skey, seq, id)
    counts[q] = (counts[q] or 0) + 1
    add_pending(id, q, rank, gated, due_s, now)
    out[i + 2] = seq
  end
end
for q, c in pairs(counts) do redis.call('HINCRBY', QUEUES, q, c) end
flush_later()
flush_pending()
return out
