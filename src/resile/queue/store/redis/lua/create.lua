-- create_many (and create1.lua for one task): store new PENDING tasks, all of them or none.
-- A.if_exists: "error" | "return"; A.n: the number of task records in the tail, each
-- (G.*): id, queue, handler, params, priority, rank_prefix (priority as 16 sortable hex
-- digits), max_retries, backoff, due_s, timeout_s ("" = none), resources ("" = none),
-- gated ("1" | "0").
-- Returns {"replay"} when this op already ran (its reply was lost: the caller
-- reads the tasks), {"dup", id, queue} under "error", else {"ok", item, ...} with
-- per task the new sequence number, the existing task's HGETALL (under
-- "return"), or "again" (a repeated id in this batch: the earlier one's).
local now_s, policy, op, n = A.now_s, A.if_exists, A.op, tonumber(A.n)
local now = tonumber(now_s)
local base = REST - 1  -- ARGV[base + i * G.SIZE + G.<field>] is a field of record i (from 0)

-- First pass: duplicates (and a replay of this op), before anything is written.
local out, seen, fresh = {'ok'}, {}, 0
for i = 0, n - 1 do
  local a = base + i * G.SIZE
  local id = ARGV[a + G.id]
  if seen[id] then
    if policy == 'error' then return {'dup', id, seen[id]} end
    out[i + 2] = 'again'
  elseif redis.call('EXISTS', task_key(id)) == 1 then
    local tk = task_key(id)
    local f = redis.call('HMGET', tk, F.cop, F.queue)
    if isset(op) and f[1] == op then return {'replay'} end
    if policy == 'error' then return {'dup', id, f[2]} end
    out[i + 2] = redis.call('HGETALL', tk)
    seen[id] = f[2]
  else
    seen[id] = ARGV[a + G.queue]
    out[i + 2] = 0
    fresh = fresh + 1
  end
end

local seq = 0
if fresh > 0 then seq = redis.call('INCRBY', KEYS[1], fresh) - fresh end
local counts, skeys = {}, {}
for i = 0, n - 1 do
  if out[i + 2] == 0 then
    local a = base + i * G.SIZE
    local id, q, due_s = ARGV[a + G.id], ARGV[a + G.queue], ARGV[a + G.due_s]
    seq = seq + 1
    local rank = ARGV[a + G.rank_prefix] .. string.format('%016x', seq)
    local tk = task_key(id)
    local gated = write_new(tk, a, rank, seq, now_s, op)
    local skey = skeys[q]
    if not skey then skey = status_key(S.PENDING, q); skeys[q] = skey end
    zadd_later(skey, seq, id)
    counts[q] = (counts[q] or 0) + 1
    add_pending(id, q, rank, gated, due_s, now)
    out[i + 2] = seq
  end
end
for q, c in pairs(counts) do redis.call('HINCRBY', QUEUES_KEY, q, c) end
flush_later()
flush_pending()
return out
