-- Hands an active job back to waiting for another worker (release), when its delivery
-- is stuck past its hard limit or its worker gives it back at shutdown. Fenced by token.
-- ARGV: now, token, queue, reason. Returns 'waiting', or 'stale'.
if redis.call('HGET', K.job, 'state') ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[2] then
  return 'stale'
end
move(K.job, redis.call('HGET', K.job, 'id'), 'active', 'release', waiting_score(K.job, tonumber(ARGV[1])))
redis.call('HINCRBY', K.metrics, ARGV[3] .. ':' .. ARGV[4], 1)
wake()
return 'waiting'
