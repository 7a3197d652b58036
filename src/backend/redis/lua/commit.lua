-- Applies a batch of durable operations of one board, in order. Each is applied atomically
-- if its item and cell still hold what the caller read (compare-and-set on the stored JSON
-- text): the size bounds are checked, the new state written, the next seq taken and the event
-- appended to the log. The batch's events go out in one message on the board's channel, in seq
-- order. The caller computed the new states and the events with the board rules, each
-- operation from the state the ones before it in the batch leave; this script only checks,
-- writes, counts and publishes. An operation refused here leaves the board as it was, and the
-- later ones are judged on that board. At the first operation whose item or cell changed since
-- it was read ('retry'), the batch stops: the ones after it answer 'later' and are sent again
-- after it, so that the operations of one sender apply in the order it sent them.
--
-- Sizes are bytes of stored text, as the board rules count them: an item is its own text plus,
-- for each cell, the column id and the cell's text. The texts are compared before anything is
-- written, so the size change computed from them is exact.
--
-- An operation sent with an id is recorded with its answer (`ops`: record name -> digest,
-- newline, answer JSON; `opsorder`: record name -> when), so that a retry of the same
-- operation gets the first answer instead of applying twice.
--
-- KEYS: 1 items hash, 2 seq, 3 log stream, 4 board channel, 5 sizes hash (item id -> bytes),
--       6 board bytes, 7 log bytes, 8 ops, 9 opsorder, 10 epoch, 11 webhook outbox,
--       12 its counter, 13 boards due for webhook delivery, then the values hash of each
--       operation's item, in order
-- ARGV: 1 log length, 2 item bound, 3 bytes per item, 4 bytes per board, 5 bytes of the log,
--       6 now (ms), 7 retention (ms), 8 records kept at most, 9 an epoch for a board that has
--       none (its first event, or its data was lost), 10 the board as the due set holds it,
--       then OP_ARGS per operation: op (create|update|delete|value|custom), item id, item as
--       read ("" = absent), new item ("" = delete), column, cell as read ("" = absent), new
--       cell, frame prefix (the frame up to its seq), ack JSON or "null", record name ("" = no
--       id), digest, version for the answer ("null" = none)
-- Returns an answer per operation, in order: its seq, {'dup', earlier answer}, or 'retry'
-- (changed meanwhile), 'later' (not tried: an operation before it answered 'retry'), 'full'
-- (items), 'item_bytes' or 'board_bytes' (size bounds).
local OP_ARGS = 12
local now = tonumber(ARGV[6])

-- Checks and writes one operation's state; nil when applied, else the refusal.
local function apply(op, item_id, item_read, new_item, column, cell_read, new_cell, values)
  local item = redis.call('HGET', KEYS[1], item_id)
  if (item or '') ~= item_read then return 'retry' end
  local delta
  if op == 'value' then
    local cell = redis.call('HGET', values, column)
    if (cell or '') ~= cell_read then return 'retry' end
    delta = #new_cell - #cell_read
    if cell_read == '' then delta = delta + #column end
  elseif op == 'delete' then
    delta = -tonumber(redis.call('HGET', KEYS[5], item_id) or '0')
  else
    if op == 'create' and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2]) then
      return 'full'
    end
    delta = #new_item - #item_read
  end
  if delta > 0 then
    local size = tonumber(redis.call('HGET', KEYS[5], item_id) or '0') + delta
    if size > tonumber(ARGV[3]) then return 'item_bytes' end
    local total = tonumber(redis.call('GET', KEYS[6]) or '0') + delta
    if total > tonumber(ARGV[4]) then return 'board_bytes' end
  end
  if op == 'value' then
    redis.call('HSET', values, column, new_cell)
  elseif op == 'delete' then
    redis.call('HDEL', KEYS[1], item_id)
    redis.call('DEL', values)
  else
    redis.call('HSET', KEYS[1], item_id, new_item)
  end
  if op == 'delete' then
    redis.call('HDEL', KEYS[5], item_id)
  elseif delta ~= 0 then
    redis.call('HINCRBY', KEYS[5], item_id, delta)
  end
  if delta ~= 0 then redis.call('INCRBY', KEYS[6], delta) end
  return nil
end

local answers, events = {}, {}
local epoch
local logged, recorded, stopped = 0, false, false
for i = 1, (#ARGV - 10) / OP_ARGS do
  local a = 10 + (i - 1) * OP_ARGS
  local op, record, digest = ARGV[a + 1], ARGV[a + 10], ARGV[a + 11]
  local answer
  if stopped then
    answer = 'later'
  elseif record ~= '' then
    local held = redis.call('HGET', KEYS[8], record)
    local head = digest .. '\n'
    if held and string.sub(held, 1, #head) == head then
      answer = {'dup', string.sub(held, #head + 1)}
    end
  end
  if not answer and op ~= 'custom' then
    answer = apply(op, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6],
      ARGV[a + 7], KEYS[13 + i])
  end
  if answer then
    stopped = stopped or answer == 'retry'
    answers[i] = answer
  else
    if not epoch then
      epoch = redis.call('GET', KEYS[10])
      if epoch then
        redis.call('PERSIST', KEYS[10])
      else
        epoch = ARGV[9]
        redis.call('SET', KEYS[10], epoch)
      end
    end
    local seq = redis.call('INCR', KEYS[2])
    -- Formatted as an integer once: a number concatenated is formatted as a float each time.
    local n = string.format('%d', seq)
    local ack = ARGV[a + 9]
    local frame = ARGV[a + 8] .. n .. '}'
    redis.call('XADD', KEYS[3], n .. '-1', 'f', frame, 'a', ack)
    logged = logged + #frame
    if record ~= '' then
      redis.call('HSET', KEYS[8], record,
        digest .. '\n{"seq":' .. n .. ',"version":' .. ARGV[a + 12] .. '}')
      redis.call('ZADD', KEYS[9], ARGV[6], record)
      recorded = true
    end
    if HOOK_CAP > 0 then
      hook(KEYS[11], KEYS[12], KEYS[13], ARGV[10], now,
        string.sub(frame, 1, -2) .. ',"at":' .. ARGV[6] .. '}')
    end
    events[#events + 1] = '{"Durable":{"seq":' .. n .. ',"frame":' .. cjson.encode(frame) ..
      ',"ack":' .. ack .. ',"epoch":"' .. epoch .. '"}}'
    answers[i] = seq
  end
end
if logged > 0 then
  -- The log keeps the newest events within both bounds; the oldest go first.
  local log_bytes = redis.call('INCRBY', KEYS[7], logged)
  local keep, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[5])
  local len = redis.call('XLEN', KEYS[3])
  local trimmed = false
  while len > 0 and (len > keep or log_bytes > max_bytes) do
    local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    local fields = oldest[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'f' then log_bytes = log_bytes - #fields[i + 1] end
    end
    redis.call('XDEL', KEYS[3], oldest[1])
    len = len - 1
    trimmed = true
  end
  if trimmed or log_bytes < 0 then
    if log_bytes < 0 then log_bytes = 0 end
    redis.call('SET', KEYS[7], log_bytes)
  end
end
if recorded then
  local horizon = now - tonumber(ARGV[7])
  local old = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', horizon)
  for _, name in ipairs(old) do redis.call('HDEL', KEYS[8], name) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', horizon) end
  local extra = redis.call('ZCARD', KEYS[9]) - tonumber(ARGV[8])
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[9], extra)
    for i = 1, #gone, 2 do redis.call('HDEL', KEYS[8], gone[i]) end
  end
end
if #events > 0 then
  redis.call(PUBLISH, KEYS[4], '-\n' .. table.concat(events, '\n'))
end
return answers
