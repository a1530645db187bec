-- count_request: counts one request in its caller's window of RATE_LIMIT_PER_MINUTE.
--
-- KEYS: 1 the caller's window (hash: request id -> its place in the count)
-- ARGV: 1 the window in milliseconds, 2 the request's id, 3 the limit
-- Returns {count, milliseconds left in the window}; the count includes this request.
--
-- The first request opens the window. Past the limit nothing more is kept (the window holds
-- at most `limit` ids) and the count is limit + 1.
-- Safe to run twice: a run sent again finds the request's id and answers its first count.
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
if count == nil then
  count = redis.call('HLEN', KEYS[1]) + 1
  if count <= tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], ARGV[2], count) end
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
