-- Ends an attempt: records it and its metrics, moves the job to its next state
-- (completed, failed, or delayed for a retry), then trims that state's set to
-- the job's retention.
-- Fenced: only the delivery holding the job's current token may end it. A late
-- call from a delivery whose lease was taken over is refused and counted.
-- ARGV: prefix, state, score, now, keep_count (-1 = all), keep_age_ms (-1 = any),
--       attempt_json, queue, duration_ms, histogram field, token, field/value pairs...
-- Returns the state the job left, 'stale' when refused, or nil for an unknown job.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
local prefix, target, score = ARGV[1], ARGV[2], ARGV[3]
local now, keep_count, keep_age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local queue, duration = ARGV[8], ARGV[9]
if state ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[11] then
  redis.call('HINCRBY', K.metrics, queue .. ':stale_finish', 1)
  return 'stale'
end
local id = redis.call('HGET', K.job, 'id')
redis.call('ZREM', K.active, id)
redis.call('ZREM', K.leases, id)
local zset = K[target]
redis.call('ZADD', zset, score, id)
redis.call('HSET', K.job, 'state', target)
redis.call('HINCRBY', K.job, 'seq', 1)
for i = 12, #ARGV, 2 do redis.call('HSET', K.job, ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('RPUSH', K.attempts, ARGV[7]) end
-- Metrics: counters, processing-time histogram and recent durations, throughput.
local event = target
if target == 'delayed' then event = 'retried' end
redis.call('HINCRBY', K.metrics, queue .. ':' .. event, 1)
if duration ~= '' then
  redis.call('HINCRBY', K.hist, ARGV[10], 1)
  redis.call('HINCRBY', K.hist, 'count', 1)
  redis.call('HINCRBYFLOAT', K.hist, 'sum', tonumber(duration) / 1000)
  redis.call('LPUSH', K.durations, duration)
  redis.call('LTRIM', K.durations, 0, 999)
end
if target ~= 'delayed' then
  local tp = prefix .. ':' .. queue .. ':tp:' .. target .. ':' .. math.floor(now / 10000)
  redis.call('INCR', tp)
  redis.call('EXPIRE', tp, 7300)
end
-- Retention.
if keep_count == 0 then
  remove_job(prefix, zset, id)
  return state
end
if keep_age >= 0 then
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. (now - keep_age))) do
    remove_job(prefix, zset, old)
  end
end
if keep_count > 0 then
  for _, old in ipairs(redis.call('ZRANGE', zset, 0, -(keep_count + 1))) do
    remove_job(prefix, zset, old)
  end
end
return state
