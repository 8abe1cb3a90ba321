-- Creates a job in its first state and, when it is waiting and a message is given,
-- pushes that message onto the broker list in the same step: a job and its
-- message exist together or not at all. With remember_ms, a marker that the id
-- was added outlives the job by that long (the outbox's relay reads it, so a job
-- already run and trimmed is not added again).
-- ARGV: state, score, queue, message ('' = none), remember_ms (0 = no marker), field/value pairs...
-- Returns 1 when created, 0 when a job with this id already exists.
if redis.call('EXISTS', K.job) == 1 then return 0 end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', K.job, 'state', ARGV[1], unpack(fields))
local id = redis.call('HGET', K.job, 'id')
redis.call('ZADD', K[ARGV[1]], ARGV[2], id)
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':added', 1)
if ARGV[4] ~= '' then redis.call('LPUSH', K.broker, ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('SET', K.job .. ':added', 1, 'PX', ARGV[5]) end
return 1
