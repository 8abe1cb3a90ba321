-- An operator's retry (admin_retry): a failed, cancelled or expired job goes back to
-- waiting (or, when its group has no free slot, to the head of its group's line: hold),
-- optionally with new data. Its old expiry no longer applies.
-- ARGV: now, data ('' = keep). Returns 'waiting' or 'grouped', the state the job is in
-- instead, or nil.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
local id = redis.call('HGET', K.job, 'id')
if state == 'waiting' or state == 'grouped' or state == 'delayed' or state == 'active' then return state end
local to = make_ready(K.job, id, state, 'admin_retry', waiting_score(K.job, tonumber(ARGV[1])))
if not to then return state end
redis.call('HSET', K.job, 'failedReason', '', 'finishedAt', '', 'stalls', 0, 'cancelReason', '')
redis.call('HDEL', K.job, 'cancelRequested', 'cancelRequestedAt', 'expiresAt')
if ARGV[2] ~= '' then redis.call('HSET', K.job, 'data', ARGV[2]) end
wake()
return to
