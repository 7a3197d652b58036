-- Renews an instance's lease.
-- KEYS: 1 instance leases (sorted set), 2 the instance's swept flag (the sweep's token)
-- ARGV: 1 instance id, 2 new expiry (ms)
-- Returns {1, token} when the lease was missing or the instance was swept meanwhile: its
-- sessions must be registered again, fenced with the token ('' when there was no sweep);
-- else {0, ''}.
local added = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local token = redis.call('GET', KEYS[2])
if token then redis.call('DEL', KEYS[2]) end
if added == 1 or token then return {1, token or ''} end
return {0, ''}
