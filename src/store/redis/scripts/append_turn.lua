-- append_turn: stores one turn of a chat, trims the chat to its caps, and keeps what goes
-- with the turn, in one atomic write.
--
-- KEYS: 1 turns (list), 2 system, 3 meta (hash), 4 the turn's marker, 5 the request's
--       Idempotency-Key (only when ARGV[10] is not empty)
-- ARGV: 1 ttl ('0': none), 2 the turn's JSON, 3 max messages, 4 max bytes, 5 the marker's
--       ttl, 6 the context window's new start (or ''), 7 prompt, 8 completion and 9 cached
--       tokens, 10 the answer kept for the Idempotency-Key (or ''), 11 its ttl, 12 the
--       turn's messages
-- Returns 1 when stored, 0 when the turn's marker says it already was.
--
-- Trims the oldest turns until the chat holds at most max messages and max bytes, keeping
-- the newest turn whole. A chat stored before meta had `bytes` and `messages` is counted
-- once, here (a turn's messages are its `messages` list and its reply; 2 for older turns).
-- Safe to run twice: the marker is checked first and set last, so a run sent again after
-- a cut stores nothing more, and a run that failed half-way is not taken as done.
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local function messages_of(turn)
  local ok, decoded = pcall(cjson.decode, turn)
  if ok and type(decoded) == 'table' and type(decoded.messages) == 'table' and #decoded.messages > 0 then
    return #decoded.messages + 1
  end
  return 2
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], 'window', ARGV[6]) end
redis.call('HINCRBY', KEYS[3], 'turns', 1)
redis.call('HINCRBY', KEYS[3], 'prompt_tokens', ARGV[7])
redis.call('HINCRBY', KEYS[3], 'completion_tokens', ARGV[8])
redis.call('HINCRBY', KEYS[3], 'cached_tokens', ARGV[9])
if ARGV[10] ~= '' then redis.call('SET', KEYS[5], ARGV[10], 'EX', ARGV[11]) end
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes'))
local messages = tonumber(redis.call('HGET', KEYS[3], 'messages'))
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
if bytes == nil or messages == nil then
  bytes, messages = 0, 0
  for _, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    bytes = bytes + #turn
    messages = messages + messages_of(turn)
  end
else
  bytes = bytes + #ARGV[2]
  messages = messages + tonumber(ARGV[12])
end
local max_messages, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
while length > 1 and (messages > max_messages or bytes > max_bytes) do
  local oldest = redis.call('LPOP', KEYS[1])
  bytes = bytes - #oldest
  messages = messages - messages_of(oldest)
  length = length - 1
end
redis.call('HSET', KEYS[3], 'bytes', bytes, 'messages', messages)
touch(1, 3)
redis.call('SET', KEYS[4], '1', 'EX', ARGV[5])
return 1
