-- Ends an attempt: records it and its metrics, moves the job on (complete, fail, cancel;
-- retry or snooze: back to delayed until score; rate_limit: back to waiting, and the whole
-- queue takes no job for throttle_ms), then trims the state it reached to the job's
-- retention (trim). A snooze or a rate_limit gives back the attempt it started.
-- Fenced: only the delivery holding the job's current token may end it. A late
-- call from a delivery whose lease was taken over is refused and counted.
-- ARGV: throttle_ms (rate_limit), event, score, now, keep_count (-1 = all), keep_age_ms (-1 = any),
--       attempt_json, queue, duration_ms, histogram field, token, field/value pairs...
-- Returns the state the job left, 'repeat' when this same delivery's finish ran already
-- (a client that lost the reply to a timeout sends it again), or 'stale' when refused
-- (a job removed meanwhile too).
local state = redis.call('HGET', K.job, 'state')
if state and state ~= 'active' and redis.call('HGET', K.job, 'ended') == ARGV[11] then return 'repeat' end
local event, score = ARGV[2], ARGV[3]
local now, keep_count, keep_age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local queue, duration = ARGV[8], ARGV[9]
if state ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[11] then
  redis.call('HINCRBY', K.metrics, queue .. ':stale_finish', 1)
  return 'stale'
end
local id = redis.call('HGET', K.job, 'id')
-- Back to waiting: its priority and now, whatever score the caller sent.
if event == 'rate_limit' then score = waiting_score(K.job, now) end
if not ALLOWED[state][event] then return redis.error_reply('finish: no move ' .. state .. ' --' .. event) end
-- The result and reason first: the move tells a flow's parent about them (flow_notify).
redis.call('HSET', K.job, 'ended', ARGV[11])
for i = 12, #ARGV, 2 do redis.call('HSET', K.job, ARGV[i], ARGV[i + 1]) end
if event == 'cancel' then
  redis.call('HSET', K.job, 'cancelReason', redis.call('HGET', K.job, 'cancelRequested') or 'cancelled')
end
local target = move(K.job, id, state, event, score)
if ARGV[7] ~= '' then redis.call('RPUSH', K.attempts, ARGV[7]) end
-- Metrics: counters, processing-time histogram and recent durations, throughput.
local counter = target
if event == 'retry' then counter = 'retried' end
if event == 'snooze' then
  counter = 'snoozed'
  redis.call('HINCRBY', K.job, 'attempts', -1)
  redis.call('HINCRBY', K.job, 'snoozes', 1)
end
if event == 'rate_limit' then
  counter = 'rate_limited'
  redis.call('HINCRBY', K.job, 'attempts', -1)
  redis.call('HINCRBY', K.job, 'rateLimits', 1)
  local ms = tonumber(ARGV[1]) or 0
  if ms > 0 and redis.call('PTTL', K.throttle) < ms then redis.call('SET', K.throttle, id, 'PX', ms) end
end
redis.call('HINCRBY', K.metrics, queue .. ':' .. counter, 1)
count_minute(now, counter)
if duration ~= '' then
  redis.call('HINCRBY', K.hist, ARGV[10], 1)
  redis.call('HINCRBY', K.hist, 'count', 1)
  redis.call('HINCRBYFLOAT', K.hist, 'sum', tonumber(duration) / 1000)
  redis.call('LPUSH', K.durations, duration)
  redis.call('LTRIM', K.durations, 0, 999)
  time_minute(now, 'p', tonumber(duration))
end
if target == 'delayed' or target == 'waiting' then
  wake()  -- an idle worker recomputes how long it may block
  return state
end
retain(target, id, now, keep_count, keep_age)
return state
