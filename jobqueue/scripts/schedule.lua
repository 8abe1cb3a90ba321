-- One tick of a schedule (jobqueue/schedules.py), compare-and-set: the caller read the
-- schedule's hash ('<tag>:sched:<id>'), found its tick due and computed what follows; this
-- changes anything only if the hash still holds what it read (the same 'next' and 'rev':
-- no other scheduler fired the tick, no operator edited or paused the schedule meanwhile).
-- Then it creates the tick's job with add_job (K.job: the job's id is derived from the
-- schedule id and the tick, so a tick retried after a lost reply finds it stored), advances
-- 'next', and records the tick in the schedule's history. Otherwise it changes nothing.
-- ARGV: schedule id, expected next, expected rev, new next, tick fired ('' = none), now,
--       missed ticks not fired (JSON list, oldest first), a tick whose job was not valid
--       ('' = none), that job's error, history length, last job ids kept, then add_job's
--       arguments (when a tick is fired).
-- Returns {'fired', job id, add_job's answer ('created', 'exists', 'deduplicated')},
-- {'advanced'} (nothing fired, next moved on), or {'stale'} (nothing changed).
local id = ARGV[1]
local skey = K.tag .. ':sched:' .. id
local cur = redis.call('HMGET', skey, 'next', 'rev', 'paused')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] == '1' then return {'stale'} end

local fired, now, history = ARGV[5], tonumber(ARGV[6]), skey .. ':history'
local keep, keep_ids = tonumber(ARGV[10]), tonumber(ARGV[11])
for _, tick in ipairs(cjson.decode(ARGV[7])) do
  redis.call('LPUSH', history, cjson.encode({tick = tick, outcome = 'skipped', at = now}))
end
if ARGV[8] ~= '' then
  redis.call('LPUSH', history, cjson.encode({tick = tonumber(ARGV[8]), outcome = 'invalid', error = ARGV[9], at = now}))
end
local answer = {'advanced'}
if fired ~= '' then
  local A = {}
  for i = 12, #ARGV do A[#A + 1] = ARGV[i] end
  local added = add_job(A)
  local job_id = redis.call('HGET', K.job, 'id') or ''
  if added[1] == 'deduplicated' then job_id = added[2] end
  redis.call('LPUSH', history, cjson.encode({tick = tonumber(fired), jobId = job_id, outcome = 'fired', at = now}))
  local ids = cjson.decode(redis.call('HGET', skey, 'lastJobIds') or '[]')
  table.insert(ids, 1, job_id)
  while #ids > keep_ids do table.remove(ids) end
  redis.call('HSET', skey, 'lastTick', fired, 'lastRunAt', now, 'lastJobIds', cjson.encode(ids))
  redis.call('HINCRBY', skey, 'fired', 1)
  answer = {'fired', job_id, added[1]}
end
redis.call('LTRIM', history, 0, keep - 1)
redis.call('HSET', skey, 'next', ARGV[4], 'lastError', ARGV[9])
redis.call('ZADD', K.tag .. ':schedules', ARGV[4], id)
return answer
