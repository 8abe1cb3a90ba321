-- Removes up to limit jobs of one state older than a cut-off (clean). ARGV: state, cutoff, limit
local ids = redis.call('ZRANGEBYSCORE', K[ARGV[1]], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  if move(job_key(id), id, ARGV[1], 'clean', 0) then out[#out + 1] = id end
end
return out
