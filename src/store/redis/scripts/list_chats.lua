-- list_chats: one page of a caller's chats, most recently written first, after dropping
-- from the index the chats that expired.
--
-- KEYS: 1 the caller's index (sorted set: chat id -> last write, Unix milliseconds)
-- ARGV: 1 the oldest write a live chat can have ('': chats do not expire), 2 the cursor's
--       write time ('': from the top), 3 the cursor's chat id, 4 how many to return
-- Returns {id, score, id, score, ...}, at most ARGV[4] chats.
--
-- Chats written in the same millisecond are ordered by id, descending, as ZREVRANGE
-- orders them, so a cursor is a (time, id) pair and a page never repeats or skips one.
-- Safe to run twice: expired entries removed again are already gone.
-- Ids are compared byte by byte, as the sorted set orders them (Lua's `<` follows the
-- server's locale).
local function below(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
if ARGV[1] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1]) end
local limit = tonumber(ARGV[4])
local max, ties = '+inf', 0
if ARGV[2] ~= '' then
  max = ARGV[2]
  ties = redis.call('ZCOUNT', KEYS[1], ARGV[2], ARGV[2])
end
local found = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', 0,
  limit + ties)
local page = {}
for i = 1, #found, 2 do
  local id, score = found[i], found[i + 1]
  local after_cursor = ARGV[2] == '' or score ~= ARGV[2] or below(id, ARGV[3])
  if after_cursor and #page < 2 * limit then
    page[#page + 1] = id
    page[#page + 1] = score
  end
end
return page
