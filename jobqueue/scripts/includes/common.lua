-- Shared by every script. K (named keys), ALLOWED (the transition table of
-- jobqueue/lifecycle.py: ALLOWED[state][event] = next state) and the features
-- (EVENTS_MAXLEN, BUCKETS, INDEXES, LOG_LINES, MINUTE_BOUNDS, MINUTE_TTL) come from
-- the loader's preamble.

-- A job hash in the same queue as K.job (scripts that move many jobs get K.job as the prefix).
local function job_key(id)
  return K.job .. id
end

-- Any job hash of this queue, from the queue's tag (right in every script).
local function queue_job(id)
  return K.tag .. ':job:' .. id
end

-- Priority first, then the order jobs became waiting: the waiting set's score (PRIORITY_STEP: preamble).
local function waiting_score(job, now)
  return string.format('%.0f', tonumber(redis.call('HGET', job, 'priority') or 0) * PRIORITY_STEP + now)
end

-- Wake one idle worker of the queue (it blocks on K.wake); one marker is enough.
local function wake()
  if redis.call('LLEN', K.wake) == 0 then redis.call('LPUSH', K.wake, 1) end
end

-- One entry on the queue's event stream (what /events and wait_until_finished read).
local function emit(id, event, state, ...)
  if EVENTS_MAXLEN > 0 then
    redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'id', id, 'event', event, 'state', state, ...)
  end
end

-- Per-minute metric buckets, kept 72 hours: counters and wait/processing-time histograms.
local function minute_key(now)
  return K.tag .. ':m:' .. math.floor(now / 60000)
end

local function count_minute(now, field, by)
  if not BUCKETS then return end
  local key = minute_key(now)
  if redis.call('HINCRBY', key, field, by or 1) == (by or 1) then redis.call('EXPIRE', key, MINUTE_TTL) end
end

-- The histogram field a time (ms) falls in: '<prefix><upper bound>', or '<prefix>inf'.
local function time_bucket(prefix, ms)
  for _, bound in ipairs(MINUTE_BOUNDS) do
    if ms <= bound then return prefix .. bound end
  end
  return prefix .. 'inf'
end

local function time_minute(now, prefix, ms)
  if not BUCKETS then return end
  local key = minute_key(now)
  redis.call('HINCRBY', key, time_bucket(prefix, ms), 1)
  redis.call('HINCRBYFLOAT', key, prefix .. 'sum', ms)
end

-- Drop a job from the search indexes (its tags, the creation order).
local function unindex(job, id)
  if not INDEXES then return end
  local tags = redis.call('HGET', job, 'tags')
  if tags and tags ~= '' then
    for _, tag in ipairs(cjson.decode(tags)) do redis.call('ZREM', K.tag .. ':idx:' .. tag, id) end
  end
  redis.call('ZREM', K.created, id)
end

-- Redis's own clock (ms): every worker and host reads the rate windows on one clock.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A rate window's free slots: max less the slots used within ms before now, and when none
-- is free, the ms until the oldest frees (at most ms). A slot's score is when it was last
-- used: a job holds its slot from when it is taken until it ends (scored IN_FLIGHT until
-- then), so no window at the gateway sees more than max jobs' calls however long they run.
local IN_FLIGHT = 1e15
local function rate_free(key, max, ms, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ms)
  local used = redis.call('ZCARD', key)
  if used < max then return max - used, 0 end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return 0, math.min(math.max(tonumber(first[2]) + ms - now, 1), ms)
end

local function group_key(group)
  return K.tag .. ':g:' .. group
end

-- A group's limits: its own (K.glimits) over the queue's group defaults (K.limits).
-- Returns concurrency (1 by default), rate max and rate ms (nil: no group rate).
local function group_limits(group)
  local q = redis.call('HMGET', K.limits, 'groupConcurrency', 'groupRateMax', 'groupRateMs')
  local conc, rmax, rms = tonumber(q[1]) or 1, tonumber(q[2]), tonumber(q[3])
  local own = redis.call('HGET', K.glimits, group)
  if own then
    own = cjson.decode(own)
    if type(own.concurrency) == 'number' then conc = own.concurrency end
    if type(own.rateMax) == 'number' then rmax, rms = own.rateMax, own.rateMs end
  end
  return conc, rmax, rms
end

-- Whether a group may let one more job go now; when only its rate stops it, the ms until
-- it may. The third answer: whether the group has a rate (its slots are then counted).
-- (Rate windows and K.gdue are on the server's clock.)
local function group_room(gkey, group)
  local conc, rmax, rms = group_limits(group)
  if redis.call('SCARD', gkey .. ':run') >= conc then return false, nil, rmax end
  if rmax then
    local free, wait = rate_free(gkey .. ':rate', rmax, rms, server_ms())
    if free < 1 then return false, wait, rmax end
  end
  return true, nil, rmax
end

-- A job takes one of its group's slots: it holds it until it is final.
local function group_take(gkey, id, rated)
  redis.call('SADD', gkey .. ':run', id)
  if rated then redis.call('ZADD', gkey .. ':rate', IN_FLIGHT, id) end
end

local move

-- Let a group's next jobs go (grouped -> waiting, event turn) while it has room.
local function group_next(group, now)
  local gkey = group_key(group)
  local released = 0
  while true do
    local head = redis.call('ZRANGE', gkey, 0, 0)[1]
    if not head then break end
    local room, wait, rated = group_room(gkey, group)
    if not room then
      if wait then redis.call('ZADD', K.gdue, server_ms() + wait, group) end
      break
    end
    local job = queue_job(head)
    group_take(gkey, head, rated)
    move(job, head, 'grouped', 'turn', waiting_score(job, now))
    released = released + 1
  end
  if released > 0 then wake() end
  return released
end

-- Where a job that may run now goes (event add, promote or admin_retry): waiting, unless
-- its group (option group) has no free slot or older jobs of it wait: then grouped (hold),
-- in the order its jobs were added. Returns the new state, or nil (no such move).
local function make_ready(job, id, from, event, score)
  local row = ALLOWED[from]
  if not (row and row[event]) then return nil end  -- before a group slot is taken for it
  local group = redis.call('HGET', job, 'group')
  if group and redis.call('SISMEMBER', group_key(group) .. ':run', id) == 0 then
    local gkey = group_key(group)
    local room, wait, rated = false, nil, nil
    if redis.call('ZCARD', gkey) == 0 then room, wait, rated = group_room(gkey, group) end
    if not room then
      local to = move(job, id, from, 'hold', redis.call('HGET', job, 'gseq'))
      if to then
        redis.call('ZADD', gkey, redis.call('ZSCORE', K.grouped, id), id)
        redis.call('ZINCRBY', K.groups, 1, group)
        if wait then redis.call('ZADD', K.gdue, 'LT', server_ms() + wait, group) end
      end
      return to
    end
    group_take(gkey, id, rated)
  end
  return move(job, id, from, event, score)
end

local FINAL = {completed = true, failed = true, cancelled = true, expired = true, removed = true}

-- Flows (jobqueue.flows): a job that ends tells whoever waits on it, through its own queue's
-- outbox list '<tag>:flow:out' (a parent may sit in another queue, another slot): each
-- parent (kind child: its state, and its result or reason), the flow's root when a step
-- with a compensation completed (kind comp), and the root's own failure (kind rootfail).
-- The flow relay (jobqueue.flows.FlowRelay) applies each entry in the parent's or the
-- root's slot (flow.lua), idempotently, and then removes it.
local function flow_notify(job, id, to, flow)
  local out = K.tag .. ':flow:out'
  local node = redis.call('HGET', job, 'queue') .. '|' .. id
  if flow.compensate and to == 'completed' and flow.root then
    redis.call('RPUSH', out, cjson.encode({
      k = 'comp', root = flow.root, node = node, spec = flow.compensate, at = server_ms()}))
  end
  if flow.parents then
    local f = redis.call('HMGET', job, 'result', 'failedReason', 'cancelReason', 'failurePolicy')
    for _, parent in ipairs(cjson.decode(flow.parents)) do
      redis.call('RPUSH', out, cjson.encode({
        k = 'child', parent = parent, node = node, state = to, result = f[1],
        reason = f[2] or f[3], policy = f[4] or 'fail_parent'}))
    end
  end
  if flow.root == node and to == 'failed' then
    redis.call('RPUSH', out, cjson.encode({k = 'rootfail', root = node}))
  end
end
local PENDING_STATE = {waiting = true, grouped = true, delayed = true}

-- The one way a job changes state: the move must be a row of the table. Returns the
-- new state, or nil (and changes nothing) when the table has no such move.
-- On the way it keeps what flow control holds for the job: a grouped job leaves its
-- group's line; a job that ends (or is removed) gives back its group slot (the group's
-- next job goes) and its deduplication key (modes simple and keep_last_if_active); a job leaving
-- active marks its rate slot used now and, on a queue at its concurrency, wakes a worker.
move = function(job, id, from, event, score)
  local row = ALLOWED[from]
  local to = row and row[event]
  if not to then return nil end
  if from ~= 'new' then redis.call('ZREM', K[from], id) end
  if PENDING_STATE[from] and not PENDING_STATE[to] then redis.call('ZREM', K.expiring, id) end
  local group, dedup, mode, flow
  if from == 'grouped' or (FINAL[to] and not FINAL[from]) then
    local f = redis.call('HMGET', job, 'group', 'dedupKey', 'dedupMode', 'parents', 'flowRoot', 'compensate')
    group, dedup, mode = f[1], f[2], f[3]
    if f[4] or f[5] then flow = {parents = f[4], root = f[5], compensate = f[6]} end
    if group and from == 'grouped' then
      redis.call('ZREM', group_key(group), id)
      if tonumber(redis.call('ZINCRBY', K.groups, -1, group)) <= 0 then redis.call('ZREM', K.groups, group) end
    end
  end
  if from == 'active' then
    redis.call('ZREM', K.leases, id)
    redis.call('ZADD', K.rate, 'XX', server_ms(), id)
    -- A queue at its concurrency limit has a slot again: wake a worker for its waiting jobs.
    local conc = tonumber(redis.call('HGET', K.limits, 'concurrency'))
    if conc and redis.call('ZCARD', K.active) < conc and redis.call('ZCARD', K.waiting) > 0 then wake() end
  end
  if flow and FINAL[to] and not FINAL[from] then flow_notify(job, id, to, flow) end
  if to == 'removed' then
    unindex(job, id)
    redis.call('DEL', job, job .. ':attempts', job .. ':logs', job .. ':children', job .. ':results', job .. ':comp')
    if event ~= 'trim' then emit(id, event, to) end
  else
    redis.call('ZADD', K[to], score, id)
    redis.call('HSET', job, 'state', to)
    emit(id, event, to)
  end
  if FINAL[to] and not FINAL[from] then
    if group and redis.call('SREM', group_key(group) .. ':run', id) == 1 then
      redis.call('ZADD', group_key(group) .. ':rate', 'XX', server_ms(), id)
      group_next(group, server_ms())
    end
    if dedup and mode ~= 'throttle' and mode ~= 'debounce' and redis.call('GET', dedup) == id then
      redis.call('DEL', dedup)
    end
  end
  return to
end

-- Keep a finished state's set to a retention (trim): the keep_count newest (-1: all; 0:
-- not even the job id that just got there), none older than keep_age ms (-1: any age).
local function retain(state, id, now, keep_count, keep_age)
  if keep_count == 0 then
    move(queue_job(id), id, state, 'trim', 0)
    return
  end
  local jobs = K.tag .. ':job:'
  if keep_age >= 0 then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', K[state], '-inf', '(' .. (now - keep_age), 'LIMIT', 0, 1000)) do
      move(jobs .. old, old, state, 'trim', 0)
    end
  end
  if keep_count > 0 then
    for _, old in ipairs(redis.call('ZRANGE', K[state], 0, -(keep_count + 1))) do
      move(jobs .. old, old, state, 'trim', 0)
    end
  end
end

-- End a pending or stalled job without running it (cancel, expire): reason, metrics, retention.
local function end_unrun(job, id, from, event, now, reason, queue, keep_count, keep_age)
  local row = ALLOWED[from]
  local to = row and row[event]
  if not to then return nil end
  local field = 'failedReason'
  if to == 'cancelled' then field = 'cancelReason' end
  redis.call('HSET', job, 'finishedAt', now, field, reason)  -- first: the move tells a flow's parent
  move(job, id, from, event, now)
  redis.call('HINCRBY', K.metrics, queue .. ':' .. to, 1)
  count_minute(now, to)
  retain(to, id, now, keep_count, keep_age)
  return to
end
