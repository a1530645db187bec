-- delete_turn: removes one turn of a chat, by its id (a deleted response), and keeps the
-- chat's counts of bytes and messages.
--
-- KEYS: 1 turns, 2 meta
-- ARGV: 1 the turn's id
-- Returns 1 when a turn was removed, 0 when the chat holds no turn of that id.
--
-- Safe to run twice: a run sent again finds no such turn and changes nothing.
local head = '{"id":"' .. ARGV[1] .. '"'
for _, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(turn, 1, #head) == head then
    redis.call('LREM', KEYS[1], 1, turn)
    local meta = redis.call('HMGET', KEYS[2], 'bytes', 'messages')
    if meta[1] and meta[2] then
      redis.call('HSET', KEYS[2],
        'bytes', string.format('%d', tonumber(meta[1]) - #turn),
        'messages', string.format('%d', tonumber(meta[2]) - messages_of(turn)))
    end
    return 1
  end
end
return 0
