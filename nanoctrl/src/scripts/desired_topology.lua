-- Store an agent's desired topology and tell its mailbox whom to dial; with
-- `symmetric`, also merge the agent into each target's spec and wake the target.
-- One script so that concurrent symmetric calls cannot lose each other's merge.
-- Refused (-1, HTTP 403) when the agent is owned, live, and the caller is not its owner.
-- KEYS: [1] agent hash, [2] own spec, [3] own stream, then per target (only when
--       symmetric): [2+2i] target spec, [3+2i] target stream
-- ARGV: [1] spec JSON, [2] agent id, [3] timestamp "secs.frac", [4] symmetric "1"/"0",
--       [5] scope as JSON (null or a string), [6] owner hash or "", [7..] target peers
if owner_check(KEYS[1], ARGV[6]) == 'denied' then return -1 end
redis.call('SET', KEYS[2], ARGV[1])
local n = #ARGV - 6
for i = 1, n do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*',
    'type', 'connect_peer', 'peer', ARGV[6 + i], 'timestamp', ARGV[3])
end
if ARGV[4] == '1' then
  for i = 1, n do
    local spec_key, stream_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    local peers = {}
    local raw = redis.call('GET', spec_key)
    if raw then
      local ok, spec = pcall(cjson.decode, raw)
      if ok and type(spec) == 'table' and type(spec.target_peers) == 'table' then
        for _, p in ipairs(spec.target_peers) do
          if type(p) == 'string' then table.insert(peers, p) end
        end
      end
    end
    local present = false
    for _, p in ipairs(peers) do
      if p == ARGV[2] then present = true end
    end
    if not present then table.insert(peers, ARGV[2]) end
    -- Build the JSON by hand: cjson would encode an empty list as {}.
    local parts = {}
    for j, p in ipairs(peers) do parts[j] = cjson.encode(p) end
    redis.call('SET', spec_key, '{"target_peers":[' .. table.concat(parts, ',')
      .. '],"min_bw":null,"symmetric":false,"scope":' .. ARGV[5] .. '}')
    redis.call('XADD', stream_key, 'MAXLEN', '~', '1000', '*',
      'type', 'connect_peer', 'peer', ARGV[2], 'timestamp', ARGV[3])
  end
end
return n
