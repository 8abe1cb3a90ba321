-- Ends an attempt: records it and its metrics, moves the job on (complete, fail, or
-- retry: back to delayed for its backoff), then trims that state's set to the job's
-- retention (trim).
-- Fenced: only the delivery holding the job's current token may end it. A late
-- call from a delivery whose lease was taken over is refused and counted.
-- ARGV: the queue's hash tag, event, score, now, keep_count (-1 = all), keep_age_ms (-1 = any),
--       attempt_json, queue, duration_ms, histogram field, token, field/value pairs...
-- Returns the state the job left, 'repeat' when this same delivery's finish ran already
-- (a client that lost the reply to a timeout sends it again), or 'stale' when refused
-- (a job removed meanwhile too).
local state = redis.call('HGET', K.job, 'state')
if state and state ~= 'active' and redis.call('HGET', K.job, 'ended') == ARGV[11] then return 'repeat' end
local tag, event, score = ARGV[1], ARGV[2], ARGV[3]
local now, keep_count, keep_age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local queue, duration = ARGV[8], ARGV[9]
if state ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[11] then
  redis.call('HINCRBY', K.metrics, queue .. ':stale_finish', 1)
  return 'stale'
end
local id = redis.call('HGET', K.job, 'id')
local target = move(K.job, id, state, event, score)
if not target then return redis.error_reply('finish: no move ' .. state .. ' --' .. event) end
redis.call('HSET', K.job, 'ended', ARGV[11])
for i = 12, #ARGV, 2 do redis.call('HSET', K.job, ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('RPUSH', K.attempts, ARGV[7]) end
-- Metrics: counters, processing-time histogram and recent durations, throughput.
local counter = target
if event == 'retry' then counter = 'retried' end
redis.call('HINCRBY', K.metrics, queue .. ':' .. counter, 1)
if duration ~= '' then
  redis.call('HINCRBY', K.hist, ARGV[10], 1)
  redis.call('HINCRBY', K.hist, 'count', 1)
  redis.call('HINCRBYFLOAT', K.hist, 'sum', tonumber(duration) / 1000)
  redis.call('LPUSH', K.durations, duration)
  redis.call('LTRIM', K.durations, 0, 999)
end
if event == 'retry' then
  wake()  -- an idle worker recomputes how long it may block
  return state
end
local tp = tag .. ':tp:' .. target .. ':' .. math.floor(now / 10000)
redis.call('INCR', tp)
redis.call('EXPIRE', tp, 7300)
-- Retention.
local zset = K[target]
local jobs = tag .. ':job:'
if keep_count == 0 then
  move(K.job, id, target, 'trim', 0)
  return state
end
if keep_age >= 0 then
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. (now - keep_age))) do
    move(jobs .. old, old, target, 'trim', 0)
  end
end
if keep_count > 0 then
  for _, old in ipairs(redis.call('ZRANGE', zset, 0, -(keep_count + 1))) do
    move(jobs .. old, old, target, 'trim', 0)
  end
end
return state
