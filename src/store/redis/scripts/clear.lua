-- clear: drops a chat's turns, its context window and the title its first question gave
-- it; its prompt, a title set by hand and its usage stay.
--
-- KEYS: 1 turns, 2 system, 3 meta
-- ARGV: 1 ttl ('0': none), 2 now (Unix milliseconds)
-- Returns 1.
--
-- Safe to run twice: the chat is as empty after the second run as after the first. A run
-- sent again after a turn was stored meanwhile clears that turn too, as a clear sent a
-- moment later would have: the two requests overlapped.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[3], 'bytes', 0, 'messages', 0)
redis.call('HDEL', KEYS[3], 'window', 'auto_title')
stamp(KEYS[3], ARGV[2])
touch(KEYS, ARGV[1], 1, 3)
return 1
