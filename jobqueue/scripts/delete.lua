-- Removes one job wherever it is, unless it is active. ARGV: (none)
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if state == 'active' then return state end
local id = redis.call('HGET', K.job, 'id')
redis.call('ZREM', K[state], id)
redis.call('DEL', K.job, K.attempts)
return 'deleted'
