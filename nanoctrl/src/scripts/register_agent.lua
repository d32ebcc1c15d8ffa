-- Create or refresh a peer-agent hash.
-- KEYS: [1] agent hash
-- ARGV: [1] ttl seconds, [2] reject "1"/"0", [3] owner hash or "", [4] heartbeat
--       interval ms, [5..] field, value, ...
-- Returns 1, or 0 for a conflict (HTTP 409):
-- - an explicit alias (reject == "1") that exists and is not owned is a conflict, and a
--   generated name upserts (the original's rules for agents without an owner);
-- - an owned, live agent can only be registered again by its owner; an owned agent
--   whose heartbeats stopped is replaced (its old fields removed);
-- - a caller asking for ownership never takes over an existing record it does not own.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local who = owner_check(KEYS[1], ARGV[3])
  if who == 'denied' then return 0 end
  if who == 'open' and (ARGV[2] == '1' or ARGV[3] ~= '') then return 0 end
  if who == 'dead' then redis.call('DEL', KEYS[1]) end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'hb_at_ms', now_ms(), 'hb_interval_ms', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
