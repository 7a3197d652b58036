-- Delivery of a board's webhook outbox (see hook.lua), by one instance at a time: the one
-- holding the board's lease. Each entry point is this file with one dispatch line appended.
--
-- KEYS: 1 outbox stream, 2 cursor (the last number delivered), 3 lease, 4 due set,
--       5 failures in a row
-- ARGV: 1 this instance, 2 the board as the due set holds it, 3 now (ms), then the entry
--       point's own.
local K = KEYS
local inst, board_text, now = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function number_of(id) return tonumber(string.match(id, '^(%d+)')) end

-- ARGV 4 lease (ms), 5 most entries. Takes the lease (unless another instance holds it) and
-- pushes the board's due time past it, so other instances leave it alone meanwhile.
-- Returns {} when the lease is held elsewhere, else {dropped (0/1), failures, id, entry, ...}.
local function claim()
  local holder = redis.call('GET', K[3])
  if holder and holder ~= inst then return {} end
  local lease = tonumber(ARGV[4])
  redis.call('SET', K[3], inst, 'PX', lease)
  redis.call('ZADD', K[4], 'XX', now + lease, board_text)
  local cursor = tonumber(redis.call('GET', K[2]) or '0')
  local first = redis.call('XRANGE', K[1], '-', '+', 'COUNT', 1)[1]
  local dropped = 0
  if first and number_of(first[1]) > cursor + 1 then dropped = 1 end
  local out = {dropped, tonumber(redis.call('GET', K[5]) or '0')}
  for _, e in ipairs(redis.call('XRANGE', K[1], (cursor + 1) .. '-0', '+', 'COUNT', ARGV[5])) do
    out[#out + 1] = number_of(e[1])
    out[#out + 1] = e[2][2]
  end
  return out
end

-- ARGV 4 the last number delivered ('' when none). Moves the cursor, drops what was
-- delivered, and leaves the board due only if more is waiting. Returns 0 when the lease was
-- lost meanwhile (the next holder delivers again from the cursor).
local function done()
  if redis.call('GET', K[3]) ~= inst then return 0 end
  if ARGV[4] ~= '' then
    local last = tonumber(ARGV[4])
    if last > tonumber(redis.call('GET', K[2]) or '0') then redis.call('SET', K[2], last) end
    redis.call('XTRIM', K[1], 'MINID', (last + 1) .. '-0')
  end
  redis.call('DEL', K[5])
  redis.call('DEL', K[3])
  local cursor = tonumber(redis.call('GET', K[2]) or '0')
  local last = redis.call('XREVRANGE', K[1], '+', '-', 'COUNT', 1)[1]
  if last and number_of(last[1]) > cursor then
    redis.call('ZADD', K[4], now, board_text)
  else
    redis.call('ZREM', K[4], board_text)
  end
  return 1
end

-- ARGV 4 when to try again (ms). Counts the failure and schedules the retry.
local function fail()
  if redis.call('GET', K[3]) ~= inst then return 0 end
  redis.call('INCR', K[5])
  redis.call('ZADD', K[4], tonumber(ARGV[4]), board_text)
  redis.call('DEL', K[3])
  return 1
end
