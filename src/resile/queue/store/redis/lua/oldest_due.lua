-- oldest_due_at: the earliest due time of A.queue's PENDING tasks, the first entry of
-- its due index. A store written before that index existed (fewer entries than the
-- queue's PENDING tasks) gets it built first, once, from the PENDING status index.
-- Returns the time string or false.
local q = A.queue
local key, pending = index_key(IX.due, q), status_key(S.PENDING, q)
if redis.call('ZCARD', key) ~= redis.call('ZCARD', pending) then
  redis.call('DEL', key)
  local flat = {}
  for _, id in ipairs(redis.call('ZRANGE', pending, 0, -1)) do
    local due = redis.call('HGET', task_key(id), F.due_at)
    if due then
      flat[#flat + 1] = due
      flat[#flat + 1] = id
    end
  end
  zadd_all(key, flat)
end
local head = redis.call('ZRANGE', key, 0, 0)
if #head == 0 then return false end
return redis.call('HGET', task_key(head[1]), F.due_at) or false
