-- Remove an entity and announce it, atomically. A missing entity is a no-op (0):
-- no revision bump and no event, as in the original.
-- KEYS: [1] entity hash, [2] revision counter, [3] event channel
-- ARGV: [1] entity_type, [2] entity_id
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1])
local rev = redis.call('INCR', KEYS[2])
-- The original's REMOVE event carries the timestamp as a string (TIME()[1]); keep it.
redis.call('PUBLISH', KEYS[3], cjson.encode({
  entity_type = ARGV[1],
  entity_id = ARGV[2],
  timestamp = redis.call('TIME')[1],
  event_type = 'REMOVE',
  revision = rev,
}))
return rev
