-- Starts (or joins) the sweep of an instance whose lease ran out, flagging it so that the
-- instance, if it comes back, registers its sessions again.
-- KEYS: 1 instance leases, 2 the instance's swept flag
-- ARGV: 1 instance id, 2 now (ms)
-- Returns 1 when the lease is expired and the sweep may go on.
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', 3600)
return 1
