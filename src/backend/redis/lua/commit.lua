-- Applies one durable operation atomically, if the item and cell still hold what the caller
-- read (compare-and-set on the stored JSON text): checks the size bounds, writes the new state,
-- takes the next seq, appends the event to the log and publishes it. The caller computed the
-- new state and the event with the board rules; this script only checks, writes, counts and
-- publishes.
--
-- Sizes are bytes of stored text, as the board rules count them: an item is its own text plus,
-- for each cell, the column id and the cell's text. The texts are compared before anything is
-- written, so the size change computed from them is exact.
--
-- An operation sent with an id is recorded with its answer (`ops`: record name -> digest,
-- newline, answer JSON; `opsorder`: record name -> when), so that a retry of the same
-- operation gets the first answer instead of applying twice.
--
-- KEYS: 1 items hash, 2 the item's values hash, 3 seq, 4 log stream, 5 board channel,
--       6 sizes hash (item id -> bytes), 7 board bytes, 8 log bytes, 9 ops, 10 opsorder,
--       11 epoch, 12 webhook outbox, 13 its counter, 14 boards due for webhook delivery
-- ARGV: 1 op (create|update|delete|value|custom), 2 item id, 3 item as read ("" = absent),
--       4 new item ("" = delete), 5 column, 6 cell as read ("" = absent), 7 new cell,
--       8 frame prefix (the frame up to its seq), 9 ack JSON or "null", 10 log length,
--       11 item bound, 12 bytes per item, 13 bytes per board, 14 bytes of the log,
--       15 record name ("" = no id), 16 digest, 17 now (ms), 18 retention (ms),
--       19 records kept at most, 20 version for the answer ("null" = none), 21 an epoch for a
--       board that has none (its first event, or its data was lost), 22 the board as the
--       due set holds it
-- Returns the seq, {'dup', earlier answer}, or 'retry' (changed meanwhile), 'full' (items),
-- 'item_bytes' or 'board_bytes' (size bounds).
local record = ARGV[15]
if record ~= '' then
  local held = redis.call('HGET', KEYS[9], record)
  local head = ARGV[16] .. '\n'
  if held and string.sub(held, 1, #head) == head then
    return {'dup', string.sub(held, #head + 1)}
  end
end
local op = ARGV[1]
if op ~= 'custom' then
  local item = redis.call('HGET', KEYS[1], ARGV[2])
  if (item or '') ~= ARGV[3] then return 'retry' end
  local delta
  if op == 'value' then
    local cell = redis.call('HGET', KEYS[2], ARGV[5])
    if (cell or '') ~= ARGV[6] then return 'retry' end
    delta = #ARGV[7] - #ARGV[6]
    if ARGV[6] == '' then delta = delta + #ARGV[5] end
  elseif op == 'delete' then
    delta = -tonumber(redis.call('HGET', KEYS[6], ARGV[2]) or '0')
  else
    if op == 'create' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[11]) then
      return 'full'
    end
    delta = #ARGV[4] - #ARGV[3]
  end
  if delta > 0 then
    local size = tonumber(redis.call('HGET', KEYS[6], ARGV[2]) or '0') + delta
    if size > tonumber(ARGV[12]) then return 'item_bytes' end
    local total = tonumber(redis.call('GET', KEYS[7]) or '0') + delta
    if total > tonumber(ARGV[13]) then return 'board_bytes' end
  end
  if op == 'value' then
    redis.call('HSET', KEYS[2], ARGV[5], ARGV[7])
  elseif op == 'delete' then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('DEL', KEYS[2])
  else
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
  end
  if op == 'delete' then
    redis.call('HDEL', KEYS[6], ARGV[2])
  else
    redis.call('HINCRBY', KEYS[6], ARGV[2], delta)
  end
  redis.call('INCRBY', KEYS[7], delta)
end
local epoch = redis.call('GET', KEYS[11])
if epoch then
  redis.call('PERSIST', KEYS[11])
else
  epoch = ARGV[21]
  redis.call('SET', KEYS[11], epoch)
end
local seq = redis.call('INCR', KEYS[3])
local frame = ARGV[8] .. seq .. '}'
redis.call('XADD', KEYS[4], seq .. '-1', 'f', frame, 'a', ARGV[9])
-- The log keeps the newest events within both bounds; the oldest go first.
local log_bytes = redis.call('INCRBY', KEYS[8], #frame)
local keep, max_bytes = tonumber(ARGV[10]), tonumber(ARGV[14])
local len = redis.call('XLEN', KEYS[4])
while len > 0 and (len > keep or log_bytes > max_bytes) do
  local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'f' then log_bytes = log_bytes - #fields[i + 1] end
  end
  redis.call('XDEL', KEYS[4], oldest[1])
  len = len - 1
end
if log_bytes < 0 then log_bytes = 0 end
redis.call('SET', KEYS[8], log_bytes)
if record ~= '' then
  local now = tonumber(ARGV[17])
  redis.call('HSET', KEYS[9], record,
    ARGV[16] .. '\n{"seq":' .. seq .. ',"version":' .. ARGV[20] .. '}')
  redis.call('ZADD', KEYS[10], now, record)
  local horizon = now - tonumber(ARGV[18])
  local old = redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', horizon)
  for _, name in ipairs(old) do redis.call('HDEL', KEYS[9], name) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', horizon) end
  local extra = redis.call('ZCARD', KEYS[10]) - tonumber(ARGV[19])
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[10], extra)
    for i = 1, #gone, 2 do redis.call('HDEL', KEYS[9], gone[i]) end
  end
end
hook(KEYS[12], KEYS[13], KEYS[14], ARGV[22], tonumber(ARGV[17]),
  string.sub(frame, 1, -2) .. ',"at":' .. ARGV[17] .. '}')
redis.call(PUBLISH, KEYS[5],
  '-\n{"Durable":{"seq":' .. seq .. ',"frame":' .. cjson.encode(frame) .. ',"ack":' .. ARGV[9] ..
  ',"epoch":"' .. epoch .. '"}}')
return seq
