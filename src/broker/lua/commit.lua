-- Applies one durable operation atomically, if the item and cell still hold what the caller
-- read (compare-and-set on the stored JSON text): writes the new state, takes the next seq,
-- appends the event to the log and publishes it. The caller computed the new state and the
-- event with the board rules; this script only checks, writes, counts and publishes.
--
-- KEYS: 1 items hash, 2 the item's values hash, 3 seq, 4 log stream, 5 board channel
-- ARGV: 1 op (create|update|delete|value|custom), 2 item id, 3 item as read ("" = absent),
--       4 new item ("" = delete), 5 column, 6 cell as read ("" = absent), 7 new cell,
--       8 frame prefix (the frame up to its seq), 9 ack JSON or "null", 10 log length,
--       11 item bound
local op = ARGV[1]
if op ~= 'custom' then
  local item = redis.call('HGET', KEYS[1], ARGV[2])
  if (item or '') ~= ARGV[3] then return 'retry' end
  if op == 'value' then
    local cell = redis.call('HGET', KEYS[2], ARGV[5])
    if (cell or '') ~= ARGV[6] then return 'retry' end
    redis.call('HSET', KEYS[2], ARGV[5], ARGV[7])
  elseif op == 'delete' then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('DEL', KEYS[2])
  else
    if op == 'create' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[11]) then
      return 'full'
    end
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
  end
end
local seq = redis.call('INCR', KEYS[3])
local frame = ARGV[8] .. seq .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[10], seq .. '-1', 'f', frame, 'a', ARGV[9])
redis.call('PUBLISH', KEYS[5],
  '-\n{"Durable":{"seq":' .. seq .. ',"frame":' .. cjson.encode(frame) .. ',"ack":' .. ARGV[9] .. '}}')
return seq
