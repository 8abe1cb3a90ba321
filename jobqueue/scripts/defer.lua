-- An operator's snooze of a job that has not started (defer): waiting or delayed -> delayed
-- until a time. ARGV: until (ms). Returns 'delayed', the state it is in instead, or nil.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if not move(K.job, redis.call('HGET', K.job, 'id'), state, 'defer', ARGV[1]) then return state end
wake()  -- an idle worker recomputes how long it may block
return 'delayed'
