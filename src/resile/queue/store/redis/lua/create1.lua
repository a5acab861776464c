-- create, one task (a single-call enqueue): create.lua's steps for n = 1, as a script of
-- its own so that it carries none of the batch bookkeeping (Redis runs a script's whole
-- text, closures included, on every call). Arguments: as create.lua's.
local now_s, policy, op = A.now_s, A.if_exists, A.op
local a = REST - 1
local id, q, due_s = ARGV[a + G.id], ARGV[a + G.queue], ARGV[a + G.due_s]
local tk = task_key(id)
if redis.call('EXISTS', tk) == 1 then
  local f = redis.call('HMGET', tk, F.cop, F.queue)
  if isset(op) and f[1] == op then return {'replay'} end
  if policy == 'error' then return {'dup', id, f[2]} end
  return {'ok', redis.call('HGETALL', tk)}
end
local seq = redis.call('INCR', KEYS[1])
local rank = ARGV[a + G.rank_prefix] .. string.format('%016x', seq)
local gated = write_new(tk, a, rank, seq, now_s, op)
redis.call('ZADD', status_key(S.PENDING, q), seq, id)
redis.call('HINCRBY', QUEUES_KEY, q, 1)
redis.call('ZADD', index_key(IX.due, q), due_s, id)
-- Index it: the library's pending-index steps for one task, inline (cheaper per call).
if gated then
  wake(q)
  if tonumber(due_s) <= tonumber(now_s) then
    redis.call('ZADD', index_key(IX.gready, q), 0, rank .. id)
  else
    redis.call('ZADD', index_key(IX.gdelayed, q), due_s, id)
  end
elseif tonumber(due_s) <= tonumber(now_s) then
  local key = index_key(IX.ready, q)
  if redis.call('ZADD', key, 0, rank .. id) == 1 and redis.call('ZCARD', key) == 1 then wake(q) end
else
  local key = index_key(IX.delayed, q)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #head == 0 or tonumber(due_s) < tonumber(head[2]) then wake(q) end
  redis.call('ZADD', key, due_s, id)
end
return {'ok', seq}
