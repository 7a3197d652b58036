-- What a joining session or a room starts from, read atomically with the board's seq.
--
-- KEYS: 1 items hash, 2 seq, 3 log stream, 4 prefix of values hashes (item id appended),
--       5 epoch
-- ARGV: 1 last seq seen ("" = none: snapshot), 2 "events" for a room's gap fill, 3 the epoch
--       of that seq ("" = not known), 4 an epoch for a board that has none yet (or a new one),
--       5 for a gap fill, the frame of seq ARGV[1] as the room delivered it ("" = not known)
-- Returns {"R", seq, entries, epoch} with the log entries after ARGV[1], or
--         {"S", seq, items (flat id, json), values (flat item, column, json), epoch}, or for a
--         gap fill whose events are gone {"G", seq}, or for a gap fill that finds the board of
--         another epoch, or the store lost events (then the board takes a new one),
--         {"L", seq, epoch}.
--
-- A gap fill also checks that the store still holds what the room delivered: a seq above the
-- board's, or a logged event at that seq that differs from the room's, means the store lost
-- events (a Redis Cluster failover to a replica that was behind) and gave their seqs to
-- others. The board then takes a new epoch, so that every client resyncs rather than
-- diverges.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  -- A board only looked at keeps its epoch for a day; its first event keeps it for good.
  epoch = ARGV[4]
  redis.call('SET', KEYS[5], epoch, 'EX', 86400)
end
local same_epoch = ARGV[3] == '' or ARGV[3] == epoch
-- A room whose board is now of another epoch: its sessions resync (closed with 1012).
if ARGV[2] == 'events' and not same_epoch then return {'L', seq, epoch} end
if ARGV[2] == 'events' and ARGV[1] ~= '' and same_epoch then
  local last = tonumber(ARGV[1])
  local lost = last > seq
  if not lost and ARGV[5] ~= '' and last > 0 then
    local entry = redis.call('XRANGE', KEYS[3], last .. '-1', last .. '-1')[1]
    lost = entry ~= nil and entry[2][2] ~= ARGV[5]
  end
  if lost then
    redis.call('SET', KEYS[5], ARGV[4])
    return {'L', seq, ARGV[4]}
  end
end
if ARGV[1] ~= '' and same_epoch then
  local last = tonumber(ARGV[1])
  if last == seq then return {'R', seq, {}, epoch} end
  if last < seq then
    local entries = redis.call('XRANGE', KEYS[3], (last + 1) .. '-1', '+')
    if #entries > 0 and entries[1][1] == (last + 1) .. '-1' then
      return {'R', seq, entries, epoch}
    end
  end
end
if ARGV[1] ~= '' and ARGV[2] == 'events' then return {'G', seq} end
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
return {'S', seq, items, values, epoch}
