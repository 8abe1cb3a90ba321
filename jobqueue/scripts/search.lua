-- Finds a queue's jobs by their search indexes, newest first (read only, no state change).
-- The leading set is the smallest tag index asked for ('<tag>:idx:<field>:<value>', by
-- creation time), else the state's set (by the time the job entered it), else the
-- creation order of every job; the other filters are checked per candidate. At most
-- budget candidates are looked at, so a sparse filter answers in bounded time with a
-- cursor to go on from.
-- ARGV: tags (JSON list), state ('' any), name ('' any), since, until (creation ms or
--       -inf/+inf), cursor score, cursor id ('' = from the newest), limit, budget
-- Returns {next cursor ('score:id', '' at the end), id, score, id, score, ...}.
local tags = cjson.decode(ARGV[1])
local state, name, since, until_ = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local cur_score, cur_id = ARGV[6], ARGV[7]
local limit, budget = tonumber(ARGV[8]), tonumber(ARGV[9])
local lead, others, by_state = K.created, {}, false
if #tags > 0 then
  local size
  for _, tag in ipairs(tags) do
    local key = K.tag .. ':idx:' .. tag
    local n = redis.call('ZCARD', key)
    if n == 0 then return {''} end
    if size == nil or n < size then
      if size ~= nil then others[#others + 1] = lead end
      lead, size = key, n
    else
      others[#others + 1] = key
    end
  end
elseif state ~= '' then
  if not K[state] then return redis.error_reply('search: no state ' .. state) end
  lead, by_state = K[state], true
end
local top, bottom = until_, since
if by_state then top, bottom = '+inf', '-inf' end
if cur_score ~= '' then top = cur_score end
local out, looked, offset = {''}, 0, 0
local low, high = tonumber(since) or -math.huge, tonumber(until_) or math.huge
if since == '-inf' then low = -math.huge end
if until_ == '+inf' then high = math.huge end
while true do
  local batch = redis.call('ZREVRANGEBYSCORE', lead, top, bottom, 'WITHSCORES', 'LIMIT', offset, 200)
  if #batch == 0 then return out end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    local seen = cur_score ~= '' and tonumber(score) == tonumber(cur_score) and id >= cur_id
    if not seen then
      looked = looked + 1
      local job = job_key(id)
      local fields = redis.call('HMGET', job, 'state', 'name', 'createdAt')
      local ok = fields[1] ~= false
      if ok and state ~= '' and not by_state then ok = fields[1] == state end
      if ok and name ~= '' then ok = fields[2] == name end
      if ok and by_state then
        local created = tonumber(fields[3])
        ok = created >= low and created <= high
      end
      if ok then
        for _, key in ipairs(others) do
          if not redis.call('ZSCORE', key, id) then ok = false break end
        end
      end
      if ok then
        out[#out + 1] = id
        out[#out + 1] = score
        if (#out - 1) / 2 >= limit then out[1] = score .. ':' .. id return out end
      end
      if looked >= budget then out[1] = score .. ':' .. id return out end
    end
  end
end
