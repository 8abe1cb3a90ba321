-- Removes up to limit jobs of one state that reached it before a cut-off (clean).
-- A waiting job's score carries its priority (priority * PRIORITY_STEP + time): each
-- priority band is cut at the same time. ARGV: state, cutoff, limit
local zset, cutoff, limit = K[ARGV[1]], tonumber(ARGV[2]), tonumber(ARGV[3])
local bands = 0
if ARGV[1] == 'waiting' then
  local top = redis.call('ZRANGE', zset, -1, -1, 'WITHSCORES')
  if top[2] then bands = math.floor(tonumber(top[2]) / PRIORITY_STEP) end
end
local out = {}
for band = 0, bands do
  local base = band * PRIORITY_STEP
  local ids = redis.call('ZRANGEBYSCORE', zset, string.format('%.0f', base),
    string.format('%.0f', base + cutoff), 'LIMIT', 0, limit - #out)
  for _, id in ipairs(ids) do
    if move(job_key(id), id, ARGV[1], 'clean', 0) then out[#out + 1] = id end
  end
  if #out >= limit then break end
end
return out
