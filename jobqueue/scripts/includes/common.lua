-- Shared by every script: K (named keys) and STATES come from the loader's preamble.

local function remove_job(prefix, zset, id)
  redis.call('ZREM', zset, id)
  redis.call('DEL', prefix .. ':job:' .. id, prefix .. ':job:' .. id .. ':attempts')
end

-- A job hash in the same queue as K.job (scripts that sweep many jobs get K.job as the prefix).
local function job_key(id)
  return K.job .. id
end
