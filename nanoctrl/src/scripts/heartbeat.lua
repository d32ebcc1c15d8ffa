-- Refresh an entity's TTL. 0 when the key is gone (expired or never registered),
-- which the client answers by registering again.
-- KEYS: [1] entity key; ARGV: [1] ttl seconds
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
