-- Shared by every script. K (named keys) and ALLOWED (the transition table of
-- jobqueue/lifecycle.py: ALLOWED[state][event] = next state) come from the loader's preamble.

-- A job hash in the same queue as K.job (scripts that move many jobs get K.job as the prefix).
local function job_key(id)
  return K.job .. id
end

-- Priority first, then the order jobs became waiting: the waiting set's score (PRIORITY_STEP: preamble).
local function waiting_score(job, now)
  return string.format('%.0f', tonumber(redis.call('HGET', job, 'priority') or 0) * PRIORITY_STEP + now)
end

-- Wake one idle worker of the queue (it blocks on K.wake); one marker is enough.
local function wake()
  if redis.call('LLEN', K.wake) == 0 then redis.call('LPUSH', K.wake, 1) end
end

-- The one way a job changes state: the move must be a row of the table. Returns the
-- new state, or nil (and changes nothing) when the table has no such move.
local function move(job, id, from, event, score)
  local row = ALLOWED[from]
  local to = row and row[event]
  if not to then return nil end
  if from ~= 'new' then redis.call('ZREM', K[from], id) end
  if to == 'removed' then
    redis.call('DEL', job, job .. ':attempts')
    return to
  end
  redis.call('ZADD', K[to], score, id)
  redis.call('HSET', job, 'state', to)
  if from == 'active' then redis.call('ZREM', K.leases, id) end
  return to
end
