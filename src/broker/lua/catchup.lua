-- What a joining session or a room starts from, read atomically with the board's seq.
--
-- KEYS: 1 items hash, 2 seq, 3 log stream, 4 prefix of values hashes (item id appended)
-- ARGV: 1 last seq seen ("" = none: snapshot), 2 "events" for a room's gap fill
-- Returns {"R", seq, entries} with the log entries after ARGV[1], or
--         {"S", seq, items (flat id, json), values (flat item, column, json)}.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' then
  local last = tonumber(ARGV[1])
  if last == seq then return {'R', seq, {}} end
  if last < seq then
    local entries = redis.call('XRANGE', KEYS[3], (last + 1) .. '-1', '+')
    if #entries > 0 and entries[1][1] == (last + 1) .. '-1' then
      return {'R', seq, entries}
    end
  end
  if ARGV[2] == 'events' then return {'G', seq} end
end
local items = redis.call('HGETALL', KEYS[1])
local values = {}
for i = 1, #items, 2 do
  local cells = redis.call('HGETALL', KEYS[4] .. items[i])
  for j = 1, #cells, 2 do
    values[#values + 1] = items[i]
    values[#values + 1] = cells[j]
    values[#values + 1] = cells[j + 1]
  end
end
return {'S', seq, items, values}
