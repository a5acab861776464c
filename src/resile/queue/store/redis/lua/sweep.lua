-- sweep: delete finished tasks past their retention from the indexes (their
-- hashes expired already, or go now), so that counts and lists are exact: up to
-- A.max per queue and status, each status with its cutoff ("" = kept forever).
-- The tail: the queues. Returns how many were deleted.
local max = tonumber(A.max)
local n = 0
for i = REST, #ARGV do
  n = n + sweep(ARGV[i], S.DONE, A.done_cutoff_s, max)
  n = n + sweep(ARGV[i], S.FAILED, A.failed_cutoff_s, max)
  n = n + sweep(ARGV[i], S.CANCELED, A.canceled_cutoff_s, max)
end
return n
