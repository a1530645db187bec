-- end_run: a run ends with its status and the response it ended with, when its ender may
-- end it (`store/runs.rs`, `Ending::may_end`): the invocation that queued it, while it is
-- still queued (its hand-over failed); the runner that took it, while it runs.
--
-- A live turn (`begin_live.lua`) stops being its chat's live turn as it ends, and its
-- record lives only a little longer (its answer is a turn of its chat by then). In a
-- temporary chat any run's record (a background response's too) lives no longer than the
-- chat's own expiry once ended, with the set of the chat's runs (a run of it still going
-- then outlives that set: deleting the chat meanwhile leaves its record to expire as it
-- ends).
--
-- KEYS: 1 the run, 2 the chat's live turn, 3 the run's events, 4 the chat's meta, 5 the set
--       of the chat's runs
-- ARGV: 1 its status, 2 its response (sealed), 3 the runner ending it ('' for the
--       invocation that queued it), 4 the run's id, 5 an ended live turn's seconds to live
-- Returns 1 when ended (now, or by this same end before), 0 when it may not end it: taken
-- by a runner meanwhile, ended otherwise, or its record expired (nothing is made again).
--
-- Safe to run twice: the second run finds the run already so, and answers 1 again.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local runner = redis.call('HGET', KEYS[1], 'runner')
local may
if ARGV[3] == '' then
  may = status == 'queued' or (status == ARGV[1] and not runner)
else
  may = runner == ARGV[3] and (status == 'in_progress' or status == ARGV[1])
end
if not may then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'response', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
-- Only ever shortened: a record never lives longer for ending.
local function shorten(key, ttl)
  if redis.call('TTL', key) > tonumber(ttl) then redis.call('EXPIRE', key, ttl) end
end
local ttl
if redis.call('HGET', KEYS[1], 'live') == '1' then ttl = ARGV[5] end
local temp = redis.call('HGET', KEYS[4], 'temp')
if temp and (not ttl or tonumber(temp) < tonumber(ttl)) then ttl = temp end
if ttl then
  shorten(KEYS[1], ttl)
  shorten(KEYS[3], ttl)
end
if temp then shorten(KEYS[5], temp) end
return 1
