-- lease: reclaim expired leases, move due delayed tasks to ready, then take up
-- to A.limit due tasks in (priority, sequence) order for A.worker, from the queues
-- that are not paused.
-- A.capacity: the worker's capacity JSON ("" = any); A.op_ttl_ms: how long the op is
-- remembered; A.failed_ttl_ms / A.failed_cutoff_s: a dead letter's retention TTL and
-- sweep cutoff ("" = keep / none); A.nq: the number of queues. The tail: the queue
-- names, then one record per reclaim the caller decided (G.*): id, seen (the
-- lease_expires_at it saw), dead ("1"|"0"), due_s, delay_s, error (JSON).
-- Returns {"need", {id, lease_expires_at, attempts, max_retries, backoff,
-- last_delay, queue, handler, traceparent}, ...} when expired leases need the caller's decision (nothing is
-- leased then), else {"ok", HGETALL, ...} of the leased tasks.
local now_s, exp_s, worker = A.now_s, A.expires_s, A.worker
local limit, cap, op, op_ttl = tonumber(A.limit), decode_cap(A.capacity), A.op, A.op_ttl_ms
local failed_ttl, failed_cutoff = A.failed_ttl_ms, A.failed_cutoff_s
local now = tonumber(now_s)
local nq = tonumber(A.nq)
local queues = {}
for i = 1, nq do queues[i] = ARGV[REST + i - 1] end
local rec = {}
for a = REST + nq - 1, #ARGV - G.SIZE, G.SIZE do
  rec[ARGV[a + G.id]] = {seen = ARGV[a + G.seen], dead = ARGV[a + G.dead], due_s = ARGV[a + G.due_s],
    delay_s = ARGV[a + G.delay_s], error = ARGV[a + G.error]}
end
local lop = last_lease_key(worker)

-- A retry of this very lease (its reply was lost): hand back what it took.
if isset(op) then
  local last = redis.call('GET', lop)
  if last then
    local ok, d = pcall(cjson.decode, last)
    if ok and d[1] == op then
      local out = {'ok'}
      for _, id in ipairs(d[2]) do
        local tk = task_key(id)
        local f = redis.call('HMGET', tk, F.status, F.lease_owner)
        if f[1] == S.DOING and f[2] == worker then out[#out + 1] = redis.call('HGETALL', tk) end
      end
      return out
    end
  end
end

-- 1. Reclaim expired leases (expiry strictly before now).
local need = {'need'}
for _, q in ipairs(queues) do
  local lk = index_key(IX.leases, q)
  local ids = redis.call('ZRANGEBYSCORE', lk, '-inf', '(' .. now_s, 'LIMIT', 0, RECLAIM_BATCH)
  for _, id in ipairs(ids) do
    local tk = task_key(id)
    local f = redis.call('HMGET', tk, F.status, F.lease_expires_at, F.attempts, F.max_retries,
      F.backoff, F.last_delay, F.started_at, F.seq, F.rank, F.gated, F.history, F.hn,
      F.handler, F.traceparent, F.lease_owner)
    local r = rec[id]
    local seen = f[2] or ''
    if f[1] ~= S.DOING then
      redis.call('ZREM', lk, id)  -- a stale entry (the task is gone)
    elseif r and r.seen == seen then
      local err = r.error
      local h, hn = history_with(f[11], f[12],
        entry(f[3] or '0', f[7], isset(seen) and seen or now_s, O.LOST, err, f[15]))
      redis.call('ZREM', lk, id)
      tally(q, r.dead == '1' and TL.DEAD or TL.RETRIED, now_s)
      if r.dead == '1' then
        redis.call('HSET', tk, F.status, S.FAILED, F.last_error, err, F.history, h, F.hn, hn,
          F.lease_expires_at, '', F.finished_at, now_s, F.updated_at, now_s)
        finish(tk, id, q, f[8], S.DOING, S.FAILED, now_s, failed_ttl, failed_cutoff)
      else
        redis.call('HSET', tk, F.status, S.PENDING, F.last_error, err, F.history, h, F.hn, hn,
          F.lease_expires_at, '', F.last_delay, r.delay_s, F.due_at, r.due_s, F.updated_at, now_s)
        set_status(id, q, f[8], S.DOING, S.PENDING)
        add_pending(id, q, f[9] or '', f[10] == '1', r.due_s, now)
      end
    else
      need[#need + 1] = {id, seen, f[3] or '0', f[4] or '0', f[5] or '', f[6] or '', q,
        f[13] or '', f[14] or ''}
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
  for _, pair in ipairs({{IX.delayed, IX.ready}, {IX.gdelayed, IX.gready}}) do
    local dk = index_key(pair[1], q)
    local ids = redis.call('ZRANGEBYSCORE', dk, '-inf', now_s, 'LIMIT', 0, MIGRATE_LIMIT)
    if #ids > 0 then
      local members = {}
      for _, id in ipairs(ids) do
        local rank = redis.call('HGET', task_key(id), F.rank)
        if rank then
          members[#members + 1] = 0
          members[#members + 1] = rank .. id
        end
      end
      zrem_all(dk, ids)
      zadd_all(index_key(pair[2], q), members)
    end
  end
end

-- 3. Candidates: the first `limit` of each ready set (gated ones that fit), merged by rank;
-- none from a paused queue (its expired leases and due delayed tasks were handled above).
local open = {}
for _, q in ipairs(queues) do
  if redis.call('HEXISTS', PAUSED_KEY, q) == 0 then open[#open + 1] = q end
end
local cands = {}
for _, q in ipairs(open) do
  for _, m in ipairs(redis.call('ZRANGE', index_key(IX.ready, q), 0, limit - 1)) do
    cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, IX.ready}
  end
  local gk = index_key(IX.gready, q)
  if cap == nil then
    for _, m in ipairs(redis.call('ZRANGE', gk, 0, limit - 1)) do
      cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, IX.gready}
    end
  else
    local found, start = 0, 0
    while found < limit and start < GATED_SCAN_LIMIT do
      local ms = redis.call('ZRANGE', gk, start, start + 63)
      for _, m in ipairs(ms) do
        if found < limit
          and fits(redis.call('HGET', task_key(string.sub(m, RANK_LEN + 1)), F.resources), cap) then
          cands[#cands + 1] = {string.sub(m, 1, RANK_LEN), m, q, IX.gready}
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
  local tk = task_key(id)
  zrem_later(index_key(c[4], q), m)
  zrem_later(index_key(IX.due, q), id)
  local f = redis.call('HMGET', tk, F.status, F.seq, F.attempts)
  if f[1] == S.PENDING then
    redis.call('HSET', tk, F.status, S.DOING, F.attempts, (tonumber(f[3]) or 0) + 1,
      F.lease_owner, worker, F.lease_expires_at, exp_s, F.started_at, now_s, F.updated_at, now_s)
    set_status(id, q, f[2], S.PENDING, S.DOING)
    zadd_later(index_key(IX.leases, q), exp_s, id)
    taken[#taken + 1] = id
    out[#out + 1] = redis.call('HGETALL', tk)
  end
end
flush_later()

-- 5. A lease that filled up may leave due work behind: wake another worker.
if #taken >= limit then
  for _, q in ipairs(open) do
    local ready, gready = index_key(IX.ready, q), index_key(IX.gready, q)
    if redis.call('ZCARD', ready) > 0 or redis.call('ZCARD', gready) > 0 then
      wake(q)
    end
  end
end
if #taken > 0 and isset(op) then
  redis.call('SET', lop, cjson.encode({op, taken}), 'PX', op_ttl)
end
return out
