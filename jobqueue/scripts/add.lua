-- Stores a new job: new -> waiting (add) or new -> delayed (add_delayed), indexes it for
-- search, and wakes a worker. With remember_ms, a marker that the id was added outlives
-- the job by that long (the outbox's relay reads it, so a job already run and trimmed is
-- not added again).
-- ARGV: event, score, queue, remember_ms (0 = no marker), expires_at (0 = never),
--       tags (JSON list of 'field:value', '' = none), created_at, field/value pairs...
-- Returns 1 when created, 0 when a job with this id already exists.
if redis.call('EXISTS', K.job) == 1 then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', K.job, unpack(fields))
local id = redis.call('HGET', K.job, 'id')
move(K.job, id, 'new', ARGV[1], ARGV[2])
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':added', 1)
if tonumber(ARGV[4]) > 0 then redis.call('SET', K.job .. ':added', 1, 'PX', ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('ZADD', K.expiring, ARGV[5], id) end
if INDEXES then
  redis.call('ZADD', K.created, ARGV[7], id)
  if ARGV[6] ~= '' then
    for _, tag in ipairs(cjson.decode(ARGV[6])) do redis.call('ZADD', K.tag .. ':idx:' .. tag, ARGV[7], id) end
  end
end
count_minute(tonumber(ARGV[7]), 'added')
wake()
return 1
