-- clear: drops a chat's turns and its context window; its prompt and its usage stay.
--
-- KEYS: 1 turns, 2 system, 3 meta
-- ARGV: 1 ttl ('0': none)
-- Returns 1.
--
-- Safe to run twice: the chat is as empty after the second run as after the first. A run
-- sent again after a turn was stored meanwhile clears that turn too, as a clear sent a
-- moment later would have: the two requests overlapped.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'bytes', 0, 'messages', 0)
redis.call('HDEL', KEYS[3], 'window')
touch(KEYS, ARGV[1], 1, 3)
return 1
