-- Refresh an entity's TTL. 0 when the key is gone (expired or never registered),
-- which the client answers by registering again; -1 when the key is an owned agent and
-- the caller is not its owner (HTTP 403).
-- Only hashes (entities and agents) count: a heartbeat naming some other key, such as
-- `nano_meta:service_revision`, must not put a TTL on it.
-- KEYS: [1] entity key; ARGV: [1] ttl seconds, [2] owner hash or ""
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return 0
end
local who = owner_check(KEYS[1], ARGV[2])
if who == 'denied' or who == 'dead' then return -1 end
if who == 'owner' then redis.call('HSET', KEYS[1], 'hb_at_ms', now_ms()) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
