-- sweep: delete finished tasks past their retention from the indexes (their
-- hashes expired already, or go now), so that counts and lists are exact.
-- ARGV: 2 max per queue and status, 3 DONE cutoff, 4 FAILED cutoff, 5 CANCELED
-- cutoff ("" = kept forever), then queues. Returns how many were deleted.
local max = tonumber(ARGV[2])
local n = 0
for i = 6, #ARGV do
  n = n + sweep(ARGV[i], 'DONE', ARGV[3], max)
  n = n + sweep(ARGV[i], 'FAILED', ARGV[4], max)
  n = n + sweep(ARGV[i], 'CANCELED', ARGV[5], max)
end
return n
