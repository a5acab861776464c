-- schedule_swap: compare-and-set one schedule record (a field of the schedules hash) and,
-- when a task record follows the arguments, create that task in the same script (a task
-- whose id exists is kept). The guard of a tick: its record and its task, or neither.
local cur = redis.call('HGET', SCHEDULES_KEY, A.name)
if A.has_old == '1' then
  if cur ~= A.old then return {'conflict'} end
elseif cur then
  return {'conflict'}
end
if A.has_new == '1' then
  redis.call('HSET', SCHEDULES_KEY, A.name, A.new)
else
  redis.call('HDEL', SCHEDULES_KEY, A.name)
end
if #ARGV < REST then return {'swapped'} end
return create_one(REST - 1, A.now_s, A.op, 'return')
