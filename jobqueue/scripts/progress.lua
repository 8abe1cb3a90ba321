-- A running job's progress (job.update_progress) or a log line (job.log), fenced by the
-- delivery's token (no state change). Log lines are kept per attempt, at most LOG_LINES;
-- later ones are counted, not kept.
-- ARGV: kind ('progress' | 'log'), token, value (progress JSON | log entry JSON), attempt
-- Returns 1, 0 (a log line over the bound), or 'stale'.
if redis.call('HGET', K.job, 'state') ~= 'active' or redis.call('HGET', K.job, 'token') ~= ARGV[2] then
  return 'stale'
end
local id = redis.call('HGET', K.job, 'id')
if ARGV[1] == 'progress' then
  redis.call('HSET', K.job, 'progress', ARGV[3])
  emit(id, 'progress', 'active', 'progress', ARGV[3])
  return 1
end
if redis.call('HINCRBY', K.job, 'logs:' .. ARGV[4], 1) > LOG_LINES then
  redis.call('HINCRBY', K.job, 'logsDropped', 1)
  return 0
end
redis.call('RPUSH', K.logs, ARGV[3])
emit(id, 'log', 'active', 'log', ARGV[3])
return 1
