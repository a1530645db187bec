-- end_run: a run ends with its status and the response it ended with, when its ender may
-- end it (`store/runs.rs`, `Ending::may_end`): the invocation that queued it, while it is
-- still queued (its hand-over failed); the runner that took it, while it runs.
--
-- KEYS: 1 the run
-- ARGV: 1 its status, 2 its response (sealed), 3 the runner ending it ('' for the
--       invocation that queued it)
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
return 1
