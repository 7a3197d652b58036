-- Presence of one board, shared by every instance. Each entry point below is this file with
-- one dispatch line appended. A session is recorded with its instance, so that the sessions
-- of a dead instance can be purged; transitions (first session in, last out) take the next
-- revision and are published on the board channel inside the script, so publication order is
-- revision order on every instance. Every key is the board's, so that the scripts run under
-- Redis Cluster too.
--
-- Each instance keeps a record of the boards where it has sessions, outside these scripts (a
-- board enters it before the instance's first session is registered, and leaves it once the
-- scripts say the instance has none left there), so that a sweep after its death finds the
-- boards to purge.
--
-- An instance swept while it was only paused re-registers its sessions when it learns of it;
-- those registrations carry the sweep's token (the fence), and a purge by that same sweep
-- leaves a board fenced with it alone, however late it runs.
--
-- A tenant's workspace is kept by these same scripts, as a board that holds every session of
-- the tenant; there each session also records the board it is on (KEYS[11]).
--
-- KEYS: 1 sessions (sid -> "instance|user"), 2 info (user -> JSON), 3 color (user -> index; a
--       board's only), 4 status, 5 count (user -> sessions), 6 order (user -> arrival number),
--       7 rev counter, 8 board channel, 9 sessions per instance (instance -> count), 10 fences
--       (instance -> the token of the sweep it re-registered after), 11 places (sid -> the
--       board a workspace session is on), 12 webhook outbox, 13 its counter, 14 boards due for
--       webhook delivery (a board's joins and leaves go there; a workspace's do not)
-- ARGV: 1..12 the palette (empty for a workspace), 13 the fence registrations carry ('' =
--       none), 14 this board as the due set holds it, 15 now (ms), then the entry point's own
--       arguments from 16 on.
local K = KEYS
local palette = {}
for i = 1, 12 do palette[i] = ARGV[i] end
local fence, board_text, now = ARGV[13], ARGV[14], tonumber(ARGV[15])

-- Boards without anyone keep no revision counter for long.
local IDLE_TTL = 86400

local function publish(json) redis.call(PUBLISH, K[8], '-\n' .. json) end

local function hook_presence(kind, payload)
  if palette[1] == '' then return end
  hook(K[12], K[13], K[14], board_text, now,
    '{"type":"presence.' .. kind .. '","payload":' .. payload .. ',"at":' .. now .. '}')
end

local function join_one(sid, inst, uid, info, place)
  if redis.call('HEXISTS', K[1], sid) == 1 then return end
  redis.call('HSET', K[1], sid, inst .. '|' .. uid)
  if place and place ~= '' then redis.call('HSET', K[11], sid, place) end
  redis.call('HINCRBY', K[9], inst, 1)
  if redis.call('HINCRBY', K[5], uid, 1) > 1 then return end
  redis.call('PERSIST', K[7])
  -- A workspace (no palette given) has no colors: its users are not drawn and keep none (its
  -- listing answers the first).
  local best = 0
  if palette[1] ~= '' then
    local uses = {}
    for i = 0, 11 do uses[i] = 0 end
    for _, c in ipairs(redis.call('HVALS', K[3])) do
      local i = tonumber(c)
      uses[i] = (uses[i] or 0) + 1
    end
    for i = 1, 11 do if uses[i] < uses[best] then best = i end end
    redis.call('HSET', K[3], uid, best)
  end
  local rev = redis.call('INCR', K[7])
  redis.call('HSET', K[2], uid, info)
  redis.call('HSET', K[4], uid, 'active')
  redis.call('HSET', K[6], uid, rev)
  publish('{"Joined":{"rev":' .. rev .. ',"user":{"userId":' .. cjson.encode(uid) .. ',"user":' ..
    info .. ',"color":"' .. palette[best + 1] .. '","status":"active"}}}')
  hook_presence('join', '{"userId":' .. cjson.encode(uid) .. ',"user":' .. info .. ',"color":"' ..
    palette[best + 1] .. '"}')
end

local function leave_one(sid)
  local v = redis.call('HGET', K[1], sid)
  if not v then return end
  redis.call('HDEL', K[1], sid)
  redis.call('HDEL', K[11], sid)
  local bar = string.find(v, '|', 1, true)
  local inst, uid = string.sub(v, 1, bar - 1), string.sub(v, bar + 1)
  if redis.call('HINCRBY', K[9], inst, -1) <= 0 then
    redis.call('HDEL', K[9], inst)
    redis.call('HDEL', K[10], inst)
  end
  if redis.call('HINCRBY', K[5], uid, -1) > 0 then return end
  for i = 2, 6 do redis.call('HDEL', K[i], uid) end
  if redis.call('HLEN', K[2]) == 0 then redis.call('EXPIRE', K[7], IDLE_TTL) end
  local rev = redis.call('INCR', K[7])
  publish('{"Left":{"rev":' .. rev .. ',"user_id":' .. cjson.encode(uid) .. '}}')
  hook_presence('leave', '{"userId":' .. cjson.encode(uid) .. '}')
end

local function purge(inst, keep)
  local sessions = redis.call('HGETALL', K[1])
  for i = 1, #sessions, 2 do
    local sid, v = sessions[i], sessions[i + 1]
    if string.sub(v, 1, #inst + 1) == inst .. '|' and not (keep and keep[sid]) then
      leave_one(sid)
    end
  end
end

-- A hash as a table.
local function hash(key)
  local flat, t = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- {rev, {user, info, color, status, order, ...}}; each hash is read once, whatever the number
-- of users.
local function listing()
  local rev = tonumber(redis.call('GET', K[7]) or '0')
  local out = {}
  local infos = redis.call('HGETALL', K[2])
  local colors, statuses, orders = hash(K[3]), hash(K[4]), hash(K[6])
  for i = 1, #infos, 2 do
    local uid = infos[i]
    out[#out + 1] = uid
    out[#out + 1] = infos[i + 1]
    out[#out + 1] = colors[uid] or '0'
    out[#out + 1] = statuses[uid] or 'active'
    out[#out + 1] = orders[uid] or '0'
  end
  return {rev, out}
end

local function set_status(uid, status, origin)
  if redis.call('HEXISTS', K[2], uid) == 0 then return end
  redis.call('HSET', K[4], uid, status)
  local rev = redis.call('INCR', K[7])
  publish('{"StatusChanged":{"rev":' .. rev .. ',"user_id":' .. cjson.encode(uid) ..
    ',"status":"' .. status .. '","origin":' .. origin .. '}}')
end

-- Purges the sessions of a dead instance, unless it re-registered them after this same sweep
-- (ARGV[17], the sweep's token): it came back while it was being swept. Returns 0 then.
local function purge_dead(inst, token)
  if redis.call('HGET', K[10], inst) == token then return 0 end
  purge(inst, nil)
  return 1
end

-- Marks the instance's registrations on this board as made after the sweep whose token they
-- carry.
local function fence_for(inst)
  if fence ~= '' then redis.call('HSET', K[10], inst, fence) end
end

-- How many sessions the instance has on this board.
local function sessions_of(inst) return tonumber(redis.call('HGET', K[9], inst) or '0') end

-- ARGV from 16: this instance, then (sid, user, info, place) quadruples: sessions arriving.
local function join_many()
  fence_for(ARGV[16])
  for i = 17, #ARGV, 4 do join_one(ARGV[i], ARGV[16], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
end

-- ARGV from 16: this instance, then the ids of its sessions leaving, in the order they left.
local function leave_many()
  for i = 17, #ARGV do leave_one(ARGV[i]) end
end

-- ARGV from 16: instance, then (sid, user, info, place) quadruples: the instance's sessions
-- on this board, exactly; others of the instance are removed.
local function sync()
  local inst = ARGV[16]
  local keep = {}
  for i = 17, #ARGV, 4 do keep[ARGV[i]] = true end
  purge(inst, keep)
  if #ARGV >= 17 then fence_for(inst) end
  for i = 17, #ARGV, 4 do join_one(ARGV[i], inst, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
  return listing()
end

-- {listing, {user, board, ...}}: a workspace's users and the board of each of its sessions.
local function places()
  local out = {}
  local where = redis.call('HGETALL', K[11])
  for i = 1, #where, 2 do
    local v = redis.call('HGET', K[1], where[i])
    if v then
      local bar = string.find(v, '|', 1, true)
      out[#out + 1] = string.sub(v, bar + 1)
      out[#out + 1] = where[i + 1]
    end
  end
  return {listing(), out}
end
