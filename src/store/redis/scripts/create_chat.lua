-- create_chat: makes a new chat with a whole history at once (a fork, an import), or
-- nothing when a chat of that id exists. A chat made where one was deleted starts above
-- the deleted one's floor.
--
-- KEYS: 1 turns, 2 system, 3 meta, 4 floor
-- ARGV: 1 ttl ('0': none), 2 now (Unix milliseconds), 3 the prompt ('': none), 4 the title
--       ('': none), 5 the title its first question gave it ('': none), 6 bytes and 7
--       messages the turns hold, 8 the request's own token, 9 its usage: turns, 10 prompt,
--       11 completion and 12 cached tokens, 13 how long a temporary chat is kept after
--       each write (seconds; '': not temporary; ARGV[1] is then the same), 14 to the end
--       the turns, oldest first
-- Returns 1 when made, 0 when the chat exists.
--
-- Safe to run twice: the chat keeps the token of the request that made it (`made_by`), so
-- a run sent again after a cut finds its own chat and answers 1 again.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
  if redis.call('HGET', KEYS[3], 'made_by') == ARGV[8] then return 1 end
  return 0
end
local version, floor = found(KEYS[3], KEYS[4])
if #ARGV >= 14 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 14, #ARGV)) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('HSET', KEYS[3], 'bytes', ARGV[6], 'messages', ARGV[7], 'made_by', ARGV[8],
  'v', next_version(version, floor))
if ARGV[9] ~= '0' then
  redis.call('HSET', KEYS[3], 'turns', ARGV[9], 'prompt_tokens', ARGV[10],
    'completion_tokens', ARGV[11], 'cached_tokens', ARGV[12])
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], 'title', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'auto_title', ARGV[5]) end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[3], 'temp', ARGV[13]) end
stamp(KEYS[3], ARGV[2])
touch(KEYS, ARGV[1], 1, 3)
return 1
