-- The one place a worker takes jobs, BullMQ's moveToActive for a batch:
--   1. active jobs whose lease ran out (their worker died) stall back to waiting, or
--      fail past max_stalls (a poison job);
--   2. due delayed jobs (delays, retry backoffs) are promoted to waiting;
--   3. unless the queue is paused, up to count waiting jobs, first by priority and then
--      in the order they became waiting, move to active, each under a lease and a new
--      fencing token, and come back whole.
-- K.job is the queue's job-key prefix ('{<prefix>:<queue>}:job:').
-- A fetch is idempotent by its fetch id: a client that lost the reply to a timeout and
-- sends the same fetch again gets the same jobs, not more (the worker's last fetch is
-- remembered, one key per worker and queue).
-- ARGV: now, count, worker, max_stalls, most_wait_ms, fetch_id
-- Returns {wait_ms, {job fields}, {job fields}, ...}: wait_ms is how long the caller
-- may block before something here falls due (a delayed job, a lease).
local now, count, worker = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local max_stalls, wait = tonumber(ARGV[4]), tonumber(ARGV[5])
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
    local queue = redis.call('HGET', job, 'queue')
    local stalls = redis.call('HINCRBY', job, 'stalls', 1)
    redis.call('HINCRBY', K.metrics, queue .. ':stalled', 1)
    if stalls > max_stalls then
      move(job, id, 'active', 'stall_fail', now)
      redis.call('HSET', job, 'finishedAt', now,
        'failedReason', 'stalled: its worker was lost ' .. stalls .. ' times (poison job?)')
      redis.call('HINCRBY', K.metrics, queue .. ':failed', 1)
    else
      move(job, id, 'active', 'stall', waiting_score(job, now))
    end
  else
    redis.call('ZREM', K.leases, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 1000)) do
  local job = job_key(id)
  move(job, id, 'delayed', 'promote', waiting_score(job, now))
end
local out = {0}
local paused = redis.call('EXISTS', K.paused) == 1
if not paused and count > 0 then
  local taken = redis.call('ZRANGE', K.waiting, 0, count - 1)
  if #taken > 0 then redis.call('SET', last_key, cjson.encode({ARGV[6], taken}), 'EX', 3600) end
  for _, id in ipairs(taken) do
    local job = job_key(id)
    move(job, id, 'waiting', 'fetch', now)
    local lease = now + tonumber(redis.call('HGET', job, 'leaseMs') or 60000)
    redis.call('ZADD', K.leases, lease, id)
    redis.call('HINCRBY', job, 'attempts', 1)
    redis.call('HINCRBY', job, 'token', 1)
    redis.call('HSET', job, 'processedOn', now, 'worker', worker, 'leaseUntil', lease)
    out[#out + 1] = redis.call('HGETALL', job)
  end
  -- More left: wake the next idle worker too.
  if redis.call('ZCARD', K.waiting) > 0 then wake() end
end
if paused then wait = math.min(wait, 1000) end
local due = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if due[2] then wait = math.min(wait, tonumber(due[2]) - now) end
local lease = redis.call('ZRANGE', K.leases, 0, 0, 'WITHSCORES')
if lease[2] then wait = math.min(wait, tonumber(lease[2]) - now) end
out[1] = math.max(wait, 0)
return out
