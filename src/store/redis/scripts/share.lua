-- share: lists a link with its chat, while the chat has turns and fewer links that live
-- than the most it may have; drops its links that expired; the list lives as long as its
-- longest-lived link. The link's snapshot is kept after this (another slot).
--
-- KEYS: 1 the chat's list of links (hash: link id -> `<created_at>:<expires_at>`), 2 the
--       chat's turns
-- ARGV: 1 the link's id, 2 its entry, 3 its seconds to live, 4 now (Unix seconds), 5 the
--       most links that live a chat may have
-- Returns 1 when listed, 0 when the chat has no turns (deleted, or never had any), 2 when
-- it has as many links as it may.
--
-- Safe to run twice: the same entry is set again (it counts once), and the list's expiry
-- only ever moves later.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local now, live = tonumber(ARGV[4]), 0
local listed = redis.call('HGETALL', KEYS[1])
for i = 1, #listed, 2 do
  local expires = tonumber(string.match(listed[i + 1], ':(%d+)$') or '0')
  if expires <= now then
    redis.call('HDEL', KEYS[1], listed[i])
  elseif listed[i] ~= ARGV[1] then
    live = live + 1
  end
end
if live >= tonumber(ARGV[5]) then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
