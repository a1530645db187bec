-- add_usage: adds a request's tokens to its caller's counters for the UTC day and month,
-- overall and for its model, and for an open API to its source address's day.
--
-- KEYS: 1 the request's marker, 2 the day's and 3 the month's counters (hashes), then the
--       address's day counter when ARGV[7] is '1', then the Idempotency-Key of a stateless
--       call when ARGV[8] is not empty
-- ARGV: 1 model, 2 prompt, 3 completion and 4 cached tokens, 5 the day's and 6 the month's
--       ttl, 7 the address flag, 8 the answer kept for the Idempotency-Key (or ''), 9 its
--       ttl, 10 the marker's ttl
-- Returns 1 when counted, 0 when the marker says it already was.
--
-- Safe to run twice: the marker is checked first and set last.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local total = tonumber(ARGV[2]) + tonumber(ARGV[3])
local model = 'model:' .. ARGV[1] .. ':'
for i = 2, 3 do
  for _, prefix in ipairs({'', model}) do
    redis.call('HINCRBY', KEYS[i], prefix .. 'prompt_tokens', ARGV[2])
    redis.call('HINCRBY', KEYS[i], prefix .. 'completion_tokens', ARGV[3])
    redis.call('HINCRBY', KEYS[i], prefix .. 'cached_tokens', ARGV[4])
    redis.call('HINCRBY', KEYS[i], prefix .. 'total_tokens', total)
  end
  redis.call('EXPIRE', KEYS[i], ARGV[i + 3])
end
local next = 4
if ARGV[7] == '1' then
  redis.call('INCRBY', KEYS[4], total)
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  next = 5
end
if ARGV[8] ~= '' then redis.call('SET', KEYS[next], ARGV[8], 'EX', ARGV[9]) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[10])
return 1
