-- Applies one entry of a queue's flow outbox (flow_notify) in the slot of the job it is
-- for, K.job (the flow relay, jobqueue.flows.FlowRelay, calls it, then removes the entry):
--   child: one of the parent's children ended. Its state and result or reason are
--          recorded once (HSETNX '<job>:results'); a parent still waiting-children then
--          fails (child_failed) when the child failed, was cancelled or expired under
--          policy fail_parent; or goes on (children_done, to waiting or behind its
--          group) when all its children are final, or at once when one under
--          continue_parent failed. Policy ignore: a failed child counts as final.
--   comp:  a step with a compensation completed: the flow's root records it once, with
--          when it completed ('<job>:comp'), for the compensations to run in reverse.
-- ARGV: entry (JSON), now, keep_count, keep_age (the failed set's retention)
-- Returns 'recorded', 'repeat' (applied before: a relay that crashed before removing
-- the entry), or 'gone' (the job was removed).
local e = cjson.decode(ARGV[1])
local now, keep_count, keep_age = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', K.job) == 0 then return 'gone' end
if e.k == 'comp' then
  local entry = cjson.encode({spec = e.spec, at = e.at})
  if redis.call('HSETNX', K.job .. ':comp', e.node, entry) == 0 then return 'repeat' end
  return 'recorded'
end
local value = cjson.encode({state = e.state, result = e.result, reason = e.reason, policy = e.policy})
if redis.call('HSETNX', K.job .. ':results', e.node, value) == 0 then return 'repeat' end
local pending = redis.call('HINCRBY', K.job, 'pending', -1)
local state = redis.call('HGET', K.job, 'state')
if state ~= 'waiting-children' then return 'recorded' end
local id, queue = redis.call('HGET', K.job, 'id'), redis.call('HGET', K.job, 'queue')
local failed = e.state ~= 'completed'
if failed and e.policy == 'fail_parent' then
  local why = e.reason
  if type(why) ~= 'string' then why = e.state end
  end_unrun(K.job, id, state, 'child_failed', now, 'child ' .. e.node .. ' ' .. e.state .. ': ' .. why,
    queue, keep_count, keep_age)
elseif (failed and e.policy == 'continue_parent') or pending <= 0 then
  make_ready(K.job, id, state, 'children_done', waiting_score(K.job, now))
  wake()
end
return 'recorded'
