-- The one place a worker takes jobs, BullMQ's moveToActive for a batch:
--   1. active jobs whose lease ran out (their worker died) stall back to waiting, or
--      fail past max_stalls (a poison job), or end cancelled if a cancel was asked;
--   2. pending jobs past their expiry end expired (they never run);
--   3. due delayed jobs (delays, retry backoffs, snoozes) are promoted to waiting;
--   4. groups whose rate window has room again let their next jobs go (turn);
--   5. unless the queue is paused or throttled (the gateway asked it to slow down), up to
--      count waiting jobs, but no more than its concurrency and rate limits leave room for
--      (K.limits), first by priority and then in the order they became waiting, move to
--      active, each under a lease and a new fencing token, and come back whole.
-- A job over a limit stays waiting: it spends no attempt, and the answer's wait_ms says
-- when the next slot frees, so the worker blocks that long rather than asking again.
-- K.job is the queue's job-key prefix ('{<prefix>:<queue>}:job:').
-- A fetch is idempotent by its fetch id: a client that lost the reply to a timeout and
-- sends the same fetch again gets the same jobs, not more (the worker's last fetch is
-- remembered, one key per worker and queue).
-- ARGV: now, count, worker, max_stalls, most_wait_ms, fetch_id, queue, keep_count, keep_age
--       (the last two: the retention of jobs ended here, cancelled or expired)
-- Returns {wait_ms, {job fields}, {job fields}, ...}: wait_ms is how long the caller
-- may block before something here falls due (a delayed job, a lease, an expiry).
local now, count, worker = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local max_stalls, wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local queue, keep_count, keep_age = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local last_key = K.leases .. ':last:' .. worker
local last = redis.call('GET', last_key)
if last then
  last = cjson.decode(last)
  if last[1] == ARGV[6] then
    local again = {0}
    for _, id in ipairs(last[2]) do
      local job = job_key(id)
      if redis.call('HGET', job, 'state') == 'active' and redis.call('HGET', job, 'worker') == worker then
        again[#again + 1] = redis.call('HGETALL', job)
      end
    end
    return again
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, 100)) do
  local job = job_key(id)
  if redis.call('HGET', job, 'state') == 'active' then
    local cancel = redis.call('HGET', job, 'cancelRequested')
    if cancel then
      end_unrun(job, id, 'active', 'cancel', now, cancel, queue, keep_count, keep_age)
    else
      local stalls = redis.call('HINCRBY', job, 'stalls', 1)
      redis.call('HINCRBY', K.metrics, queue .. ':stalled', 1)
      if stalls > max_stalls then
        move(job, id, 'active', 'stall_fail', now)
        redis.call('HSET', job, 'finishedAt', now,
          'failedReason', 'stalled: its worker was lost ' .. stalls .. ' times (poison job?)')
        redis.call('HINCRBY', K.metrics, queue .. ':failed', 1)
        count_minute(now, 'failed')
      else
        move(job, id, 'active', 'stall', waiting_score(job, now))
      end
    end
  else
    redis.call('ZREM', K.leases, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.expiring, '-inf', now, 'LIMIT', 0, 1000)) do
  local job = job_key(id)
  local state = redis.call('HGET', job, 'state')
  local reason = 'expired: not started by its expiry'
  if not (state and end_unrun(job, id, state, 'expire', now, reason, queue, keep_count, keep_age)) then
    redis.call('ZREM', K.expiring, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 1000)) do
  local job = job_key(id)
  make_ready(job, id, 'delayed', 'promote', waiting_score(job, now))
end
local snow = server_ms()
for _, group in ipairs(redis.call('ZRANGEBYSCORE', K.gdue, '-inf', snow, 'LIMIT', 0, 100)) do
  redis.call('ZREM', K.gdue, group)
  group_next(group, now)
end
-- The limits: how many of count this fetch may take, and if none, for how long.
local limit_wait = nil
local throttled = redis.call('PTTL', K.throttle)
if throttled > 0 then count, limit_wait = 0, throttled end
-- capped: a limit left less room than asked for (then no other idle worker is woken).
local capped, rmax, rms = false, nil, nil
if count > 0 and redis.call('HLEN', K.limits) > 0 then
  local l = redis.call('HMGET', K.limits, 'concurrency', 'rateMax', 'rateMs')
  local conc = tonumber(l[1])
  rmax, rms = tonumber(l[2]), tonumber(l[3])
  if conc and conc - redis.call('ZCARD', K.active) < count then
    -- A slot frees when a running job ends: that move wakes a worker.
    count, capped, limit_wait = math.max(conc - redis.call('ZCARD', K.active), 0), true, wait
  end
  if rmax and count > 0 then
    local free, rate_wait = rate_free(K.rate, rmax, rms, snow)
    if free < count then count, capped = free, true end
    if count <= 0 then count, limit_wait = 0, rate_wait end
  end
end
local out = {0}
local paused = redis.call('EXISTS', K.paused) == 1
local rated = rmax ~= nil or redis.call('HEXISTS', K.limits, 'rateMax') == 1
if not paused and count > 0 then
  local taken = redis.call('ZRANGE', K.waiting, 0, count - 1, 'WITHSCORES')
  if #taken > 0 then
    local ids = {}
    for i = 1, #taken, 2 do ids[#ids + 1] = taken[i] end
    redis.call('SET', last_key, cjson.encode({ARGV[6], ids}), 'EX', 3600)
  end
  for i = 1, #taken, 2 do
    local id = taken[i]
    local job = job_key(id)
    move(job, id, 'waiting', 'fetch', now)
    local lease = now + tonumber(redis.call('HGET', job, 'leaseMs') or 60000)
    redis.call('ZADD', K.leases, lease, id)
    if rated then redis.call('ZADD', K.rate, IN_FLIGHT, id) end
    redis.call('HINCRBY', job, 'attempts', 1)
    redis.call('HINCRBY', job, 'token', 1)
    redis.call('HSET', job, 'processedOn', now, 'worker', worker, 'leaseUntil', lease)
    -- Wait time: since it became waiting (the score's time part).
    time_minute(now, 'w', now - tonumber(taken[i + 1]) % PRIORITY_STEP)
    out[#out + 1] = redis.call('HGETALL', job)
  end
  -- More left: wake the next idle worker too, unless a limit is what leaves them.
  if not capped and redis.call('ZCARD', K.waiting) > 0 then wake() end
  -- Capped by the rate: block until the next slot frees (the oldest, now all are used).
  if capped and rmax then
    local _, rate_wait = rate_free(K.rate, rmax, rms, snow)
    if rate_wait > 0 then limit_wait = math.min(limit_wait or wait, rate_wait) end
  end
end
if paused then wait = math.min(wait, 1000) end
if limit_wait then wait = math.min(wait, limit_wait) end
for _, zset in ipairs({K.delayed, K.leases, K.expiring}) do
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if first[2] then wait = math.min(wait, tonumber(first[2]) - now) end
end
local due = redis.call('ZRANGE', K.gdue, 0, 0, 'WITHSCORES')
if due[2] then wait = math.min(wait, tonumber(due[2]) - snow) end
out[1] = math.max(wait, 0)
return out
