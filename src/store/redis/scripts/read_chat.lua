-- read_chat: a chat as a turn reads it, in one atomic read: its version, its prompt, its
-- context window's start, whether it is a conversation, and its turns; with a claim, the
-- claim on its newest turn (`store/mod.rs`: a request that will follow the newest turn
-- claims it, and only one claim on a turn holds at a time).
--
-- KEYS: 1 turns, 2 system, 3 meta, 4 floor, 5 the claim on the newest turn
-- ARGV: 1 the claim: '' none, '*' the newest turn whichever it is, else a turn id (claimed
--       only while it is the newest), 2 the claimant (its own turn id), 3 how long the
--       claim holds, in seconds
-- Returns {{version, prompt, window, created_at, claimed (1 or 0)}, {turns, oldest first}}.
--
-- Atomic, so the version is the version of exactly these turns: a write from this read
-- that commits against it commits against what the read saw. The whole list is read: the
-- writes keep it within MAX_HISTORY_MESSAGES messages and MAX_CHAT_BYTES, whatever a turn
-- holds (the reader cuts a chat stored under larger caps).
-- Safe to run twice: a claim read again finds its own claim, and holds.
-- As found() (check.lua) reads them, with the other fields in the same call.
local meta = redis.call('HMGET', KEYS[3], 'v', 'window', 'created_at')
local version, floor = tonumber(meta[1]) or 0, tonumber(redis.call('GET', KEYS[4])) or 0
local turns = redis.call('LRANGE', KEYS[1], 0, -1)
local claimed = 0
if ARGV[1] ~= '' and #turns > 0 then
  local id = string.match(string.sub(turns[#turns], 1, 200), '^{"id":"([^"]*)"')
  if id and (ARGV[1] == '*' or ARGV[1] == id) then
    local mine = id .. '\n' .. ARGV[2]
    local held = redis.call('GET', KEYS[5])
    -- A claim on another turn is spent: that turn is no longer the newest.
    if not held or held == mine or string.sub(held, 1, #id + 1) ~= id .. '\n' then
      redis.call('SET', KEYS[5], mine, 'EX', ARGV[3])
      claimed = 1
    end
  end
end
return {{math.max(version, floor), redis.call('GET', KEYS[2]), meta[2], meta[3], claimed}, turns}
