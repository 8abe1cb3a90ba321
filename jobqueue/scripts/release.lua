-- Hands an active job back to waiting for another worker, with a new delivery
-- number, when its own delivery is stuck past its hard limit. Fenced by token.
-- ARGV: now, token, queue. Returns the new delivery number, or 'stale'.
if redis.call('HGET', K.job, 'state') ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[2] then
  return 'stale'
end
local id = redis.call('HGET', K.job, 'id')
redis.call('ZREM', K.active, id)
redis.call('ZREM', K.leases, id)
redis.call('ZADD', K.waiting, ARGV[1], id)
redis.call('HSET', K.job, 'state', 'waiting')
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':released', 1)
return redis.call('HINCRBY', K.job, 'seq', 1)
