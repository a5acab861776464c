-- create, one task (a single-call enqueue): create.lua's steps for n = 1, as a script of
-- its own so that it carries none of the batch bookkeeping (Redis runs a script's whole
-- text, closures included, on every call). ARGV: as create.lua's.
local now_s, policy, op = ARGV[2], ARGV[3], ARGV[4]
local id, q, due_s = ARGV[6], ARGV[7], ARGV[14]
local tk = tkey(id)
if redis.call('EXISTS', tk) == 1 then
  local f = redis.call('HMGET', tk, 'cop', 'queue')
  if isset(op) and f[1] == op then return {'replay'} end
  if policy == 'error' then return {'dup', id, f[2]} end
  return {'ok', redis.call('HGETALL', tk)}
end
local seq = redis.call('INCR', KEYS[1])
local rank = ARGV[11] .. string.format('%016x', seq)
redis.call('HSET', tk, 'id', id, 'queue', q, 'handler', ARGV[8], 'params', ARGV[9],
  'priority', ARGV[10], 'rank', rank, 'seq', seq, 'status', 'PENDING',
  'max_retries', ARGV[12], 'backoff', ARGV[13], 'due_at', due_s,
  'created_at', now_s, 'updated_at', now_s, 'cop', op)
local gated = set_extras(tk, ARGV[15], ARGV[16], ARGV[17])
redis.call('ZADD', qkey('s:PENDING', q), seq, id)
redis.call('HINCRBY', QUEUES, q, 1)
-- Index it: lib.lua's add_pending + flush_pending for one task, inline (cheaper per call).
if gated then
  wake(q)
  if tonumber(due_s) <= tonumber(now_s) then
    redis.call('ZADD', qkey('gready', q), 0, rank .. id)
  else
    redis.call('ZADD', qkey('gdelayed', q), due_s, id)
  end
elseif tonumber(due_s) <= tonumber(now_s) then
  local key = qkey('ready', q)
  if redis.call('ZADD', key, 0, rank .. id) == 1 and redis.call('ZCARD', key) == 1 then wake(q) end
else
  local key = qkey('delayed', q)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #head == 0 or tonumber(due_s) < tonumber(head[2]) then wake(q) end
  redis.call('ZADD', key, due_s, id)
end
return {'ok', seq}
