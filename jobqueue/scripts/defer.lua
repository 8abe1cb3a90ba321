-- Waiting jobs whose message could not be published (or met a paused queue) go back
-- to delayed, due soon. K.job is the job-key prefix ('<prefix>:job:').
-- ARGV: due, ids...
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', job_key(id), 'state') == 'waiting' then
    redis.call('ZREM', K.waiting, id)
    redis.call('ZADD', K.delayed, ARGV[1], id)
    redis.call('HSET', job_key(id), 'state', 'delayed')
  end
end
return #ARGV - 1
