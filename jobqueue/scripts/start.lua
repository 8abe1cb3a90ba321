-- Moves a job to 'active' under a lease and a new token, and returns its fields.
-- The token fences the delivery: finish, retry and release are refused unless
-- they carry the job's current token.
-- Finished jobs come back unchanged; otherwise the answer is 'stale' (an older
-- message), 'paused' (the queue is paused), or 'leased' (another delivery of this
-- same message may still be running: the lease sweep takes it over if it died).
-- ARGV: now, worker, seq ('' = skip the check), lease_ms
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
if state == 'completed' or state == 'failed' then
  return redis.call('HGETALL', K.job)
end
if ARGV[3] ~= '' and ARGV[3] ~= redis.call('HGET', K.job, 'seq') then return 'stale' end
if redis.call('EXISTS', K.paused) == 1 and state ~= 'active' then return 'paused' end
local now = tonumber(ARGV[1])
if state == 'active' and tonumber(redis.call('HGET', K.job, 'leaseUntil') or 0) > now then
  return 'leased'
end
local id = redis.call('HGET', K.job, 'id')
redis.call('ZREM', K[state], id)
redis.call('ZREM', K.claims, id)
redis.call('ZADD', K.active, now, id)
local lease = now + tonumber(ARGV[4])
redis.call('ZADD', K.leases, lease, id)
redis.call('HINCRBY', K.job, 'attempts', 1)
redis.call('HINCRBY', K.job, 'token', 1)
redis.call('HSET', K.job, 'state', 'active', 'processedOn', now, 'worker', ARGV[2], 'leaseUntil', lease)
return redis.call('HGETALL', K.job)
