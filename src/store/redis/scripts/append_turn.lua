-- append_turn: stores one turn of a chat, trims the chat to its caps, and keeps what goes
-- with the turn, in one atomic write. A function of its keys and arguments, so that the
-- record script can run it beside add_usage; run alone, they are KEYS and ARGV.
--
-- KEYS: 1 turns (list), 2 system, 3 meta (hash), 4 the turn's marker, 5 the chat's floor,
--       6 the claim on its newest turn, 7 the request's Idempotency-Key and 8 the set of
--       the chat's keys (only when ARGV[10] is not empty; 8 only for a key of the chat's)
-- ARGV: 1 ttl ('0': none), 2 the turn's JSON, 3 max messages, 4 max bytes, 5 the marker's
--       ttl, 6 the context window's new start (or ''), 7 prompt, 8 completion and 9 cached
--       tokens, 10 the answer kept for the Idempotency-Key (or ''), 11 its ttl, 12 the
--       turn's messages, 13 now (Unix milliseconds), 14 the chat's title from its first
--       question (set once: kept until a clear; '' for none), 15 the id of a turn this one
--       replaces, with every turn after it (a regenerate or an edit; '' for none), 16 the
--       write model's check (check.lua: its kind), 17 the version the turn's read saw,
--       18 the newest turn it follows ('' for none), 19 the claim its read made
--       (`<turn>\n<claimant>`), which this write frees ('' for none), 20 the id of the turn
--       it was sealed to follow ('' for none), with 21 '1' when turns are sealed so ('0':
--       not sealed), 22 what stands for the turns before the window from now on (its
--       compaction, kept only with a new start in 6; '': none, and the one kept is
--       dropped), 23 how long a temporary chat is kept after each write, as the turn's read
--       found it (seconds; '': not temporary), 24 '1' when the chat has a prompt of its own
--       (its expiry is renewed with the chat's; '0': it had none when read, and one set
--       since renewed its own), 25 how many turns come before it (n: a branch's history,
--       into a new chat), 26 to 25+n those turns, 26+n the chat's new prompt (absent: the
--       prompt stays as it is)
-- Returns 1 when stored, 0 when the turn's marker says it already was, 2 when the chat
-- changed in a way the turn cannot follow, 3 when it was cleared or deleted since the
-- turn's read, 4 when sealed turns were sealed to follow a turn that is no longer the one
-- they would follow (another came between: they are sealed again and sent again); for 2, 3
-- and 4 nothing is written.
--
-- A temporary chat's keys, the answer kept for its Idempotency-Key with the set of its keys,
-- and the turn's marker expire as its meta's `temp` says (or 23 says, for a chat that
-- expired since the read: made again, temporary), whatever 1, 5 and 11 say.
-- Trims the oldest turns until the chat holds at most max messages and max bytes, keeping
-- the newest turn whole. A chat stored before meta had `bytes` and `messages` is counted
-- once, here (a turn's messages are its `m`, or its `messages` list and its reply; 2 for
-- older turns).
-- The write model's check (check.lua) comes first, after the marker: a turn refused
-- writes nothing at all, and every stored turn raises the chat's version.
-- Safe to run twice: the marker is checked first and set last, so a run sent again after
-- a cut stores nothing more, and a run that failed half-way is not taken as done. The calls
-- that can fail (on a key of the wrong type) come before any write, and the kept answer
-- comes last with the marker, so a failed run writes nothing a retry could take as done.
local function messages_of(turn)
  -- A Responses turn says its count first, after its id.
  local m = string.match(string.sub(turn, 1, 96), '^{"id":"[^"]*","m":(%d+),')
  if m then return tonumber(m) end
  -- Only a turn of several messages has a `messages` list; inside a JSON string every quote
  -- is escaped, so `"messages":` is found only as the key. Most turns need no decoding.
  if not string.find(turn, '"messages":', 1, true) then return 2 end
  local ok, decoded = pcall(cjson.decode, turn)
  if ok and type(decoded) == 'table' and type(decoded.messages) == 'table' and #decoded.messages > 0 then
    return #decoded.messages + 1
  end
  return 2
end
-- Whether the last append_turn made its chat (record.lua tells add_usage, whose index of
-- births then needs no look at a chat it already holds).
local made_chat = false
local function append_turn(K, A)
  if redis.call('EXISTS', K[4]) == 1 then return 0 end
  -- The chat's size and version, read and written back in one call each (a call costs more
  -- than the Lua around it); its usage is added by Redis (HINCRBY), which spares Lua a
  -- number read and written as text for each counter (BENCHMARKS.md, the write model's cost).
  -- Its birth and its first question's title are read with them, and set, once, with its
  -- size: a call each saved on every turn.
  local meta = redis.call('HMGET', K[3], 'bytes', 'messages', 'v', 'floor', 'temp', 'born',
    'auto_title')
  local version, floor = found_in(meta[3], meta[4], K[5])
  local why = refused(A[16], A[17], A[18], version, floor, K[1])
  if why == 'gone' then return 3 elseif why then return 2 end
  local bytes, messages = tonumber(meta[1]), tonumber(meta[2])
  local temp = meta[5] or (A[23] ~= '' and A[23]) or nil
  local ttl, answer_ttl, marker_ttl = A[1], A[11], A[5]
  if temp then
    ttl = temp
    if tonumber(temp) < tonumber(answer_ttl) then answer_ttl = temp end
    if tonumber(temp) < tonumber(marker_ttl) then marker_ttl = temp end
  end
  -- Where the turn goes: after the newest turn, or for a redo after the turn before the
  -- first it replaces (found first, and cut only once nothing can refuse the write).
  local all, at
  if A[15] ~= '' then
    local head = '{"id":"' .. A[15] .. '"'
    all = redis.call('LRANGE', K[1], 0, -1)
    for i, turn in ipairs(all) do
      if string.sub(turn, 1, #head) == head then at = i break end
    end
    if not at then return 2 end
  end
  if A[21] == '1' then
    local before
    if at then before = all[at - 1] else before = redis.call('LINDEX', K[1], -1) end
    local id = before and string.match(string.sub(before, 1, 200), '^{"id":"([^"]*)"') or ''
    if id ~= A[20] then return 4 end
  end
  -- The chat's usage first of the writes: a counter that is not a number (never written so)
  -- fails the script before it has changed anything else.
  redis.call('HINCRBY', K[3], 'turns', 1)
  if A[7] ~= '0' then redis.call('HINCRBY', K[3], 'prompt_tokens', A[7]) end
  if A[8] ~= '0' then redis.call('HINCRBY', K[3], 'completion_tokens', A[8]) end
  if A[9] ~= '0' then redis.call('HINCRBY', K[3], 'cached_tokens', A[9]) end
  if at then
    if at == 1 then redis.call('DEL', K[1]) else redis.call('LTRIM', K[1], 0, at - 2) end
    if bytes ~= nil and messages ~= nil then
      for i = at, #all do
        bytes = bytes - #all[i]
        messages = messages - messages_of(all[i])
      end
    end
  end
  local before = tonumber(A[25])
  if before > 0 then redis.call('RPUSH', K[1], unpack(A, 26, 25 + before)) end
  local length = redis.call('RPUSH', K[1], A[2])
  if bytes == nil or messages == nil then
    bytes, messages = 0, 0
    for _, turn in ipairs(redis.call('LRANGE', K[1], 0, -1)) do
      bytes = bytes + #turn
      messages = messages + messages_of(turn)
    end
  else
    bytes = bytes + #A[2]
    messages = messages + tonumber(A[12])
    for i = 26, 25 + before do
      bytes = bytes + #A[i]
      messages = messages + messages_of(A[i])
    end
  end
  local max_messages, max_bytes = tonumber(A[3]), tonumber(A[4])
  while length > 1 and (messages > max_messages or bytes > max_bytes) do
    local oldest = redis.call('LPOP', K[1])
    bytes = bytes - #oldest
    messages = messages - messages_of(oldest)
    length = length - 1
  end
  -- Written as integers: some Redis versions format a Lua number as `1e+08`.
  local fields = {'bytes', string.format('%d', bytes), 'messages', string.format('%d', messages),
    'updated', A[13], 'v', next_version(version, floor)}
  if temp then
    fields[#fields + 1] = 'temp'
    fields[#fields + 1] = temp
  end
  if A[6] ~= '' then
    fields[#fields + 1] = 'window'
    fields[#fields + 1] = A[6]
    if A[22] ~= '' then
      fields[#fields + 1] = 'compacted'
      fields[#fields + 1] = A[22]
    end
  end
  -- The stamp (touch.lua) of its last write is in the fields; its birth, once.
  made_chat = not meta[6]
  if made_chat then
    fields[#fields + 1] = 'born'
    fields[#fields + 1] = string.sub(A[13], 1, -4)
  end
  if A[14] ~= '' and not meta[7] then
    fields[#fields + 1] = 'auto_title'
    fields[#fields + 1] = A[14]
  end
  redis.call('HSET', K[3], unpack(fields))
  if A[6] ~= '' and A[22] == '' then redis.call('HDEL', K[3], 'compacted') end
  local prompt = A[26 + before]
  if prompt then redis.call('SET', K[2], prompt) end
  -- The turns and the meta; the prompt only when the chat has one (an EXPIRE of nothing
  -- costs a call all the same).
  touch(K, ttl, 1, 1)
  if prompt or A[24] == '1' then touch(K, ttl, 2, 2) end
  touch(K, ttl, 3, 3)
  if A[19] ~= '' and redis.call('GET', K[6]) == A[19] then redis.call('DEL', K[6]) end
  if A[10] ~= '' then
    redis.call('SET', K[7], A[10], 'EX', answer_ttl)
    if temp and K[8] then redis.call('EXPIRE', K[8], answer_ttl) end
  end
  redis.call('SET', K[4], '1', 'EX', marker_ttl)
  return 1
end
