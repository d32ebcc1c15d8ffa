-- Register (or re-register) an entity and announce it, atomically.
-- KEYS: [1] entity hash, [2] revision counter, [3] event channel
-- ARGV: [1] entity_type, [2] entity_id, [3] kind, [4] endpoint JSON or "",
--       [5] metadata JSON, [6] resource JSON or "", [7] info JSON, [8] ttl seconds
redis.call('HSET', KEYS[1],
  'entity_type', ARGV[1], 'entity_id', ARGV[2], 'kind', ARGV[3],
  'endpoint', ARGV[4], 'metadata', ARGV[5], 'resource', ARGV[6], 'info', ARGV[7])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[8]))
local rev = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')[1]
-- Same shape as the original (numeric timestamp, raw info as payload), but the string
-- fields go through cjson.encode so an id containing a quote still yields valid JSON.
local event = '{"event_type":"ADD","entity_type":' .. cjson.encode(ARGV[1])
  .. ',"entity_id":' .. cjson.encode(ARGV[2])
  .. ',"kind":' .. cjson.encode(ARGV[3])
  .. ',"timestamp":' .. now
  .. ',"revision":' .. rev
  .. ',"payload":' .. ARGV[7] .. '}'
redis.call('PUBLISH', KEYS[3], event)
return rev
