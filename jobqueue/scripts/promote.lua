-- Due delayed jobs (delays and retry backoffs) become waiting, each with a new
-- delivery number for the message the caller then publishes.
-- K.job is the job-key prefix ('<prefix>:job:').
-- ARGV: now, limit. Returns id, seq, id, seq, ...
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  local job = job_key(id)
  redis.call('ZREM', K.delayed, id)
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('ZADD', K.waiting, ARGV[1], id)
    redis.call('HSET', job, 'state', 'waiting')
    out[#out + 1] = id
    out[#out + 1] = redis.call('HINCRBY', job, 'seq', 1)
  end
end
return out
