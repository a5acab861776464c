-- purge (one batch): delete up to `max` finished tasks in the given statuses
-- that finished at or before cutoff_s.
-- ARGV: 2 cutoff_s, 3 max, 4 nq, then nq queues, then statuses. Returns how many.
local cutoff_s, max, nq = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = 0
for i = 5, 4 + nq do
  for j = 5 + nq, #ARGV do
    if n < max then n = n + sweep(ARGV[i], ARGV[j], cutoff_s, max - n) end
  end
end
return n
