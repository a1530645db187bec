-- set_title: sets the title of a chat that exists, and renews the chat's expiry.
--
-- KEYS: 1 turns, 2 system, 3 meta
-- ARGV: 1 ttl ('0': none), 2 the title, 3 now (Unix milliseconds)
-- Returns 1 when set, 2 when set on a temporary chat (which is not listed), 0 when there
-- is no such chat (nothing is written: a title alone would make an empty chat).
--
-- Safe to run twice: the same title, set again.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'title', ARGV[2])
stamp(KEYS[3], ARGV[3])
local ttl, temporary = chat_ttl(KEYS[3], ARGV[1])
touch(KEYS, ttl, 1, 3)
if temporary then return 2 end
return 1
