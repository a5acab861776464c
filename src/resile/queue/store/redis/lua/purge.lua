-- purge (one batch): delete up to A.max finished tasks in the given statuses that
-- finished at or before A.cutoff_s. The tail: A.nq queues, then the statuses.
-- Returns how many.
local cutoff_s, max, nq = A.cutoff_s, tonumber(A.max), tonumber(A.nq)
local n = 0
for i = REST, REST + nq - 1 do
  for j = REST + nq, #ARGV do
    if n < max then n = n + sweep(ARGV[i], ARGV[j], cutoff_s, max - n) end
  end
end
return n
