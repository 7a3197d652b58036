-- Starts (or joins) the sweep of an instance whose lease ran out, flagging it with the sweep's
-- token so that the instance, if it comes back, registers its sessions again fenced with it.
-- KEYS: 1 instance leases, 2 the instance's swept flag
-- ARGV: 1 instance id, 2 now (ms), 3 a token for a new sweep
-- Returns the sweep's token (the one already under way, if any), or '' when the lease is not
-- expired.
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) >= tonumber(ARGV[2]) then return '' end
local token = redis.call('GET', KEYS[2]) or ARGV[3]
redis.call('SET', KEYS[2], token, 'EX', 3600)
return token
