-- replace_turn: replaces one turn of a chat, found by its id, with a new version of it (a
-- conversation item deleted from it), or removes it (a deleted response), and keeps the
-- chat's counts of bytes and messages.
--
-- KEYS: 1 turns, 2 meta
-- ARGV: 1 the turn's id, 2 its new JSON ('': remove the turn)
-- Returns 1 when the turn was found, 0 when the chat holds no turn of that id.
--
-- Safe to run twice: a removal sent again finds no such turn and changes nothing; a
-- replacement sent again writes the same turn over itself (the counts are kept from what
-- was there, so they do not drift).
local head = '{"id":"' .. ARGV[1] .. '"'
for i, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(turn, 1, #head) == head then
    local bytes, messages = -#turn, -messages_of(turn)
    if ARGV[2] == '' then
      redis.call('LREM', KEYS[1], 1, turn)
    else
      redis.call('LSET', KEYS[1], i - 1, ARGV[2])
      bytes, messages = bytes + #ARGV[2], messages + messages_of(ARGV[2])
    end
    local meta = redis.call('HMGET', KEYS[2], 'bytes', 'messages')
    if meta[1] and meta[2] then
      redis.call('HSET', KEYS[2],
        'bytes', string.format('%d', tonumber(meta[1]) + bytes),
        'messages', string.format('%d', tonumber(meta[2]) + messages))
    end
    return 1
  end
end
return 0
