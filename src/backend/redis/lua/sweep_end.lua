-- Ends the sweep of an instance: forgets its lease once its record of boards is empty and the
-- lease is still expired.
-- KEYS: 1 instance leases, 2 the instance's record of boards
-- ARGV: 1 instance id, 2 now (ms)
-- Returns 1 when the instance was forgotten.
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) >= tonumber(ARGV[2]) then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
