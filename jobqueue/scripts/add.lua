-- Creates a job in its first state and, when it is waiting and a message is given,
-- pushes that message onto the broker list in the same step: a job and its
-- message exist together or not at all.
-- ARGV: state, score, queue, message ('' = none), field/value pairs...
-- Returns 1 when created, 0 when a job with this id already exists.
if redis.call('EXISTS', K.job) == 1 then return 0 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', K.job, 'state', ARGV[1], unpack(fields))
redis.call('ZADD', K[ARGV[1]], ARGV[2], redis.call('HGET', K.job, 'id'))
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':added', 1)
if ARGV[4] ~= '' then redis.call('LPUSH', K.broker, ARGV[4]) end
return 1
