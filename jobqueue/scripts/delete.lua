-- Removes one job wherever it is, unless it is active (an operator's delete). ARGV: (none)
-- Returns 'deleted', the state it is in instead, or nil for an unknown job.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if not move(K.job, redis.call('HGET', K.job, 'id'), state, 'delete', 0) then return state end
return 'deleted'
