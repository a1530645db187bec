-- index_chat: puts a chat at the top of its caller's list (`GET /chats`), or takes it off.
-- A function, so that add_usage can run it inside a turn's write; alone, it is KEYS/ARGV.
--
-- KEYS: 1 the caller's index (sorted set: chat id -> last write, Unix milliseconds)
-- ARGV: 1 the chat id, 2 now (Unix milliseconds; '' takes the chat off), 3 the index's ttl
--       ('0': none), the chats' own
-- Returns 1.
--
-- Safe to run twice: the same score set again, or the same member removed again.
local function index_chat(K, A)
  if A[2] == '' then
    redis.call('ZREM', K[1], A[1])
    return 1
  end
  redis.call('ZADD', K[1], A[2], A[1])
  if A[3] ~= '0' then redis.call('EXPIRE', K[1], A[3]) else redis.call('PERSIST', K[1]) end
  return 1
end
