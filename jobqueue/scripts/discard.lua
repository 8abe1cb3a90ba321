-- Forgets a job whose message the broker refused (the two-step publish of a
-- non-Redis broker). ARGV: queue
local state = redis.call('HGET', K.job, 'state')
if not state then return 0 end
redis.call('ZREM', K[state], redis.call('HGET', K.job, 'id'))
redis.call('DEL', K.job, K.attempts)
redis.call('HINCRBY', K.metrics, ARGV[1] .. ':added', -1)
return 1
