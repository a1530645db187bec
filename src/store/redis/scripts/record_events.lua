-- record_events: a run's next batch of streamed events, after those recorded before it.
--
-- KEYS: 1 the run, 2 its events (list, a sealed batch each)
-- ARGV: 1 the batch's place (from 0), 2 the batch (sealed; '' only asks whether to stop)
-- Returns 1 when a cancellation was asked for, else 0; an error when batches before this
-- one are missing (the run's record expired).
--
-- Safe to run twice: a batch already in its place is not added again.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('run gone') end
local place, have = tonumber(ARGV[1]), redis.call('LLEN', KEYS[2])
if ARGV[2] == '' then
  -- nothing to record
elseif have == place then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[1], 'batches', place + 1)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
elseif have < place then
  return redis.error_reply('events missing before batch ' .. ARGV[1])
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
return 0
