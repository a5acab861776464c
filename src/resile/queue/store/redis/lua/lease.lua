-- lease: reclaim expired leases, move due delayed tasks to ready, then take up
-- to `limit` due tasks in (priority, sequence) order for a worker.
-- ARGV: 2 now_s, 3 expires_s, 4 worker, 5 limit, 6 capacity JSON ("" = any),
-- 7 op, 8 op_ttl_ms, 9 TTL of a dead letter in ms ("" = keep), 10 its sweep
-- cutoff ("" = none), 11 nq, then nq queue names, then nrec, then 6 fields per
-- reclaim decided by the caller: id, lease_expires_at it saw, dead ("1"|"0"),
-- due_s, delay_s, error JSON.
-- Returns {"need", {id, lease_expires_at, attempts, max_retries, backoff,
-- last_delay}, ...} when expired leases need the caller's backoff computation
-- (nothing is leased then), else {"ok", HGETALL, ...} of the leased tasks.
local now_s, exp_s, worker = ARGV[2], ARGV[3], ARGV[4]
local limit, cap, op, op_ttl = tonumber(ARGV[5]), decode_cap(ARGV[6]), ARGV[7], ARGV[8]
local failed_ttl, failed_cutoff = ARGV[9], ARGV[10]
local now = tonumber(now_s)
local nq = tonumber(ARGV[11])
local queues = {}
for i = 1, nq do queues[i] = ARGV[11 + i] end
local r0 = 12 + nq
local rec = {}
for i = 0, tonumber(ARGV[r0]) - 1 do
  local a = r0 + i * 6
  rec[ARGV[a + 1]] = {ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]}
end
local lop = R .. ':lop:' .. worker

-- A retry of this very lease (its reply was lost): hand back what it took.
if isset(op) then
  local last = redis.call('GET', lop)
  if last then
    local ok, d = pcall(cjson.decode, last)
    if ok and d[1] == op then
      local out = {'ok'}
      for _, id in ipairs(d[2]) do
        local tk = tkey(id)
        local f = redis.call('HMGET', tk, 'status', 'lease_owner')
        if f[1] == 'DOING' and f[2] == worker then out[#out + 1] = redis.call('HGETALL', tk) end
      end
      return out
    end
  end
end

-- 1. Reclaim expired leases (expiry strictly before now).
local need = {'need'}
for _, q in ipairs(queues) do
  local lk = qkey('leases', q)
  local ids = redis.call('ZRANGEBYSCORE', lk, '-inf', '(' .. now_s, 'LIMIT', 0, RECLAIM_BATCH)
  for _, id in ipairs(ids) do
    local tk = tkey(id)
    local f = redis.call('HMGET', tk, 'status', 'lease_expires_at', 'attempts', 'max_retries',
      'backoff', 'last_delay', 'started_at', 'seq', 'rank', 'gated', 'history', 'hn')
    local r = rec[id]
    local seen = f[2] or ''
    if f[1] ~= 'DOING' then
      redis.call('ZREM', lk, id)  -- a stale entry (the task is gone)
    elseif r and r[1] == seen then
      local err = r[5]
      local h, hn = history_with(f[11], f[12],
        entry(f[3] or '0', f[7], isset(seen) and seen or now_s, 'lost', err))
      redis.call('ZREM', lk, id)
      if r[2] == '1' then
        redis.call('HSET', tk, 'status', 'FAILED', 'last_error', err, 'history', h, 'hn', hn,
          'lease_expires_at', '', 'finished_at', now_s, 'updated_at', now_s)
        finish(tk, id, q, f[8], 'DOING', 'FAILED', now_s, failed_ttl, failed_cutoff)
      else
        redis.call('HSET', tk, 'status', 'PENDING', 'last_error', err, 'history', h, 'hn', hn,
          'lease_expires_at', '', 'last_delay', r[4], 'due_at', r[3], 'updated_at', now_s)
        set_status(id, q, f[8], 'DOING', 'PENDING')
        add_pending(id, q, f[9] or '', f[10] == '1', r[3], now)
      end
    else
      need[#need + 1] = {id, seen, f[3] or '0', f[4] or '0', f[5] or '', f[6] or ''}
    end
  end
end
if #need > 1 then
  flush_later()
  flush_pending()
  return need
end
flush_later()
flush_pending()

-- 2. Delayed tasks that are due become ready.
for _, q in ipairs(queues) do
  for _, pre in ipairs({'', 'g'}) do
    local dk = qkey(pre .. 'delayed', q)
    local ids = redis.call('ZRANGEBYSCORE', dk, '-inf', now_s, 'LIMIT', 0, MIGRATE_LIMIT)
    if #ids > 0 then
      local members = {}
      for _, id in ipairs(ids) do
        local rank = redis.call('HGET', tkey(id), 'rank')
        if rank then
          members[#members + 1] = 0
          members[#members + 1] = rank .. id
        end
      end
      zrem_all(dk, ids)
      zadd_all(qkey(pre .. 'ready', q), members)
    end
  end
end

-- 3. Candidates: the first `limit` of each ready set (gated ones that fit), merged by rank.
local cands = {}
for _, q in ipairs(queues) do
  for _, m in ipairs(redis.call('ZRANGE', qkey('ready', q), 0, limit - 1)) do
    cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, 'ready'}
  end
  local gk = qkey('gready', q)
  if cap == nil then
    for _, m in ipairs(redis.call('ZRANGE', gk, 0, limit - 1)) do
      cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, 'gready'}
    end
  else
    local found, start = 0, 0
    while found < limit and start < GATED_SCAN_LIMIT do
      local ms = redis.call('ZRANGE', gk, start, start + 63)
      for _, m in ipairs(ms) do
        if found < limit
          and fits(redis.call('HGET', tkey(string.sub(m, RANK_LEN + 1)), 'resources'), cap) then
          cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, 'gready'}
          found = found + 1
        end
      end
      if #ms < 64 then break end
      start = start + 64
    end
  end
end
if #cands > 1 then table.sort(cands, function(x, y) return x[1] < y[1] end) end

-- 4. Lease them.
local out, taken = {'ok'}, {}
for i = 1, #cands do
  if #taken >= limit then break end
  local c = cands[i]
  local m, q = c[2], c[3]
  local id = string.sub(m, RANK_LEN + 1)
  local tk = tkey(id)
  zrem_later(qkey(c[4], q), m)
  local f = redis.call('HMGET', tk, 'status', 'seq', 'attempts')
  if f[1] == 'PENDING' then
    redis.call('HSET', tk, 'status', 'DOING', 'attempts', (tonumber(f[3]) or 0) + 1,
      'lease_owner', worker, 'lease_expires_at', exp_s, 'started_at', now_s, 'updated_at', now_s)
    set_status(id, q, f[2], 'PENDING', 'DOING')
    zadd_later(qkey('leases', q), exp_s, id)
    taken[#taken + 1] = id
    out[#out + 1] = redis.call('HGETALL', tk)
  end
end
flush_later()

-- 5. A lease that filled up may leave due work behind: wake another worker.
if #taken >= limit then
  for _, q in ipairs(queues) do
    if redis.call('ZCARD', qkey('ready', q)) > 0 or redis.call('ZCARD', qkey('gready', q)) > 0 then
      wake(q)
    end
  end
end
if #taken > 0 and isset(op) then
  redis.call('SET', lop, cjson.encode({op, taken}), 'PX', op_ttl)
end
return out
