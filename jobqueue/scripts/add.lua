-- Stores a new job: new -> waiting (add) or new -> delayed (add_delayed), and wakes a
-- worker. With remember_ms, a marker that the id was added outlives the job by that
-- long (the outbox's relay reads it, so a job already run and trimmed is not added again).
-- ARGV: event, score, queue, remember_ms (0 = no marker), field/value pairs...
-- Returns 1 when created, 0 when a job with this id already exists.
if redis.call('EXISTS', K.job) == 1 then return 0 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', K.job, unpack(fields))
local id = redis.call('HGET', K.job, 'id')
move(K.job, id, 'new', ARGV[1], ARGV[2])
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':added', 1)
if tonumber(ARGV[4]) > 0 then redis.call('SET', K.job .. ':added', 1, 'PX', ARGV[4]) end
wake()
return 1
