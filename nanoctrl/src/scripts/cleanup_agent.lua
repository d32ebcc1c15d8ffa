-- Delete what an agent left behind and notify its peers, atomically, unless the agent
-- is owned, live, and the caller is not its owner.
-- KEYS: [1] agent hash, [2 .. n+1] other keys to delete, [n+2 ..] inboxes to notify
-- ARGV: [1] owner hash or "", [2] n, [3] the notice
-- Returns 1, or -1 when refused (HTTP 403).
if owner_check(KEYS[1], ARGV[1]) == 'denied' then return -1 end
local n = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
for i = 2, n + 1 do redis.call('DEL', KEYS[i]) end
for i = n + 2, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[3]) end
return 1
