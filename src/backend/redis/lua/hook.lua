-- The webhook outbox of a board, written by the scripts that make its events (commit.lua and
-- presence.lua start with this file; HOOK_CAP is set in front of it, 0 when webhooks are off).
-- Each entry takes the board's next outbox number as its stream id (`N-1`), so a gap at the
-- front tells the deliverer that entries were dropped; the stream keeps the newest HOOK_CAP.
-- The board is marked due for delivery, unless it already is (a retry keeps its time).
local function hook(stream, counter, due, board_text, now, entry)
  if HOOK_CAP == 0 then return end
  local n = redis.call('INCR', counter)
  redis.call('XADD', stream, 'MAXLEN', HOOK_CAP, n .. '-1', 'e', entry)
  redis.call('ZADD', due, 'NX', now, board_text)
end
