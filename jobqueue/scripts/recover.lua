-- Jobs whose lease ran out while active: their worker died (SIGKILL, OOM, a
-- lost host). Each goes back to waiting with a new delivery number, until it
-- has stalled more than max_stalls times; then it fails (a poison message).
--
-- Waiting jobs whose message was lost: taken from the broker by a worker that
-- died before starting them. The caller passes lost_before, the time before
-- which a waiting job cannot still have its message in the broker (older than
-- the oldest message there, and older than the stale bound); such a job gets a
-- new delivery number unless a live worker claims it in its prefetch buffer.
-- K.job is the job-key prefix ('<prefix>:job:').
-- ARGV: now, limit, max_stalls, lost_before (-1 = skip). Returns id, seq, ... to publish.
local now, limit, max_stalls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, limit)) do
  local job = job_key(id)
  redis.call('ZREM', K.leases, id)
  if redis.call('HGET', job, 'state') == 'active' and tonumber(redis.call('HGET', job, 'leaseUntil') or 0) <= now then
    redis.call('ZREM', K.active, id)
    local stalls = redis.call('HINCRBY', job, 'stalls', 1)
    local queue = redis.call('HGET', job, 'queue')
    redis.call('HINCRBY', K.metrics, queue .. ':stalled', 1)
    if stalls > max_stalls then
      redis.call('ZADD', K.failed, now, id)
      redis.call('HSET', job, 'state', 'failed', 'finishedAt', now,
        'failedReason', 'stalled: its worker was lost ' .. stalls .. ' times (poison job?)')
      redis.call('HINCRBY', K.metrics, queue .. ':failed', 1)
      redis.call('HINCRBY', job, 'seq', 1)
    else
      redis.call('ZADD', K.waiting, now, id)
      redis.call('HSET', job, 'state', 'waiting')
      out[#out + 1] = id
      out[#out + 1] = redis.call('HINCRBY', job, 'seq', 1)
    end
  end
end
local lost_before = tonumber(ARGV[4])
if lost_before >= 0 and redis.call('EXISTS', K.paused) == 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.waiting, '-inf', '(' .. lost_before, 'LIMIT', 0, limit)) do
    local claim = tonumber(redis.call('ZSCORE', K.claims, id) or 0)
    if claim <= now then
      redis.call('ZADD', K.waiting, now, id)
      redis.call('HINCRBY', K.metrics, redis.call('HGET', job_key(id), 'queue') .. ':lost_message', 1)
      out[#out + 1] = id
      out[#out + 1] = redis.call('HINCRBY', job_key(id), 'seq', 1)
    end
  end
end
return out
