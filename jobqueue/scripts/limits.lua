-- Replaces a queue's limits (kind 'queue': K.limits) or one group's own (kind 'group':
-- K.glimits[group]), then lets held-back groups' next jobs go if the new limits leave
-- them room (a group concurrency raised, a group rate removed), and wakes a worker: the
-- next fetch applies the new queue limits.
-- ARGV: kind, fields (JSON object; {} = none), group (kind 'group')
local fields = cjson.decode(ARGV[2])
local groups
if ARGV[1] == 'queue' then
  redis.call('DEL', K.limits)
  for name, value in pairs(fields) do redis.call('HSET', K.limits, name, value) end
  groups = redis.call('ZREVRANGE', K.groups, 0, 999)
else
  if next(fields) == nil then
    redis.call('HDEL', K.glimits, ARGV[3])
  else
    redis.call('HSET', K.glimits, ARGV[3], ARGV[2])
  end
  groups = {ARGV[3]}
end
local now = server_ms()
for _, group in ipairs(groups) do
  redis.call('ZREM', K.gdue, group)
  group_next(group, now)
end
wake()
return 1
