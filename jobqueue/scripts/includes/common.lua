-- Shared by every script. K (named keys), ALLOWED (the transition table of
-- jobqueue/lifecycle.py: ALLOWED[state][event] = next state) and the features
-- (EVENTS_MAXLEN, BUCKETS, INDEXES, LOG_LINES, MINUTE_BOUNDS, MINUTE_TTL) come from
-- the loader's preamble.

-- A job hash in the same queue as K.job (scripts that move many jobs get K.job as the prefix).
local function job_key(id)
  return K.job .. id
end

-- Any job hash of this queue, from the queue's tag (right in every script).
local function queue_job(id)
  return K.tag .. ':job:' .. id
end

-- Priority first, then the order jobs became waiting: the waiting set's score (PRIORITY_STEP: preamble).
local function waiting_score(job, now)
  return string.format('%.0f', tonumber(redis.call('HGET', job, 'priority') or 0) * PRIORITY_STEP + now)
end

-- Wake one idle worker of the queue (it blocks on K.wake); one marker is enough.
local function wake()
  if redis.call('LLEN', K.wake) == 0 then redis.call('LPUSH', K.wake, 1) end
end

-- One entry on the queue's event stream (what /events and wait_until_finished read).
local function emit(id, event, state, ...)
  if EVENTS_MAXLEN > 0 then
    redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'id', id, 'event', event, 'state', state, ...)
  end
end

-- Per-minute metric buckets, kept 72 hours: counters and wait/processing-time histograms.
local function minute_key(now)
  return K.tag .. ':m:' .. math.floor(now / 60000)
end

local function count_minute(now, field, by)
  if not BUCKETS then return end
  local key = minute_key(now)
  if redis.call('HINCRBY', key, field, by or 1) == (by or 1) then redis.call('EXPIRE', key, MINUTE_TTL) end
end

-- The histogram field a time (ms) falls in: '<prefix><upper bound>', or '<prefix>inf'.
local function time_bucket(prefix, ms)
  for _, bound in ipairs(MINUTE_BOUNDS) do
    if ms <= bound then return prefix .. bound end
  end
  return prefix .. 'inf'
end

local function time_minute(now, prefix, ms)
  if not BUCKETS then return end
  local key = minute_key(now)
  redis.call('HINCRBY', key, time_bucket(prefix, ms), 1)
  redis.call('HINCRBYFLOAT', key, prefix .. 'sum', ms)
end

-- Drop a job from the search indexes (its tags, the creation order).
local function unindex(job, id)
  if not INDEXES then return end
  local tags = redis.call('HGET', job, 'tags')
  if tags and tags ~= '' then
    for _, tag in ipairs(cjson.decode(tags)) do redis.call('ZREM', K.tag .. ':idx:' .. tag, id) end
  end
  redis.call('ZREM', K.created, id)
end

-- The one way a job changes state: the move must be a row of the table. Returns the
-- new state, or nil (and changes nothing) when the table has no such move.
local function move(job, id, from, event, score)
  local row = ALLOWED[from]
  local to = row and row[event]
  if not to then return nil end
  if from ~= 'new' then redis.call('ZREM', K[from], id) end
  if (from == 'waiting' or from == 'delayed') and to ~= 'waiting' and to ~= 'delayed' then
    redis.call('ZREM', K.expiring, id)
  end
  if to == 'removed' then
    unindex(job, id)
    redis.call('DEL', job, job .. ':attempts', job .. ':logs')
    if event ~= 'trim' then emit(id, event, to) end
    return to
  end
  redis.call('ZADD', K[to], score, id)
  redis.call('HSET', job, 'state', to)
  if from == 'active' then redis.call('ZREM', K.leases, id) end
  emit(id, event, to)
  return to
end

-- Keep a finished state's set to a retention (trim): the keep_count newest (-1: all; 0:
-- not even the job id that just got there), none older than keep_age ms (-1: any age).
local function retain(state, id, now, keep_count, keep_age)
  if keep_count == 0 then
    move(queue_job(id), id, state, 'trim', 0)
    return
  end
  local jobs = K.tag .. ':job:'
  if keep_age >= 0 then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', K[state], '-inf', '(' .. (now - keep_age), 'LIMIT', 0, 1000)) do
      move(jobs .. old, old, state, 'trim', 0)
    end
  end
  if keep_count > 0 then
    for _, old in ipairs(redis.call('ZRANGE', K[state], 0, -(keep_count + 1))) do
      move(jobs .. old, old, state, 'trim', 0)
    end
  end
end

-- End a pending or stalled job without running it (cancel, expire): reason, metrics, retention.
local function end_unrun(job, id, from, event, now, reason, queue, keep_count, keep_age)
  local to = move(job, id, from, event, now)
  if not to then return nil end
  local field = 'failedReason'
  if to == 'cancelled' then field = 'cancelReason' end
  redis.call('HSET', job, 'finishedAt', now, field, reason)
  redis.call('HINCRBY', K.metrics, queue .. ':' .. to, 1)
  count_minute(now, to)
  retain(to, id, now, keep_count, keep_age)
  return to
end
