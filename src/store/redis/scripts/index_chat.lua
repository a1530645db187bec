-- index_chat: puts a chat at the top of its caller's list (`GET /chats`), or takes it off.
-- A function, so that add_usage can run it inside a turn's write; alone, it is KEYS/ARGV.
--
-- KEYS: 1 the caller's index (sorted set: chat id -> last write, Unix milliseconds), 2 its
--       index by birth (chat id -> when it was first listed, which is when it was made)
-- ARGV: 1 the chat id, 2 now (Unix milliseconds; '' takes the chat off), 3 the index's ttl
--       ('0': none), the chats' own
-- Returns 1.
--
-- Safe to run twice: the same score set again (a birth is set once), or the same member
-- removed again. (A third argument, true, skips the index of births for a chat the write
-- did not make: a turn's record says so.)
local function index_chat(K, A, known)
  if A[2] == '' then
    redis.call('ZREM', K[1], A[1])
    redis.call('ZREM', K[2], A[1])
    return 1
  end
  redis.call('ZADD', K[1], A[2], A[1])
  if A[3] ~= '0' then redis.call('EXPIRE', K[1], A[3]) else redis.call('PERSIST', K[1]) end
  -- The index of births is renewed when a chat is born: a caller who writes for longer
  -- than the chats live without making one may see it expire, and the list by birth then
  -- makes it again from this one (list_births).
  -- `known`: the caller knows the chat was not made by this write (it is in the index of
  -- births already).
  if not known and redis.call('ZADD', K[2], 'NX', A[2], A[1]) == 1 then
    if A[3] ~= '0' then redis.call('EXPIRE', K[2], A[3]) else redis.call('PERSIST', K[2]) end
  end
  return 1
end
