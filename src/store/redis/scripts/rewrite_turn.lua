-- rewrite_turn: replaces one turn of a chat, found by its id, with a new version of it (a
-- conversation item deleted from it), or removes it (a deleted response), when the chat is
-- exactly as the request's read saw it (check.lua, 'exactly'); keeps the chat's counts of
-- bytes and messages and raises its version.
--
-- KEYS: 1 turns, 2 meta, 3 floor, 4 the rewrite's marker
-- ARGV: 1 the turn's id, 2 its new JSON ('': remove the turn), 3 the version the read
--       saw, 4 the marker's ttl, 5 the turn after it, sealed again to follow the one
--       before it when this one is removed ('': none; sealed turns are bound to the turn
--       they follow), its id in 6, 7 '1' when the chat's compaction stood for the turn
--       (it is dropped with it; '': it stays)
-- Returns 1 when the turn was rewritten, 0 when the chat holds no turn of that id, 2 when
-- the chat changed since the read (nothing is written: the request reads again).
--
-- Safe to run twice: the marker is checked first and set last, so a run sent again after
-- a cut answers 1 again rather than finding the chat changed by its own first run.
if redis.call('EXISTS', KEYS[4]) == 1 then return 1 end
local version, floor = found(KEYS[2], KEYS[3])
if refused('exactly', ARGV[3], '', version, floor, KEYS[1]) then return 2 end
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
    if ARGV[5] ~= '' then
      local next_head = '{"id":"' .. ARGV[6] .. '"'
      local next_turn = redis.call('LINDEX', KEYS[1], i - 1)
      if next_turn and string.sub(next_turn, 1, #next_head) == next_head then
        redis.call('LSET', KEYS[1], i - 1, ARGV[5])
        bytes = bytes + #ARGV[5] - #next_turn
      end
    end
    local meta = redis.call('HMGET', KEYS[2], 'bytes', 'messages')
    redis.call('HSET', KEYS[2], 'v', next_version(version, floor))
    if ARGV[7] == '1' then redis.call('HDEL', KEYS[2], 'compacted') end
    if meta[1] and meta[2] then
      redis.call('HSET', KEYS[2],
        'bytes', string.format('%d', tonumber(meta[1]) + bytes),
        'messages', string.format('%d', tonumber(meta[2]) + messages))
    end
    redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
    return 1
  end
end
return 0
