-- share: lists a link with its chat, before its snapshot is kept (a link that exists can
-- always be revoked); the list lives as long as its longest-lived link.
--
-- KEYS: 1 the chat's list of links (hash: token -> `<created_at>:<expires_at>`)
-- ARGV: 1 the link's token, 2 its entry, 3 when it expires (Unix seconds)
-- Returns 1.
--
-- Safe to run twice: the same entry is set again, and the expiry only ever moves later.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
local now = tonumber(redis.call('TIME')[1])
local left = tonumber(ARGV[3]) - now
if ttl < 0 or ttl < left then redis.call('EXPIRE', KEYS[1], math.max(left, 1)) end
return 1
