-- Cancels a job (cancel). A waiting or delayed job is cancelled at once and never runs.
-- An active job is marked: its task's next check point (job.raise_if_cancelled) or its
-- worker's cancel watch stops it, and its delivery ends it cancelled (finish, event
-- cancel); if its worker died meanwhile, the fetch that finds its lease run out does.
-- ARGV: now, reason, queue, keep_count, keep_age (the cancelled set's retention)
-- Returns 'cancelled', 'cancelling' (active: asked), the finished state it is in, or nil.
local state = redis.call('HGET', K.job, 'state')
if not state then return nil end
local id = redis.call('HGET', K.job, 'id')
local now = tonumber(ARGV[1])
if state == 'active' then
  if not redis.call('HGET', K.job, 'cancelRequested') then
    redis.call('HSET', K.job, 'cancelRequested', ARGV[2], 'cancelRequestedAt', now)
    emit(id, 'cancelling', 'active')
  end
  return 'cancelling'
end
if not end_unrun(K.job, id, state, 'cancel', now, ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])) then
  return state
end
return 'cancelled'
