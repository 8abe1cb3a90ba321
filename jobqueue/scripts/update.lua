-- Replaces the data of a job that is not running (an operator's edit; no state change).
-- ARGV: data (as the store keeps it). Returns the job's state ('active': refused), or nil.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if state == 'active' then return state end
redis.call('HSET', K.job, 'data', ARGV[1])
emit(redis.call('HGET', K.job, 'id'), 'updated', state)
return state
