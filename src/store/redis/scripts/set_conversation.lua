-- set_conversation: makes a chat a conversation (its creation time, kept from the first
-- call) and sets its metadata; renews the chat's expiry.
--
-- KEYS: 1 turns, 2 system, 3 meta
-- ARGV: 1 ttl ('0': none), 2 the creation time (Unix seconds), 3 the metadata as JSON
--       ('': left as it is), 4 now (Unix milliseconds)
-- Returns the creation time kept.
--
-- Safe to run twice: the creation time is set only when absent, the metadata set again to
-- the same value.
redis.call('HSETNX', KEYS[3], 'created_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], 'metadata', ARGV[3]) end
stamp(KEYS[3], ARGV[4])
touch(KEYS, (chat_ttl(KEYS[3], ARGV[1])), 1, 3)
return tonumber(redis.call('HGET', KEYS[3], 'created_at'))
