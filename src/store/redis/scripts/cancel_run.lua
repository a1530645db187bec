-- cancel_run: a queued run ends `cancelled` at once; one in progress is asked to stop (it
-- ends itself at its next batch of events). One that ended, or whose deadline passed, is
-- left as it is.
--
-- KEYS: 1 the run, 2 its chat's meta (a queued run cancelled in a temporary chat ends
--       there, and lives no longer than the chat)
-- ARGV: 1 the response a queued run ends with (sealed), 2 now (Unix ms)
-- Returns '' when there is no such run, else its fields (HGETALL) after the change.
--
-- Safe to run twice: a cancelled run stays cancelled, a stop asked for stays asked.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
local live = tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], 'deadline'))
if live and status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'response', ARGV[1])
  local temp = redis.call('HGET', KEYS[2], 'temp')
  if temp and redis.call('TTL', KEYS[1]) > tonumber(temp) then
    redis.call('EXPIRE', KEYS[1], temp)
  end
elseif live and status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
end
return redis.call('HGETALL', KEYS[1])
