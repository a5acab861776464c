-- Shared by the scripts of the Redis task store: resile links into each script the
-- blocks it uses (see _scripts.py). Each block opens with a line "-- lib: <names>"
-- naming what it defines at its top level; a block may use only blocks above it.
-- The header before the blocks defines R (the key root, ARGV[1]), the limits
-- (HISTORY_LIMIT, MIGRATE_LIMIT, ...) and the key functions (task_key(id),
-- index_key(index, q), status_key(status, q), finished_key(status, q),
-- channel_key(q), last_lease_key(worker), deleted_key(op), QUEUES_KEY). State, field, outcome and
-- index names are written S.DOING, F.status, O.LOST, IX.ready: resile injects them.
--
-- Conventions: KEYS[1] is the store's sequence key (it carries the hash tag, so
-- Redis Cluster routes the script to the store's slot); ARGV[1] is the key root
-- "resile:{<namespace>}". Times travel as the caller's strings (Python repr of a
-- float) and are stored as given, never formatted by Lua, so they keep every bit.
-- An empty string in a task field means "not set".

-- lib: isset
local function isset(v) return v and v ~= '' end

-- lib: write_new
-- Write a new PENDING task from the task record at ARGV[a + G.<field>] (create and
-- create1 share the record's layout). Fields most tasks leave at their default are
-- not written: attempts (0), gated ("0"), timeout, resources and traceparent (none).
-- Returns whether it is gated (needs that not every worker meets).
local function write_new(tk, a, rank, seq, now_s, op)
  redis.call('HSET', tk, F.id, ARGV[a + G.id], F.queue, ARGV[a + G.queue],
    F.handler, ARGV[a + G.handler], F.params, ARGV[a + G.params],
    F.priority, ARGV[a + G.priority], F.rank, rank, F.seq, seq, F.status, S.PENDING,
    F.max_retries, ARGV[a + G.max_retries], F.backoff, ARGV[a + G.backoff],
    F.due_at, ARGV[a + G.due_s], F.created_at, now_s, F.updated_at, now_s, F.cop, op)
  if isset(ARGV[a + G.timeout_s]) then redis.call('HSET', tk, F.timeout, ARGV[a + G.timeout_s]) end
  if isset(ARGV[a + G.resources]) then
    redis.call('HSET', tk, F.resources, ARGV[a + G.resources])
  end
  if isset(ARGV[a + G.traceparent]) then
    redis.call('HSET', tk, F.traceparent, ARGV[a + G.traceparent])
  end
  if ARGV[a + G.gated] == '1' then
    redis.call('HSET', tk, F.gated, '1')
    return true
  end
  return false
end

-- lib: woken, wake
-- One PUBLISH per queue and script: "work on q may be due, look again".
local woken = {}
local function wake(q)
  if not woken[q] then
    woken[q] = true
    redis.call('PUBLISH', channel_key(q), '1')
  end
end

-- lib: create_one
-- Create the task whose record starts at ARGV[a + 1] (create1's steps, shared with the
-- schedule_swap script). policy: the if_exists of an existing id ('error' or 'return').
-- Returns {'ok', seq} for a new task, {'replay'}, {'dup', id, queue} or {'ok', HGETALL}.
local function create_one(a, now_s, op, policy)
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
end

-- lib: zadd_all, zrem_all
-- ZADD / ZREM with many members, in chunks that fit Lua's stack.
local function zadd_all(key, flat)
  for i = 1, #flat, 2000 do
    redis.call('ZADD', key, unpack(flat, i, math.min(i + 1999, #flat)))
  end
end
local function zrem_all(key, members)
  for i = 1, #members, 2000 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 1999, #members)))
  end
end

-- lib: adds, rems, zadd_later, zrem_later, flush_later
-- Writes to per-queue sorted sets, collected and sent as one command per key.
local adds, rems = {}, {}
local function zadd_later(key, score, member)
  local t = adds[key]
  if not t then t = {}; adds[key] = t end
  t[#t + 1] = score
  t[#t + 1] = member
end
local function zrem_later(key, member)
  local t = rems[key]
  if not t then t = {}; rems[key] = t end
  t[#t + 1] = member
end
local function flush_later()
  for key, members in pairs(rems) do zrem_all(key, members) end
  for key, flat in pairs(adds) do zadd_all(key, flat) end
  adds, rems = {}, {}
end

-- lib: entry
-- One history entry, as AttemptRecord.to_dict() writes it. `started` and `ended` are
-- stored time strings, `err` a JSON object or nil, `worker` the lease holder's id or nil.
local function entry(attempt, started, ended, outcome, err, worker)
  return '{"attempt":' .. attempt .. ',"started_at":' .. (isset(started) and started or 'null')
    .. ',"ended_at":' .. ended .. ',"outcome":"' .. outcome .. '","error":'
    .. (isset(err) and err or 'null') .. ',"worker":'
    .. (isset(worker) and cjson.encode(worker) or 'null') .. '}'
end

-- lib: history_with
-- The JSON list `h` (holding `n` entries) with `e` appended, cut to the last
-- HISTORY_LIMIT. Entries start with '{"attempt":', text that cannot occur inside
-- a JSON string (its quotes would be escaped), so it marks where one begins.
local function history_with(h, n, e)
  n = tonumber(n) or 0
  if not isset(h) or h == '[]' then return '[' .. e .. ']', 1 end
  h, n = string.sub(h, 1, -2) .. ',' .. e .. ']', n + 1
  while n > HISTORY_LIMIT do
    local cut = string.find(h, ',{"attempt":', 2, true)
    if not cut then break end
    h, n = '[' .. string.sub(h, cut + 1), n - 1
  end
  return h, n
end

-- lib: set_status
-- The status index, scored by sequence. DOING has none: the leases set holds
-- exactly the DOING tasks.
local function set_status(id, q, seq, from, to)
  if from and from ~= S.DOING then zrem_later(status_key(from, q), id) end
  if to ~= S.DOING then zadd_later(status_key(to, q), seq, id) end
end

-- lib: pend, add_pending
-- PENDING tasks to index, per queue: {ready = {...}, gready = ..., delayed = ..., ...}.
local pend = {}
local function add_pending(id, q, rank, gated, due_s, now)
  local p = pend[q]
  if not p then
    p = {ready = {}, gready = {}, delayed = {}, gdelayed = {}, due = {}, first = nil}
    pend[q] = p
  end
  p.due[#p.due + 1] = due_s
  p.due[#p.due + 1] = id
  local due = tonumber(due_s)
  if due <= now then
    local t = gated and p.gready or p.ready
    t[#t + 1] = 0
    t[#t + 1] = rank .. id
  else
    local t = gated and p.gdelayed or p.delayed
    t[#t + 1] = due_s
    t[#t + 1] = id
    if not gated and (p.first == nil or due < p.first) then p.first = due end
  end
end

-- lib: flush_pending
-- Index the collected PENDING tasks, and wake idle workers when they could not know:
--   * due now, no needs: only when "ready" was empty (else every worker is busy,
--     or already awake and about to lease; a lease that fills up passes the word on);
--   * due later: only when one is the new earliest of "delayed" (idle workers sleep
--     until the earliest due time they saw);
--   * gated (resource needs): always (few, and only some workers can take them).
local function flush_pending()
  for q, p in pairs(pend) do
    if #p.due > 0 then zadd_all(index_key(IX.due, q), p.due) end
    if #p.ready > 0 then
      local key = index_key(IX.ready, q)
      if not woken[q] and redis.call('ZCARD', key) == 0 then wake(q) end
      zadd_all(key, p.ready)
    end
    if #p.delayed > 0 then
      local key = index_key(IX.delayed, q)
      if not woken[q] then
        local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if #head == 0 or p.first < tonumber(head[2]) then wake(q) end
      end
      zadd_all(key, p.delayed)
    end
    if #p.gready > 0 or #p.gdelayed > 0 then
      wake(q)
      if #p.gready > 0 then zadd_all(index_key(IX.gready, q), p.gready) end
      if #p.gdelayed > 0 then zadd_all(index_key(IX.gdelayed, q), p.gdelayed) end
    end
  end
  pend = {}
end

-- lib: unpend
-- Take a PENDING task out of every pending index (one of them holds it).
local function unpend(id, q, rank)
  redis.call('ZREM', index_key(IX.ready, q), rank .. id)
  redis.call('ZREM', index_key(IX.gready, q), rank .. id)
  redis.call('ZREM', index_key(IX.delayed, q), id)
  redis.call('ZREM', index_key(IX.gdelayed, q), id)
  redis.call('ZREM', index_key(IX.due, q), id)
end

-- lib: drop
-- Delete a finished task and its index entries. The hash goes only if it still
-- is that finished task (its TTL may have removed it, and the id been reused).
local function drop(id, q, status)
  local tk = task_key(id)
  if redis.call('HGET', tk, F.status) == status then redis.call('DEL', tk) end
  redis.call('ZREM', status_key(status, q), id)
  redis.call('ZREM', finished_key(status, q), id)
  if redis.call('HINCRBY', QUEUES_KEY, q, -1) <= 0 then redis.call('HDEL', QUEUES_KEY, q) end
end

-- lib: sweep
-- Delete up to `max` tasks of q in `status` that finished at or before `cutoff_s`.
local function sweep(q, status, cutoff_s, max)
  if not isset(cutoff_s) then return 0 end
  local ids = redis.call('ZRANGEBYSCORE', finished_key(status, q), '-inf', cutoff_s, 'LIMIT', 0, max)
  for _, id in ipairs(ids) do drop(id, q, status) end
  return #ids
end

-- lib: finish
-- A DOING or PENDING task reached a terminal status (its hash is written):
-- indexes, retention TTL, and a few expired neighbours swept.
local function finish(tk, id, q, seq, from, to, now_s, ttl_ms, cutoff_s)
  set_status(id, q, seq, from, to)
  zadd_later(finished_key(to, q), now_s, id)
  if isset(ttl_ms) then redis.call('PEXPIRE', tk, ttl_ms) end
  if isset(cutoff_s) then
    flush_later()
    sweep(q, to, cutoff_s, SWEEP_ON_FINISH)
  end
end

-- lib: fits
-- Whether a worker offering `cap` (a decoded JSON object, nil = do not check)
-- meets the needs in `res` (the task's "resources" JSON). Unreadable needs
-- "fit", so that the lease returns the task and the caller dead-letters it.
local function fits(res, cap)
  if cap == nil or not isset(res) then return true end
  local ok, needs = pcall(cjson.decode, res)
  if not ok or type(needs) ~= 'table' then return true end
  for k, v in pairs(needs) do
    if type(v) ~= 'number' then return true end
    local have = cap[k]
    if type(have) ~= 'number' then have = 0 end
    if have < v then return false end
  end
  return true
end

-- lib: decode_cap
local function decode_cap(s)
  if not isset(s) then return nil end
  return cjson.decode(s)
end

-- lib: timed
-- The bucket counter of an attempt that ends at now_s (base.timed_tally, the same rule):
-- "<tally>:<run bucket>", and ":<lateness bucket>" for a retry attempt (attempts >= 2);
-- nil without a start. Bucket i: the first i with seconds <= TIMING_EDGES[i] (0-based),
-- #TIMING_EDGES above them.
local function timed(what, started_s, due_s, attempts, now_s)
  if not isset(started_s) then return nil end
  local function bucket(seconds)
    for i, edge in ipairs(TIMING_EDGES) do
      if seconds <= edge then return i - 1 end
    end
    return #TIMING_EDGES
  end
  local started = tonumber(started_s)
  local key = what .. TIMING_SEP .. bucket(tonumber(now_s) - started)
  if (tonumber(attempts) or 0) >= 2 and isset(due_s) then
    key = key .. TIMING_SEP .. bucket(started - tonumber(due_s))
  end
  return key
end

-- lib: tally
-- Count one outcome (TL.*) of queue q in the per-minute counters: a hash per queue and
-- hour, field "<minute>/<tally>" (_keys.TALLY_FIELD), kept TALLY_KEEP_S seconds. With a
-- bucket counter (timed), also in that hour's per-minute bucket hash and that day's
-- per-hour one (their TTL set when a field is new: each minute / hour makes new fields).
local function tally(q, what, now_s, counter)
  local minute = math.floor(tonumber(now_s) / 60)
  local hour = math.floor(minute / 60)
  local key = tally_key(hour, q)
  redis.call('HINCRBY', key, minute .. '/' .. what, 1)
  redis.call('EXPIRE', key, TALLY_KEEP_S)
  if counter then
    local tm, th = timing_key(hour, q), timing_hours_key(math.floor(hour / 24), q)
    if redis.call('HINCRBY', tm, minute .. '/' .. counter, 1) == 1 then
      redis.call('EXPIRE', tm, TALLY_KEEP_S)
    end
    if redis.call('HINCRBY', th, hour .. '/' .. counter, 1) == 1 then
      redis.call('EXPIRE', th, TALLY_KEEP_S)
    end
  end
end
