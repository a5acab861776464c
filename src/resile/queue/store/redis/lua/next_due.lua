-- next_due_at: the earliest time a lease on these queues could return something:
-- the due time of the first ready task (already due), the earliest delayed task,
-- the earliest lease expiry; gated tasks only when they fit A.capacity (JSON, "" = any).
-- The tail: the queues. Returns the time string or false.
local cap = decode_cap(A.capacity)
local best, best_s = nil, false
local function consider(s)
  local v = tonumber(s)
  if v and (best == nil or v < best) then best, best_s = v, s end
end
local function head_due(key)
  local m = redis.call('ZRANGE', key, 0, 0)
  if #m > 0 then
    consider(redis.call('HGET', task_key(string.sub(m[1], RANK_LEN + 1)), F.due_at))
  end
end
local function head_score(key)
  local m = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #m > 0 then consider(m[2]) end
end
for i = REST, #ARGV do
  local q = ARGV[i]
  head_due(index_key(IX.ready, q))
  head_score(index_key(IX.delayed, q))
  head_score(index_key(IX.leases, q))
  if cap == nil then
    head_due(index_key(IX.gready, q))
    head_score(index_key(IX.gdelayed, q))
  else
    -- Tasks with needs are few (GPU work): look at each, up to GATED_SCAN_LIMIT.
    for _, m in ipairs(redis.call('ZRANGE', index_key(IX.gready, q), 0, GATED_SCAN_LIMIT - 1)) do
      local f = redis.call('HMGET', task_key(string.sub(m, RANK_LEN + 1)), F.resources, F.due_at)
      if fits(f[1], cap) then consider(f[2]) end
    end
    local ds = redis.call('ZRANGE', index_key(IX.gdelayed, q), 0, GATED_SCAN_LIMIT - 1,
      'WITHSCORES')
    for k = 1, #ds, 2 do
      if fits(redis.call('HGET', task_key(ds[k]), F.resources), cap) then consider(ds[k + 1]) end
    end
  end
end
return best_s
