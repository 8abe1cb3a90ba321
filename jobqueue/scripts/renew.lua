-- Extends the lease of an active job, fenced by the delivery's token (no state change):
-- a job that waited in a busy pool before it started gets its whole lease from its start.
-- ARGV: now, token, lease_ms. Returns the new lease end, or 'stale'.
if redis.call('HGET', K.job, 'state') ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[2] then
  return 'stale'
end
local lease = tonumber(ARGV[1]) + tonumber(ARGV[3])
redis.call('ZADD', K.leases, lease, redis.call('HGET', K.job, 'id'))
redis.call('HSET', K.job, 'leaseUntil', lease)
return lease
