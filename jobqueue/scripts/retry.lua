-- An operator's retry: puts a failed job back to waiting, optionally with new data.
-- ARGV: now, data ('' = keep). Returns the new delivery number, or the state the job is in instead.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if state ~= 'failed' then return state end
local id = redis.call('HGET', K.job, 'id')
redis.call('ZREM', K.failed, id)
redis.call('ZADD', K.waiting, ARGV[1], id)
redis.call('HSET', K.job, 'state', 'waiting', 'failedReason', '', 'finishedAt', '', 'stalls', 0)
if ARGV[2] ~= '' then redis.call('HSET', K.job, 'data', ARGV[2]) end
return redis.call('HINCRBY', K.job, 'seq', 1)
