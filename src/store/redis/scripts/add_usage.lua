-- add_usage: adds a request's tokens to its caller's counters for the UTC day and month,
-- for its model (`model:<name>:prompt_tokens`, `..:completion_tokens`, `..:cached_tokens`:
-- the totals are their sums, added up when read), and for an open API with a daily token
-- limit to its source address's day. A function of its keys and arguments, like
-- append_turn.
--
-- KEYS: 1 the request's marker, 2 the day's and 3 the month's counters (hashes), then the
--       address's day counter when ARGV[7] is '1', then the Idempotency-Key of a stateless
--       call when ARGV[8] is not empty, then the caller's two indexes of chats (by last
--       write, by birth) when ARGV[11] is not empty, then one key per output item of the
--       stored response ARGV[14]
-- ARGV: 1 model, 2 prompt, 3 completion and 4 cached tokens, 5 the day's and 6 the month's
--       ttl, 7 the address flag, 8 the answer kept for the Idempotency-Key (or ''), 9 its
--       ttl, 10 the marker's ttl, 11 the turn's chat, to put at the top of the caller's
--       list (or ''), 12 now (Unix milliseconds), 13 the index's ttl, 14 the proxy's id
--       of the response whose output items are keyed after the index (or ''), 15 their
--       ttl ('0': none), the chats' own
-- Returns 1 when counted, 0 when the marker says it already was.
--
-- The index of chats lives in the caller's slot with its counters, so the turn's write
-- updates it here at no cost of its own (index_chat.lua, prepended); so do the records of
-- where a stored response's items are, which an `item_reference` is resolved by.
-- `known` (record.lua): the turn's chat was not made by its write, so its birth is listed.
-- Safe to run twice: the marker is checked first and set last.
local function add_usage(K, A, known)
  if redis.call('EXISTS', K[1]) == 1 then return 0 end
  local model = 'model:' .. A[1] .. ':'
  for i = 2, 3 do
    redis.call('HINCRBY', K[i], model .. 'prompt_tokens', A[2])
    redis.call('HINCRBY', K[i], model .. 'completion_tokens', A[3])
    if A[4] ~= '0' then redis.call('HINCRBY', K[i], model .. 'cached_tokens', A[4]) end
    redis.call('EXPIRE', K[i], A[i + 3])
  end
  local next = 4
  if A[7] == '1' then
    redis.call('INCRBY', K[4], tonumber(A[2]) + tonumber(A[3]))
    redis.call('EXPIRE', K[4], A[5])
    next = 5
  end
  if A[8] ~= '' then
    redis.call('SET', K[next], A[8], 'EX', A[9])
    next = next + 1
  end
  if A[11] ~= '' then
    index_chat({K[next], K[next + 1]}, {A[11], A[12], A[13]}, known)
    next = next + 2
  end
  if A[14] ~= '' then
    for i = next, #K do
      if A[15] ~= '0' then
        redis.call('SET', K[i], A[14], 'EX', A[15])
      else
        redis.call('SET', K[i], A[14])
      end
    end
  end
  redis.call('SET', K[1], '1', 'EX', A[10])
  return 1
end
