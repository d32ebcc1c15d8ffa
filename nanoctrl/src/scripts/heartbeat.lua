-- Refresh an entity's TTL. 0 when the key is gone (expired or never registered),
-- which the client answers by registering again.
-- Only hashes (entities and agents) count: a heartbeat naming some other key, such as
-- `nano_meta:service_revision`, must not put a TTL on it.
-- KEYS: [1] entity key; ARGV: [1] ttl seconds
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return 0
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
