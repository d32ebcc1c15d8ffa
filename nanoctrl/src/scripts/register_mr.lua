-- Publish a memory region of an agent, unless the agent is owned, live, and the caller
-- is not its owner.
-- KEYS: [1] agent hash, [2] mr key; ARGV: [1] owner hash or "", [2] the record (JSON)
-- Returns 1, or -1 when refused (HTTP 403).
if owner_check(KEYS[1], ARGV[1]) == 'denied' then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
