-- Removes up to limit jobs of one state older than a cut-off. ARGV: prefix, state, cutoff, limit
local zset = K[ARGV[2]]
local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do remove_job(ARGV[1], zset, id) end
return ids
