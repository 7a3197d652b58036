-- Renews an instance's lease.
-- KEYS: 1 instance leases (sorted set), 2 the instance's swept flag
-- ARGV: 1 instance id, 2 new expiry (ms)
-- Returns 1 when the lease was missing or the instance was swept meanwhile: its sessions must
-- be registered again.
local added = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local swept = redis.call('DEL', KEYS[2])
if added == 1 or swept == 1 then return 1 end
return 0
