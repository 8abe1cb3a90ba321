-- add_job(A): stores a new job, K.job (A: what add.lua's ARGV holds): new -> waiting (add),
-- new -> delayed (add_delayed), or new -> grouped (hold: its group has no free slot),
-- indexes it for search, and wakes a worker. With remember_ms, a marker that the id was
-- added outlives the job by that long (the outbox's relay reads it, so a job already run
-- and trimmed is not added again).
-- With a deduplication key, a job of the same key may already stand for this one: then
-- nothing is stored, and the answer names that job (its data replaced by this one's in
-- modes debounce, a still-delayed job, whose delay starts again; and keep_last_if_active,
-- a job that has not started). Modes: simple (the key is held until its job is final),
-- throttle (held ttl ms), debounce (held ttl ms; see above), keep_last_if_active (held until
-- final; while its job runs, one follow-up is kept, behind it in the key's own group).
-- A: event, score, queue, remember_ms (0 = no marker), expires_at (0 = never),
--       tags (JSON list of 'field:value', '' = none), created_at, group ('' = none),
--       dedup (JSON {id, mode, ttl}, '' = none), field/value pairs...
-- Returns {'created', id, state}, {'exists', ''} (a job with this id is stored already), or
-- {'deduplicated', id of the job that holds the key}.
local function add_job(A)
  if redis.call('EXISTS', K.job) == 1 then return {'exists', ''} end
  local fields, data = {}, nil
  for i = 10, #A, 2 do
    fields[#fields + 1] = A[i]
    fields[#fields + 1] = A[i + 1]
    if A[i] == 'data' then data = A[i + 1] end
  end
  local queue, created = A[3], tonumber(A[7])
  local dd, dkey = nil, nil
  if A[9] ~= '' then
    dd = cjson.decode(A[9])
    dkey = K.tag .. ':dd:' .. dd.id
    local holder = redis.call('GET', dkey)
    local hjob = holder and queue_job(holder)
    local hstate = hjob and redis.call('HGET', hjob, 'state')
    local kept = dd.mode == 'throttle' and holder ~= false and holder ~= nil
    if hstate then
      if dd.mode == 'simple' or dd.mode == 'throttle' then
        kept = true
      elseif dd.mode == 'debounce' then
        if hstate == 'delayed' then
          redis.call('HSET', hjob, 'data', data)
          move(hjob, holder, 'delayed', 'defer', A[2])
          if dd.ttl > 0 then redis.call('PEXPIRE', dkey, dd.ttl) end
          kept = true
        end
      elseif dd.mode == 'keep_last_if_active' then
        if hstate == 'waiting' or hstate == 'grouped' or hstate == 'delayed' then
          redis.call('HSET', hjob, 'data', data)
          emit(holder, 'updated', hstate)
          kept = true
        end
      end
    end
    if kept then
      redis.call('HINCRBY', K.metrics, queue .. ':deduplicated', 1)
      count_minute(created, 'deduplicated')
      emit(holder, 'deduplicated', hstate or 'removed')
      return {'deduplicated', holder}
    end
  end
  redis.call('HSET', K.job, unpack(fields))
  local id = redis.call('HGET', K.job, 'id')
  if A[8] ~= '' then
    redis.call('HSET', K.job, 'group', A[8], 'gseq', redis.call('INCR', K.tag .. ':gseq'))
  end
  if dd then
    redis.call('HSET', K.job, 'dedupKey', dkey, 'dedupMode', dd.mode)
    if dd.ttl > 0 then
      redis.call('SET', dkey, id, 'PX', dd.ttl)
    else
      redis.call('SET', dkey, id)
    end
  end
  local state
  if A[1] == 'add' then
    state = make_ready(K.job, id, 'new', 'add', A[2])
  else
    state = move(K.job, id, 'new', A[1], A[2])
  end
  redis.call('HINCRBY', K.metrics, queue .. ':added', 1)
  if tonumber(A[4]) > 0 then redis.call('SET', K.job .. ':added', 1, 'PX', A[4]) end
  if tonumber(A[5]) > 0 then redis.call('ZADD', K.expiring, A[5], id) end
  if INDEXES then
    redis.call('ZADD', K.created, created, id)
    if A[6] ~= '' then
      for _, tag in ipairs(cjson.decode(A[6])) do redis.call('ZADD', K.tag .. ':idx:' .. tag, created, id) end
    end
  end
  count_minute(created, 'added')
  wake()
  return {'created', id, state}
end
