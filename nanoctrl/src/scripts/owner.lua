-- Prelude of the scripts that act on an agent's behalf (prepended when they are loaded).
-- An agent registered with an owner token has `owner` = hex SHA-256 of the token in its
-- hash, and `hb_at_ms` (Redis time of its last registration or heartbeat) and
-- `hb_interval_ms` (its heartbeat period). It is live while
-- hb_at_ms + 3 * hb_interval_ms + 1000 >= now (three missed beats and a second of
-- slack, Redis's clock, so client clocks do not matter).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Who may act on the agent at `key` for a caller presenting owner hash `presented`
-- ('' for none): 'open' (no owner: the original's rules), 'owner' (the hash matches),
-- 'dead' (owned, but silent: anyone may clean it up or take it over), 'denied'.
local function owner_check(key, presented)
  if redis.call('TYPE', key).ok ~= 'hash' then return 'open' end
  local f = redis.call('HMGET', key, 'owner', 'hb_at_ms', 'hb_interval_ms')
  local owner = f[1]
  if not owner or owner == '' then return 'open' end
  if presented ~= '' and presented == owner then return 'owner' end
  local at = tonumber(f[2]) or 0
  local iv = tonumber(f[3]) or 15000
  if at + 3 * iv + 1000 < now_ms() then return 'dead' end
  return 'denied'
end
