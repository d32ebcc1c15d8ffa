-- Create or refresh a peer-agent hash. When the caller chose the alias (reject == "1")
-- an existing hash is a conflict (0, mapped to HTTP 409); generated names upsert.
-- KEYS: [1] agent hash; ARGV: [1] ttl seconds, [2] reject "1"/"0", [3..] field, value, ...
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
